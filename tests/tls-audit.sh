#!/usr/bin/env bash
# tls-audit.sh - testssl.sh against pillarbox (`./build.sh testssl`; slow,
# a few minutes, and not part of `./build.sh test`).
#
# Starts build/pillarbox (or $PILLARBOX_BIN) on 127.0.0.1 with ports picked
# at run time - SMTP on the MX listener (STARTTLS) and POP3 over implicit TLS
# (pop3s), the self-signed certificate - and runs testssl.sh against each:
# protocols, cipher categories, forward secrecy, server defaults and
# preferences, vulnerabilities, client simulation and every cipher per
# protocol, with JSON output. Then it checks:
#
#   1. no SSLv2, SSLv3, TLS 1.0 or TLS 1.1 offered (TLS 1.2 is);
#   2. every cipher suite offered has forward secrecy (ECDHE or DHE);
#   3. no CBC suite is offered (AEAD only: GCM, ChaCha20-Poly1305);
#
# prints every finding testssl.sh rates above OK/INFO (LOW, MEDIUM, HIGH,
# CRITICAL, WARN, FATAL) and exits 1 if a check fails or a scan could not
# be made, else 0.
#
# Offline: the whole run is inside a network namespace of its own that has
# only the loopback interface (unshare --net --map-root-user; root not
# needed where user namespaces are allowed), and testssl.sh is told to make
# no DNS lookups (--nodns none, --ip 127.0.0.1). It would otherwise still
# ask the resolver: it probes its openssl's features with `s_client
# -connect invalid.`. Environment:
#   PILLARBOX_BIN   server binary (default build/pillarbox)
#   AUDIT_KEEP=1    keep the work dir (server log, testssl output, JSON)
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${PILLARBOX_BIN:-$ROOT/build/pillarbox}

say() { echo "tls-audit: $*" >&2; }
die() { say "$*"; exit 1; }

if [ "${TLS_AUDIT_NETNS:-}" != 1 ]; then
	command -v unshare >/dev/null || die "unshare missing (util-linux)"
	TLS_AUDIT_NETNS=1 exec unshare --net --map-root-user bash "$0" "$@"
fi
ip link set lo up || die "cannot bring up lo in the namespace (iproute2)"
command -v testssl >/dev/null || die "testssl missing (Debian package testssl.sh)"
[ -x "$BIN" ] || die "no server binary $BIN"

W=$(mktemp -d "${TMPDIR:-/tmp}/pillarbox-tls-audit.XXXXXX") || die "mktemp failed"
SPID=
cleanup() {
	if [ -n "$SPID" ]; then
		kill -TERM "$SPID" 2>/dev/null
		wait "$SPID" 2>/dev/null
	fi
	if [ "${AUDIT_KEEP:-0}" = 1 ]; then say "work dir kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

cat >"$W/pb.conf" <<EOF
[server]
hostname = mx.test
data_dir = $W/data
[smtp]
listen = 127.0.0.1:0
submission =
smtps =
[pop3]
listen =
pop3s = 127.0.0.1:0
[web]
listen =
EOF
"$BIN" serve -c "$W/pb.conf" >"$W/server.log" 2>&1 &
SPID=$!
for _ in $(seq 100); do
	grep -qs 'event=ready' "$W/server.log" && break
	kill -0 "$SPID" 2>/dev/null || break
	sleep 0.1
done
grep -q 'event=ready' "$W/server.log" || die "server did not start: $(tail -n 5 "$W/server.log")"
port() { sed -n "s/.*event=listening proto=$1 addr=127\.0\.0\.1:\([0-9]*\).*/\1/p" "$W/server.log"; }

# NAME PORT [testssl options]: one scan, its JSON in $W/NAME.json.
scan() {
	local name=$1 port=$2
	shift 2
	say "testssl.sh $name (127.0.0.1:$port), a few minutes"
	testssl --quiet --color 0 --nodns none --ip 127.0.0.1 --warnings off \
		--connect-timeout 10 --openssl-timeout 10 \
		--protocols --std --fs --server-defaults --server-preference \
		--vulnerable --client-simulation --cipher-per-proto \
		--jsonfile "$W/$name.json" "$@" "127.0.0.1:$port" \
		>"$W/$name.txt" 2>&1
	[ -s "$W/$name.json" ] || say "$name: no JSON output, see $W/$name.txt"
}
scan smtp-starttls "$(port smtp)" --starttls smtp
scan pop3s "$(port pop3s)"

python3 - "$W/smtp-starttls.json" "$W/pop3s.json" <<'EOF'
import json, sys

OLD = ("SSLv2", "SSLv3", "TLS1", "TLS1_1")
QUIET = ("OK", "INFO", "DEBUG")
failed = False


def check(ok, what):
    global failed
    print("  %-4s %s" % ("ok" if ok else "FAIL", what))
    failed |= not ok


for path in sys.argv[1:]:
    name = path.rsplit("/", 1)[-1][:-5]
    print("== %s" % name)
    try:
        found = json.load(open(path))
    except (OSError, ValueError) as e:
        check(False, "testssl.sh output: %s" % e)
        continue
    by_id = {}
    for f in found:
        by_id.setdefault(f["id"], []).append(f)
    check("scanTime" in by_id and "scanProblem" not in by_id,
          "the scan ran to its end")
    for p in OLD:
        got = [f["finding"] for f in by_id.get(p, [])]
        check(got and all(g.startswith("not offered") for g in got),
              "%s not offered (%s)" % (p, "; ".join(got) or "not tested"))
    tls12 = [f["finding"] for f in by_id.get("TLS1_2", [])]
    check(tls12 and tls12[0].startswith("offered"), "TLS 1.2 offered")
    # --cipher-per-proto: one finding per suite offered, "TLS 1.2  xc02b
    # ECDHE-ECDSA-AES128-GCM-SHA256  ECDH 253  AESGCM  128  TLS_ECDHE_...".
    suites = [f["finding"].split() for f in found
              if f["id"].startswith("cipher-")]
    check(len(suites) > 0, "cipher suites listed: %d" % len(suites))
    for s in suites:
        kx, iana = s[4], s[-1]
        check(kx in ("ECDH", "DH") and ("_ECDHE_" in iana or
                                        "_DHE_" in iana),
              "%s: forward secrecy (%s)" % (iana, kx))
        check("_CBC_" not in iana and ("_GCM_" in iana or
                                       "_CHACHA20_" in iana),
              "%s: AEAD, no CBC" % iana)
    print("  findings above OK/INFO:")
    n = 0
    for f in found:
        if f["severity"] not in QUIET:
            n += 1
            print("    %-8s %-28s %s" % (f["severity"], f["id"],
                                       " ".join(f["finding"].split())))
    if n == 0:
        print("    none")
sys.exit(1 if failed else 0)
EOF
