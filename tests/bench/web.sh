#!/usr/bin/env bash
# web.sh - the web console's figures (`./build.sh bench` runs it after
# bench.sh; alone: bash tests/bench/web.sh). Prints figures only.
#
#   1. /metrics and GET /api/users (logged in, 6 users) answered with
#      keep-alive by a server pinned to one core (taskset), Debian's wrk
#      pinned to another, SMTP and POP3 idle: requests/s (target >= 5,000)
#   2. the stripped binary with the console compiled in (target <= 512 KiB)
#   3. the dashboard's page load over the wire is measured in the browser
#      test (tests/e2e/console.test.js prints it; target <= 100 KiB)
#
# Loopback only, port 0, one mktemp -d work dir, the server stopped on
# exit. WEB_BENCH_SECONDS: length of each wrk run (default 5).
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${PILLARBOX_BIN:-$ROOT/build/pillarbox}
SECS=${WEB_BENCH_SECONDS:-5}
say() { echo "bench-web: $*" >&2; }
command -v wrk >/dev/null || { say "wrk is not installed"; exit 1; }
[ -x "$BIN" ] || { say "no server binary $BIN"; exit 1; }

W=$(mktemp -d "${TMPDIR:-/tmp}/pillarbox-webbench.XXXXXX") || exit 1
PID=
cleanup() {
	[ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID"
	rm -rf "$W"
}
trap cleanup EXIT
cat >"$W/c.conf" <<CONF
[server]
data_dir = $W/data
[smtp]
listen = 127.0.0.1:0
[pop3]
listen = 127.0.0.1:0
[web]
listen = 127.0.0.1:0
CONF
echo secret | "$BIN" -c "$W/c.conf" user add --admin admin@localhost || exit 1
for u in a b c d e; do
	echo pw | "$BIN" -c "$W/c.conf" user add "$u@localhost" || exit 1
done
# One core for the server, another for wrk (a 1-core machine shares).
SCPU=0 CCPU=$(($(nproc) > 1 ? 1 : 0))
taskset -c $SCPU "$BIN" serve -c "$W/c.conf" >"$W/log" 2>&1 &
PID=$!
for _ in $(seq 100); do
	grep -q event=ready "$W/log" && break
	sleep 0.05
done
PORT=$(grep -o 'proto=web addr=127.0.0.1:[0-9]*' "$W/log" | cut -d: -f2)
[ -n "$PORT" ] || { say "server did not start"; cat "$W/log" >&2; exit 1; }
URL=http://127.0.0.1:$PORT
COOKIE=$(curl -s -i -H 'Content-Type: application/json' \
	-d '{"user":"admin@localhost","password":"secret"}' "$URL/api/login" |
	grep -o 'pb_session=[0-9a-f]*')
[ -n "$COOKIE" ] || { say "login failed"; exit 1; }

rate() { # PATH [HEADER]: requests/s over SECS, keep-alive, 8 connections
	taskset -c $CCPU wrk -t1 -c8 -d"${SECS}s" ${2:+-H "$2"} "$URL$1" \
		>"$W/wrk.out" 2>&1
	if grep -q 'Non-2xx' "$W/wrk.out"; then
		say "errors in $1:"; cat "$W/wrk.out" >&2; echo 0; return
	fi
	awk '/^Requests\/sec:/ {printf "%d", $2}' "$W/wrk.out"
}
verdict() { [ "$1" -ge "$2" ] && echo "(target $3: met)" || echo "(target $3: MISSED)"; }
M=$(rate /metrics)
U=$(rate /api/users "Cookie: $COOKIE")
strip -o "$W/stripped" "$BIN"
SIZE=$(stat -c %s "$W/stripped")
echo
echo "== web console figures ($(nproc) cores, server on one core) =="
echo "web /metrics keep-alive: $M req/s $(verdict "$M" 5000 '>= 5000')"
echo "web GET /api/users keep-alive: $U req/s $(verdict "$U" 5000 '>= 5000')"
echo "stripped binary with the console: $((SIZE / 1024)) KiB" \
	"$(verdict $((512 * 1024)) "$SIZE" '<= 512 KiB')"
