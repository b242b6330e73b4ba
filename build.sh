#!/usr/bin/env bash
# build.sh - pillarbox's one entry point.
#
#   ./build.sh          install what is missing, build build/pillarbox
#   ./build.sh run      ... then start it on the built-in defaults
#   ./build.sh test     ... build everything and run every test
#   ./build.sh bench    ... print the figures (see tests/bench/bench.sh)
#   ./build.sh testssl  ... audit the TLS setup with testssl.sh (slow, a few
#                       minutes; installs testssl.sh; offline, in a network
#                       namespace with only loopback: tests/tls-audit.sh)
#   ./build.sh clean
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages: the libraries, the compiler, and the real clients the
# tests drive (pytest with smtplib/poplib/ssl, swaks with its TLS module,
# msmtp, fetchmail, mpop, getmail6, openssl to make and read test
# certificates).
DEBS=(gcc make pkg-config libc6-dev libuv1-dev libbearssl-dev liblmdb-dev
	libc-ares-dev libidn2-dev libinih-dev libcrypt-dev libcmocka-dev lmdb-utils
	libhttp-parser-dev libjansson-dev xxd
	python3 python3-pytest swaks libnet-ssleay-perl msmtp fetchmail mpop getmail6
	openssl
	fail2ban strace mount python3-dnslib python3-aiosmtpd postfix)
# The web console's browser test: Debian's chromium, driven by the
# playwright-core pinned in tests/e2e/package-lock.json (npm ci). Only
# `./build.sh test` needs them; the bench needs wrk.
TEST_DEBS=(chromium)

deps() {
	local missing=() p
	for p in "${DEBS[@]}" "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
			grep -q 'ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "build.sh: missing Debian packages: ${missing[*]}" >&2
		echo "build.sh: run as root, or: sudo apt-get install ${missing[*]}" >&2
		exit 1
	fi
	echo "build.sh: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The browser test's tools: chromium and npm (a node that ships its own
# npm is kept), then the pinned playwright-core. Where they cannot be
# installed the browser test skips and says why; the rest still runs.
e2e_deps() {
	local want=("${TEST_DEBS[@]}")
	command -v npm >/dev/null || want+=(npm)
	deps "${want[@]}" || echo "build.sh: cannot install ${want[*]}:" \
		"the browser test will be skipped" >&2
	if command -v npm >/dev/null &&
		! (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error); then
		echo "build.sh: npm ci in tests/e2e failed:" \
			"the browser test will be skipped" >&2
	fi
}

jobs=$(nproc 2>/dev/null || echo 2)
# Debian's python, which has python3-pytest (not a python earlier on PATH).
PY=/usr/bin/python3

case "${1:-build}" in
build)
	deps
	make -j"$jobs" build/pillarbox
	;;
run)
	deps
	make -j"$jobs" build/pillarbox
	cat >&2 <<'TXT'

pillarbox is starting on its built-in defaults: data in ./pillarbox-data,
SMTP on 127.0.0.1:2525, submission (SMTP AUTH) on 127.0.0.1:2587, POP3 on
127.0.0.1:2110, the web console on http://127.0.0.1:8080/, domain
"localhost"; over implicit TLS on 2465 and 2995 with a self-signed
certificate it makes in ./pillarbox-data at first start.
In another terminal, add an admin for the console, then an account, send
it a message and fetch it:

  echo 'adminpw' | build/pillarbox user add --admin admin@localhost
  echo 'secret' | build/pillarbox user add alice@localhost
  swaks --to alice@localhost --server 127.0.0.1:2525
  python3 -c 'import poplib; p=poplib.POP3("127.0.0.1",2110); p.user("alice@localhost"); p.pass_("secret"); print(p.stat())'

Ctrl-C stops it.
TXT
	exec build/pillarbox serve
	;;
test)
	deps
	(e2e_deps) || true
	bash tests/check-layers.sh
	make -j"$jobs" build/pillarbox build/asan/pillarbox unit
	for t in build/test_*; do
		echo "== $t"
		"$t"
	done
	echo "== integration tests (build/pillarbox)"
	PILLARBOX_BIN=build/pillarbox $PY -m pytest -q -p no:cacheprovider tests/integration
	echo "== integration tests under ASan+UBSan (build/asan/pillarbox)"
	PILLARBOX_BIN=build/asan/pillarbox ASAN_OPTIONS=detect_leaks=1 \
		$PY -m pytest -q -p no:cacheprovider tests/integration
	;;
bench)
	deps wrk
	make -j"$jobs" build/pillarbox build/loadgen build/syncrate
	rc=0
	bash tests/bench/bench.sh || rc=$?
	bash tests/bench/web.sh || rc=$?
	exit $rc
	;;
testssl)
	# only this step needs them: testssl.sh, and ip to bring up the
	# namespace's loopback
	deps testssl.sh iproute2
	make -j"$jobs" build/pillarbox
	bash tests/tls-audit.sh
	;;
clean)
	make clean
	;;
*)
	echo "usage: ./build.sh [build|run|test|bench|testssl|clean]" >&2
	exit 2
	;;
esac
