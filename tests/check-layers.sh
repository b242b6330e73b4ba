#!/usr/bin/env bash
# check-layers.sh - fails when an #include points up the stack.
#
# The folders are layers; a file may include its own folder's headers and
# those of the layers below it, never above, and smtp/, pop3/ and web/ never
# each other (POP-before-SMTP goes through core/):
#
#   app/                       main and the CLI: knows every module
#   smtp/ pop3/ web/           the protocols
#   core/                      connections, config, auth, policy: no protocol
#   store/                     the LMDB store: no socket, no protocol
#   base/                      logging and allocation
set -u
cd "$(dirname "$0")/.."
rank() {
	case $1 in
	base) echo 0 ;; store) echo 1 ;; core) echo 2 ;;
	smtp | pop3 | web) echo 3 ;; app) echo 4 ;; *) echo -1 ;;
	esac
}
bad=0
for f in base/*.[ch] store/*.[ch] core/*.[ch] smtp/*.[ch] pop3/*.[ch] \
	web/*.[ch] app/*.[ch]; do
	[ -e "$f" ] || continue
	from=${f%%/*}
	while IFS= read -r inc; do
		to=${inc%%/*}
		[ "$to" = "$from" ] && continue
		if [ "$(rank "$to")" -lt 0 ] ||
			[ "$(rank "$to")" -ge "$(rank "$from")" ]; then
			echo "check-layers: $f includes \"$inc\": $to/ is not below $from/" >&2
			bad=1
		fi
	done < <(sed -n 's/^#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f")
done
[ $bad -eq 0 ] && echo "check-layers: every include points down the stack"
exit $bad
