#!/usr/bin/env bash
# bench.sh - pillarbox benchmark (`./build.sh bench`). Prints figures only;
# nothing here is a pass/fail test. Every figure that has a target is a
# ratio or an amount measured in this same run, since the machine is shared.
#
#   1. syncrate: fdatasync()/s one thread gets in the data directory
#   2. SMTP accept rate at 1, 16, 128 sessions (no pipelining), the ratio
#      to syncrate, and syncs (store commits) per message
#   2b. SMTP accept of 1 MiB messages (bodies that spill to a file) over
#      several rounds: min, median and min/median, how steady it is
#   2c. SMTP accept at 128 sessions with a relay decision per RCPT that
#      walks relay_networks and finds a POP-before-SMTP grant (and the
#      sender check, and a queue entry per message), over the MX-only rate
#      measured in the same rounds
#   3. RSS added by 2,000 idle SMTP and 2,000 idle POP3 connections
#   4. stripped binary size, RSS at rest after event=ready
#   5. POP3 retrieval (16 clients x own mailbox, 4 KiB and 1 MiB messages),
#      pillarbox and Dovecot side by side
#   6. TLS: full and resumed handshakes per server CPU-second, RSS per idle
#      TLS connection (tests/bench/tls_bench.py); SMTP accept over STARTTLS at
#      16 sessions over plaintext in the same rounds; POP3 RETR over pop3s
#      and in clear from the same store (MiB/s)
#   7. outbound delivery to a local sink (tests/bench/outbound.py): 4 KiB
#      messages/s at max_concurrent 1, 4, 20 (Postfix's smtp-sink), and the
#      time from the submission's 250 to the sink's 250 with an idle queue
#
#   BENCH_OUTBOUND_N  messages per outbound throughput run (default 2000)
# Everything listens and connects on 127.0.0.1 only, ports picked at run
# time, inside one mktemp -d work dir; every process started is stopped on
# exit. Environment knobs:
#   PILLARBOX_BIN   server binary (default build/pillarbox; not rebuilt then)
#   BENCH_SECONDS   length of each SMTP accept run (default 5)
#   BENCH_ROUNDS    c=128 rounds, each with its own syncrate (default 3)
#   BENCH_ROUNDS_1M rounds of the 1 MiB SMTP figure (default 5)
#   BENCH_ROUNDS_RELAY rounds of the relay figure, each an MX and a relay
#                   run (default 3)
#   BENCH_REPEAT    POP3 retrieval runs per server, best kept (default 3)
#   BENCH_ROUNDS_TLS rounds of the STARTTLS figure, each a plaintext and a
#                   STARTTLS run (default 3)
#   BENCH_DIR       parent of the work dir (default $TMPDIR or /tmp)
#   BENCH_KEEP=1    keep the work dir (logs) afterwards
#   BENCH_DOVECOT=0 skip the Dovecot comparison
# Exit 0 when everything ran (targets missed or not); 1 when something could
# not be run or a load generator reported protocol errors.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LG=$ROOT/build/loadgen
SR=$ROOT/build/syncrate
SECS=${BENCH_SECONDS:-5}
REPEAT=${BENCH_REPEAT:-3}
NUSERS=16
PASS=benchpass
IDLE_N=2000

say() { echo "bench: $*" >&2; }
die() { say "$*"; exit 1; }

if [ -n "${PILLARBOX_BIN:-}" ]; then
	BIN=$PILLARBOX_BIN
	make -s -C "$ROOT" build/loadgen build/syncrate >&2 || die "build failed"
else
	BIN=$ROOT/build/pillarbox
	make -s -C "$ROOT" build/pillarbox build/loadgen build/syncrate >&2 ||
		die "build failed"
fi
[ -x "$BIN" ] || die "no server binary $BIN"

W=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/pillarbox-bench.XXXXXX") ||
	die "mktemp failed"
chmod 755 "$W" # dovecot's unprivileged processes walk into it

PIDS=() # everything started in the background
cleanup() {
	local p
	exec 9>&- 2>/dev/null
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do
		for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$p" 2>/dev/null
	done
	wait 2>/dev/null
	if [ "${BENCH_KEEP:-0}" = 1 ]; then say "work dir kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# Raise the descriptor limit for the idle-connection runs (server and
# loadgen both inherit it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge $((IDLE_N + 100)) ] ||
	say "warning: ulimit -n is $(ulimit -n), idle runs may fail"

RESULTS=() # "name: value (target)" lines
RC=0
res() { RESULTS+=("$1"); say "$1"; }
fail() { RC=1; res "$1: error ($2)"; }
kv() { sed -n "s/.*\b$2=\([^ ]*\).*/\1/p" "$1" | tail -n 1; } # FILE KEY
calc() { awk "BEGIN { printf(\"%.${2:-1}f\", $1) }"; }           # EXPR [DECIMALS]
# target VALUE OP LIMIT TEXT -> "(TEXT)" or "(TEXT) MISSED"
target() {
	if awk "BEGIN { exit !($1 $2 $3) }"; then echo "($4)"; else echo "($4) MISSED"; fi
}
first_err() { sed -n '1s/^loadgen: //p' "$1"; } # FILE: first error line
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null; } # PID: user+system
bg() { "$@" & PIDS+=($!); } # run in the background, remembered for cleanup
forget() { local k; for k in "${!PIDS[@]}"; do [ "${PIDS[$k]}" = "$1" ] && unset "PIDS[$k]"; done; }

# ---- pillarbox servers -------------------------------------------------------
# Each run gets its own directory and a copy of a template data dir that
# already has the users u1..u16@localhost (password $PASS).
pb_conf() { # DIR; PB_STORE_MAX overrides the store cap
	mkdir -p "$1/data"
	cat >"$1/pb.conf" <<EOF
[server]
hostname = mx.test
data_dir = $1/data
domains = localhost
max_store_size = ${PB_STORE_MAX:-2G}
max_connections = 10000
[smtp]
listen = 127.0.0.1:0
smtps =
submission = 127.0.0.1:0
max_connections_per_ip = 5000
${PB_SMTP_EXTRA:-}
[pop3]
listen = 127.0.0.1:0
pop3s = ${PB_POP3S:-}
login_delay = 0
# the relay figure's POP3 logins come from 127.0.0.x, not the server's own
# address, in plaintext (TLS costs are section 6's)
require_tls_for_auth = no
max_connections_per_ip = 5000
[web]
listen =
EOF
}

pb_template() {
	local i
	pb_conf "$W/template"
	for i in $(seq $NUSERS); do
		echo "$PASS" | "$BIN" -c "$W/template/pb.conf" user add "u$i@localhost" \
			2>>"$W/template/cli.log" || return 1
	done
	# the relay figure's sender, owned by u1 (the sender check)
	"$BIN" -c "$W/template/pb.conf" alias add bench@localhost u1@localhost \
		2>>"$W/template/cli.log"
}

SPID= SMTP_PORT= POP3_PORT= POP3S_PORT= SDIR=
pb_start() { # DIR: fresh server from the template; sets SPID and ports
	local i
	SDIR=$1
	pb_conf "$SDIR"
	cp -a "$W/template/data/." "$SDIR/data/"
	bg "$BIN" serve -c "$SDIR/pb.conf" >"$SDIR/server.log" 2>&1
	SPID=$!
	for i in $(seq 300); do
		grep -q 'event=ready' "$SDIR/server.log" && break
		kill -0 "$SPID" 2>/dev/null || break
		sleep 0.1
	done
	if ! grep -q 'event=ready' "$SDIR/server.log"; then
		say "server in $SDIR did not become ready:"
		tail -n 20 "$SDIR/server.log" >&2
		pb_stop
		return 1
	fi
	SMTP_PORT=$(sed -n 's/.*event=listening proto=smtp addr=[^ ]*:\([0-9]*\).*/\1/p' "$SDIR/server.log" | tail -n 1)
	POP3_PORT=$(sed -n 's/.*event=listening proto=pop3 addr=[^ ]*:\([0-9]*\).*/\1/p' "$SDIR/server.log" | tail -n 1)
	POP3S_PORT=$(sed -n 's/.*event=listening proto=pop3s addr=[^ ]*:\([0-9]*\).*/\1/p' "$SDIR/server.log" | tail -n 1)
	[ -n "$SMTP_PORT" ] && [ -n "$POP3_PORT" ]
}

COMMITS=
pb_stop() { # graceful stop; COMMITS= the count from event=stats, or n/a
	local i
	COMMITS=n/a
	[ -n "$SPID" ] || return 0
	kill -TERM "$SPID" 2>/dev/null
	for i in $(seq 300); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$SPID" 2>/dev/null && say "server $SPID needed SIGKILL"
	wait "$SPID" 2>/dev/null
	forget "$SPID"
	SPID=
	COMMITS=$(kv "$SDIR/server.log" commits)
	COMMITS=${COMMITS:-n/a}
}

sync_rate() { # DIR -> prints fdatasync/s, or nothing
	mkdir -p "$1"
	"$SR" "$1" 2 >"$1/syncrate.out" && kv "$1/syncrate.out" syncs_per_s
}

# ---- 1. syncrate -------------------------------------------------------------
say "syncrate"
SYNC=$(sync_rate "$W/syncdir")
if [ -n "$SYNC" ]; then
	res "syncrate: $(calc "$SYNC" 0) fdatasync/s"
else
	fail syncrate "syncrate failed"
fi

pb_template || die "could not create users: $(tail -n 3 "$W/template/cli.log")"

# ---- 2. SMTP accept rate -----------------------------------------------------
# c=128 runs ROUNDS times, each right after its own syncrate measurement on
# the same disk, and the median ratio is the figure: the disk and the CPUs
# are shared, so a ratio of two readings taken seconds apart is the only
# fair one.
ROUNDS=${BENCH_ROUNDS:-3}
RATIOS=()
for c in 1 16 $(yes 128 | head -n "$ROUNDS"); do
	say "smtp accept, $c sessions, ${SECS}s"
	d=$W/smtp_c$c.${#RATIOS[@]}
	[ $c = 128 ] && sync=$(sync_rate "$d.sync")
	pb_start "$d" || { fail "smtp c=$c" "server did not start"; continue; }
	"$LG" smtp 127.0.0.1 "$SMTP_PORT" "$c" "$SECS" 4096 $NUSERS >"$d/lg.out" 2>"$d/lg.err"
	pb_stop
	commits=$COMMITS
	msgs=$(kv "$d/lg.out" msgs)
	rate=$(kv "$d/lg.out" msgs_per_s)
	errs=$(kv "$d/lg.out" errors)
	if [ -z "$rate" ]; then
		fail "smtp c=$c" "loadgen: $(first_err "$d/lg.err")"
		continue
	elif [ "${errs:-1}" != 0 ]; then
		fail "smtp accept c=$c" "$rate msgs/s but $errs sessions failed, first: $(first_err "$d/lg.err")"
		continue
	fi
	res "smtp accept c=$c: $rate msgs/s"
	if [ "$commits" = n/a ] || [ "${msgs:-0}" = 0 ]; then
		res "smtp syncs/msg c=$c: n/a"
	else
		res "smtp syncs/msg c=$c: $(calc "$commits/$msgs" 3) ($commits commits, $msgs msgs)"
	fi
	if [ $c = 128 ] && [ -n "$sync" ]; then
		r=$(calc "$rate/$sync" 3)
		RATIOS+=("$r")
		res "smtp c=128 round ${#RATIOS[@]}: $rate msgs/s / $(calc "$sync" 0) fdatasync/s = $(calc "$r" 2) x"
	fi
done
if [ ${#RATIOS[@]} -gt 0 ]; then
	r=$(printf '%s\n' "${RATIOS[@]}" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
	res "smtp c=128 / syncrate (median of ${#RATIOS[@]}): $(calc "$r" 2) x $(target "$r" '>=' 2 '>= 2x')"
fi

# ---- 2b. SMTP accept, 1 MiB messages -----------------------------------------
# A body over 256 KiB spills to a file (opened and written on the thread
# pool, never on the loop) that the commit thread copies into the map. Each
# round is a fresh server; the figure is how steady the rate is: the
# slowest round over the median (a stall on the loop shows up here first).
# A round stores a few GB: its store is deleted right after it, and each
# round starts with the disk's dirty pages written (sync), so that none
# pays for the writeback of what ran before it.
R1M=${BENCH_ROUNDS_1M:-5}
C1M=16
MIB1=()
for i in $(seq "$R1M"); do
	d=$W/smtp_1m.$i
	say "smtp accept 1 MiB, $C1M sessions, ${SECS}s, round $i"
	sync
	PB_STORE_MAX=16G pb_start "$d" || { fail "smtp 1 MiB round $i" "server did not start"; continue; }
	"$LG" smtp 127.0.0.1 "$SMTP_PORT" $C1M "$SECS" 1048576 $NUSERS >"$d/lg.out" 2>"$d/lg.err"
	pb_stop
	rm -rf "$d/data"
	rate=$(kv "$d/lg.out" msgs_per_s)
	errs=$(kv "$d/lg.out" errors)
	if [ -z "$rate" ] || [ "${errs:-1}" != 0 ]; then
		fail "smtp 1 MiB round $i" "loadgen: $(first_err "$d/lg.err")"
		continue
	fi
	MIB1+=("$rate") # 1 MiB bodies: messages/s = MiB/s
	res "smtp accept 1 MiB c=$C1M round ${#MIB1[@]}: $rate MiB/s"
done
if [ ${#MIB1[@]} -gt 0 ]; then
	mn=$(printf '%s\n' "${MIB1[@]}" | sort -g | head -n 1)
	md=$(printf '%s\n' "${MIB1[@]}" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
	r=$(calc "$mn/$md" 3)
	res "smtp accept 1 MiB c=$C1M (${#MIB1[@]} rounds): min $(calc "$mn" 1), median $(calc "$md" 1) MiB/s, min/median $(calc "$r" 2) $(target "$r" '>=' 0.7 '>= 0.7')"
fi

# ---- 2c. SMTP accept with a relay decision per RCPT ------------------------
# The same load as 2 at c=128, in pairs of runs on fresh servers: MX only
# (every recipient local: the decision is "local" at once), then relayed
# (every recipient in another domain; the client, 127.0.0.1, is in none of
# four relay_networks, so each RCPT walks them, then finds its grant among
# 33, made by u1's POP3 login; the sender and From: are checked against
# u1, and each message is one queue entry instead of a mailbox entry).
# The figure is the median of relay/MX over the pairs.
RR=${BENCH_ROUNDS_RELAY:-3}
RELAY_NETS='relay_networks = 10.0.0.0/8, 192.168.0.0/16, 172.16.0.0/12, fd00::/8'
RRATIOS=()
grants_make() { # POP3 logins: u1 from 127.0.0.1, u2..u16 from 127.0.0.2..33
	python3 - "$POP3_PORT" "$PASS" <<'EOF'
import poplib, socket, sys
port, pw = int(sys.argv[1]), sys.argv[2]
class P(poplib.POP3):
    def __init__(self, src):
        self.src = src
        super().__init__("127.0.0.1", port, timeout=30)
    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.src, 0))
for i in range(1, 34):
    p = P("127.0.0.%d" % i)
    p.user("u%d@localhost" % (1 if i == 1 else 2 + i % 15))
    p.pass_(pw)
    p.quit()
EOF
}
for i in $(seq "$RR"); do
	rates=()
	for kind in mx relay; do
		d=$W/smtp_$kind.$i
		say "smtp accept $kind, 128 sessions, ${SECS}s, round $i"
		if [ $kind = relay ]; then
			PB_SMTP_EXTRA=$RELAY_NETS pb_start "$d" || { fail "smtp relay round $i" "server did not start"; continue 2; }
			if ! grants_make >"$d/grants.out" 2>&1; then
				pb_stop
				fail "smtp relay round $i" "POP3 logins failed: $(tail -n 1 "$d/grants.out")"
				continue 2
			fi
			dom=remote.test
		else
			pb_start "$d" || { fail "smtp mx round $i" "server did not start"; continue 2; }
			dom=localhost
		fi
		"$LG" smtp 127.0.0.1 "$SMTP_PORT" 128 "$SECS" 4096 $NUSERS $dom >"$d/lg.out" 2>"$d/lg.err"
		pb_stop
		rate=$(kv "$d/lg.out" msgs_per_s)
		errs=$(kv "$d/lg.out" errors)
		if [ -z "$rate" ] || [ "${errs:-1}" != 0 ]; then
			fail "smtp $kind round $i" "loadgen: $(first_err "$d/lg.err")"
			continue 2
		fi
		if [ $kind = relay ] && ! grep -q 'reason=pop-before-smtp' "$d/server.log"; then
			fail "smtp relay round $i" "no relay decision by grant in the log"
			continue 2
		fi
		rates+=("$rate")
		rm -rf "$d/data"
	done
	r=$(calc "${rates[1]}/${rates[0]}" 3)
	RRATIOS+=("$r")
	res "smtp c=128 round $i: mx ${rates[0]} msgs/s, relay ${rates[1]} msgs/s, relay/mx $(calc "$r" 2)"
done
if [ ${#RRATIOS[@]} -gt 0 ]; then
	r=$(printf '%s\n' "${RRATIOS[@]}" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
	res "smtp c=128 relay/mx (median of ${#RRATIOS[@]}): $(calc "$r" 2) $(target "$r" '>=' 0.9 '>= 0.9')"
fi

# ---- 3. idle connections (and RSS at rest) -----------------------------------
idle_run() { # PROTO
	local p=$1 port before after lpid i
	local d=$W/idle_$p
	pb_start "$d" || { fail "idle $p" "server did not start"; return; }
	sleep 0.5
	before=$(rss_kib "$SPID")
	if [ "$p" = smtp ]; then
		port=$SMTP_PORT
		res "rss at rest: $(calc "$before/1024") MiB $(target "$before" '<=' 4096 '<= 4 MiB')"
	else
		port=$POP3_PORT
	fi
	# loadgen holds its connections until its stdin, a fifo whose only
	# writer is our fd 9, reaches EOF
	mkfifo "$d/hold"
	exec 9<>"$d/hold"
	"$LG" idle "$p" 127.0.0.1 "$port" $IDLE_N <"$d/hold" >"$d/idle.out" 2>"$d/idle.err" 9>&- &
	lpid=$!
	PIDS+=("$lpid")
	for i in $(seq 1200); do
		grep -q '^ready' "$d/idle.out" && break
		kill -0 "$lpid" 2>/dev/null || break
		sleep 0.1
	done
	sleep 1
	after=$(rss_kib "$SPID")
	exec 9>&-
	wait "$lpid"
	forget "$lpid"
	pb_stop
	local g
	g=$(kv "$d/idle.out" greeted)
	if [ "${g:-0}" != $IDLE_N ] || grep -q 'dropped=[1-9]' "$d/idle.out"; then
		fail "idle $p" "greeted ${g:-0} of $IDLE_N, first error: $(first_err "$d/idle.err")"
		return
	fi
	local add=$((after - before))
	res "idle $p $IDLE_N conns: +$(calc "$add/1024") MiB, $(calc "$add/$IDLE_N" 2) KiB/conn $(target "$add" '<=' 8192 '<= 8 MiB total')"
}
say "idle connections"
idle_run smtp
idle_run pop3

# ---- 4. binary size ----------------------------------------------------------
if strip -o "$W/pillarbox.stripped" "$BIN" 2>/dev/null; then
	SZ=$(stat -c %s "$W/pillarbox.stripped")
	res "binary stripped: $(calc "$SZ/1024") KiB $(target "$SZ" '<=' 1048576 '<= 1 MiB')"
else
	fail "binary stripped" "strip failed"
fi

# ---- 5. POP3 retrieval -------------------------------------------------------
# pop3_best PORT OUTPREFIX EXPECTED [pop3|pop3s]: REPEAT retrieval runs, the
# best (most msgs/s) copied to OUTPREFIX.best; on failure POP3_ERR says why.
POP3_ERR=
pop3_best() {
	local port=$1 out=$2 want=$3 mode=${4:-pop3} i best=-1 r m
	for i in $(seq "$REPEAT"); do
		if ! "$LG" "$mode" 127.0.0.1 "$port" $NUSERS $NUSERS "$PASS" >"$out.$i" 2>"$out.$i.err"; then
			POP3_ERR="loadgen: $(first_err "$out.$i.err")"
			return 1
		fi
		m=$(kv "$out.$i" msgs)
		if [ "$m" != "$want" ]; then
			POP3_ERR="retrieved $m of $want messages"
			return 1
		fi
		r=$(kv "$out.$i" msgs_per_s)
		if awk "BEGIN { exit !($r > $best) }"; then best=$r; cp "$out.$i" "$out.best"; fi
	done
}

declare -A PBR DVR                 # msgs/s per size label
declare -A PERBOX=([4k]=1000 [1m]=20) # messages per mailbox
pop3_pillarbox() { # LABEL PERUSER MSGSIZE
	local l=$1 n=$2 size=$3 d=$W/pop3_$1
	say "pop3 pillarbox $l: fill $NUSERS x $n"
	pb_start "$d" || { fail "pop3 $l pillarbox" "server did not start"; return; }
	if ! "$LG" fill 127.0.0.1 "$SMTP_PORT" $NUSERS "$n" "$size" >"$d/fill.out" 2>"$d/fill.err"; then
		pb_stop
		fail "pop3 $l pillarbox" "fill: $(first_err "$d/fill.err")"
		return
	fi
	say "pop3 pillarbox $l: retrieve"
	if pop3_best "$POP3_PORT" "$d/pop3" $((NUSERS * n)); then
		PBR[$l]=$(kv "$d/pop3.best" msgs_per_s)
		local note= tries
		tries=$(kv "$d/fill.out" retries)
		[ "${tries:-0}" = 0 ] || note=" (the SMTP fill retried $tries times after a 4xx)"
		res "pop3 $l pillarbox: ${PBR[$l]} msgs/s, $(kv "$d/pop3.best" mb_per_s) MB/s$note"
	else
		fail "pop3 $l pillarbox" "$POP3_ERR"
	fi
	pb_stop
}
pop3_pillarbox 4k "${PERBOX[4k]}" 4096
pop3_pillarbox 1m "${PERBOX[1m]}" 1048576

# ---- 5b. the same against Dovecot --------------------------------------------
DV_OK=0
dovecot_setup() {
	if [ "${BENCH_DOVECOT:-1}" = 0 ]; then return 1; fi
	if [ ! -x /usr/lib/dovecot/pop3 ] || ! command -v dovecot >/dev/null; then
		[ "$(id -u)" = 0 ] || return 1
		say "installing dovecot-pop3d"
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y -qq dovecot-pop3d >"$W/apt.log" 2>&1 ||
			{ apt-get update -qq >>"$W/apt.log" 2>&1 &&
				apt-get install -y -qq dovecot-pop3d >>"$W/apt.log" 2>&1; } || return 1
		[ -x /usr/lib/dovecot/pop3 ] || return 1
	fi
	return 0
}

dovecot_start() { # sets DVPID, DVPORT
	local d=$W/dovecot u g iu lu i
	mkdir -p "$d/run" "$d/state" "$d/mail"
	if [ "$(id -u)" = 0 ]; then
		# dovecot runs no mail session as root: mail belongs to nobody, and
		# its own processes use the users the package made
		u=$(id -u nobody) g=$(id -g nobody) iu=dovecot lu=dovenull
		for i in dovecot dovenull; do
			getent passwd $i >/dev/null ||
				useradd --system --no-create-home --shell /usr/sbin/nologin $i ||
				return 1
		done
	else
		u=$(id -u) g=$(id -g) iu=$(id -un) lu=$(id -un)
	fi
	for i in $(seq $NUSERS); do
		echo "u$i@localhost:{PLAIN}$PASS:$u:$g::$d/mail/u$i@localhost::"
	done >"$d/users"
	chmod 644 "$d/users"
	fill_maildirs "$d/mail" || return 1
	chown -R "$u:$g" "$d/mail"
	DVPORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') ||
		return 1
	cat >"$d/dovecot.conf" <<EOF
base_dir = $d/run
state_dir = $d/state
instance_name = pillarbox-bench
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:$d/mail/%u
log_path = $d/dovecot.log
default_internal_user = $iu
default_login_user = $lu
# POP3 RETR would otherwise rename every file to set \\Seen
pop3_no_flag_updates = yes
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $d/users
}
userdb {
  driver = passwd-file
  args = username_format=%u $d/users
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $DVPORT
  }
  inet_listener pop3s {
    port = 0
  }
}
EOF
	bg dovecot -F -c "$d/dovecot.conf" >"$d/stdout" 2>&1
	DVPID=$!
	for i in $(seq 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$DVPORT") 2>/dev/null && return 0
		kill -0 "$DVPID" 2>/dev/null || break
		sleep 0.1
	done
	say "dovecot did not start: $(tail -n 5 "$d/stdout" "$d/dovecot.log" 2>/dev/null | tr '\n' ' ')"
	return 1
}

# Maildirs with the same messages pillarbox stores (trace headers + body),
# LF line ends as maildir keeps them; ,S= and ,W= in the names give dovecot
# the sizes without reading the files, as its own delivery would.
fill_maildirs() { # MAILROOT
	"$LG" body 4096 >"$W/body.4k" && "$LG" body 1048576 >"$W/body.1m" || return 1
	python3 - "$1" "$NUSERS" "$W/body.4k" "$W/body.1m" "${PERBOX[4k]}" "${PERBOX[1m]}" <<'EOF'
import email.utils, os, sys, time
root, nusers = sys.argv[1], int(sys.argv[2])
for kind, path, count in (("4k", sys.argv[3], int(sys.argv[5])),
                          ("1m", sys.argv[4], int(sys.argv[6]))):
    body = open(path, "rb").read()
    for u in range(1, nusers + 1):
        box = os.path.join(root, kind, "u%d@localhost" % u)
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(box, sub), exist_ok=True)
        now = int(time.time())
        for i in range(count):
            msg = ("Return-Path: <bench@localhost>\r\n"
                   "Received: from loadgen.bench ([127.0.0.1])\r\n"
                   "\tby mx.test (pillarbox) with ESMTP id %016x\r\n"
                   "\tfor <u%d@localhost>; %s\r\n"
                   % (u << 32 | i, u, email.utils.formatdate())).encode() + body
            lf = msg.replace(b"\r\n", b"\n")
            name = "%d.M%dP%d.bench,S=%d,W=%d:2," % (now, i, os.getpid(), len(lf), len(msg))
            with open(os.path.join(box, "cur", name), "wb") as f:
                f.write(lf)
EOF
}

if dovecot_setup; then
	say "dovecot: fill maildirs, start"
	if dovecot_start; then
		DV_OK=1
	else
		fail dovecot "could not start it (log in $W/dovecot)"
	fi
else
	res "dovecot: not available"
fi

if [ $DV_OK = 1 ]; then
	for l in 4k 1m; do
		# switch the mail location by renaming: 4k first, then 1m
		rm -rf "$W/dovecot/mail/u"*
		for i in $(seq $NUSERS); do
			mv "$W/dovecot/mail/$l/u$i@localhost" "$W/dovecot/mail/u$i@localhost"
		done
		say "pop3 dovecot $l: retrieve"
		if pop3_best "$DVPORT" "$W/dovecot/pop3_$l" $((NUSERS * ${PERBOX[$l]})); then
			DVR[$l]=$(kv "$W/dovecot/pop3_$l.best" msgs_per_s)
			res "pop3 $l dovecot: ${DVR[$l]} msgs/s, $(kv "$W/dovecot/pop3_$l.best" mb_per_s) MB/s"
		else
			fail "pop3 $l dovecot" "$POP3_ERR"
		fi
	done
	for l in 4k 1m; do
		[ -n "${PBR[$l]:-}" ] && [ -n "${DVR[$l]:-}" ] || continue
		r=$(calc "${PBR[$l]}/${DVR[$l]}" 4)
		if [ $l = 4k ]; then
			res "pop3 $l pillarbox/dovecot msgs/s: $(calc "$r" 2) x $(target "$r" '>=' 3 '>= 3x')"
		else
			res "pop3 $l pillarbox/dovecot msgs/s: $(calc "$r" 2) x"
		fi
	done
fi

# ---- 6. TLS ------------------------------------------------------------------
# Full and resumed handshakes per second of server CPU (one core: the loop
# is one thread) with openssl s_time clients, and the RSS an idle TLS
# connection adds; see tests/bench/tls_bench.py.
say "tls: $IDLE_N idle pop3s connections, handshakes for ${SECS}s"
if python3 "$ROOT/tests/bench/tls_bench.py" "$BIN" "$W/tls" "$SECS" $IDLE_N \
	>"$W/tls.out" 2>"$W/tls.err"; then
	res "tls full handshakes ($(kv "$W/tls.out" cipher)): $(kv "$W/tls.out" per_cpu_s) per server CPU-second, $(kv "$W/tls.out" observed_per_s)/s observed"
	res "tls resumed handshakes (session cache): $(kv "$W/tls.out" resumed_per_cpu_s) per server CPU-second, $(kv "$W/tls.out" resumed_observed_per_s)/s observed, $(calc "$(kv "$W/tls.out" resumed_share)*100" 1)% resumed"
	res "tls idle $IDLE_N conns: $(kv "$W/tls.out" idle_kib_per_conn) KiB/conn RSS $(target "$(kv "$W/tls.out" idle_kib_per_conn)" '<=' 24 '<= 24 KiB')"
else
	fail tls "$(tail -n 1 "$W/tls.err")"
fi

# SMTP accept over STARTTLS: the load of section 2 at 16 sessions, each
# session beginning EHLO, STARTTLS, EHLO and sending every message over
# that TLS (build/loadgen's BearSSL client; one handshake per session),
# against the same load in clear, in pairs of runs on fresh servers. The
# figure is the median of STARTTLS/plaintext over the pairs. Where the
# disk's syncs bound both rates the ratio hides what TLS costs, so each
# run also gives the server's CPU time per message (user + system).
RT=${BENCH_ROUNDS_TLS:-3}
TRATIOS=()
HZ=$(getconf CLK_TCK)
for i in $(seq "$RT"); do
	rates=() cpus=()
	for kind in smtp smtp-starttls; do
		d=$W/tls_$kind.$i
		say "$kind accept, 16 sessions, ${SECS}s, round $i"
		pb_start "$d" || { fail "$kind round $i" "server did not start"; continue 2; }
		c0=$(cpu_ticks "$SPID")
		"$LG" $kind 127.0.0.1 "$SMTP_PORT" 16 "$SECS" 4096 $NUSERS >"$d/lg.out" 2>"$d/lg.err"
		c1=$(cpu_ticks "$SPID")
		pb_stop
		rm -rf "$d/data"
		rate=$(kv "$d/lg.out" msgs_per_s)
		errs=$(kv "$d/lg.out" errors)
		if [ -z "$rate" ] || [ "${errs:-1}" != 0 ]; then
			fail "$kind round $i" "loadgen: $(first_err "$d/lg.err")"
			continue 2
		fi
		if [ $kind = smtp-starttls ] && [ "$(grep -c ' event=tls version=' "$d/server.log")" != 16 ]; then
			fail "$kind round $i" "not 16 TLS sessions in the server's log"
			continue 2
		fi
		rates+=("$rate")
		cpus+=("$(calc "($c1 - $c0) / $HZ * 1e6 / $(kv "$d/lg.out" msgs)" 0)")
	done
	r=$(calc "${rates[1]}/${rates[0]}" 3)
	TRATIOS+=("$r")
	res "smtp c=16 round $i: plaintext ${rates[0]} msgs/s (server CPU ${cpus[0]} us/msg), starttls ${rates[1]} msgs/s (${cpus[1]} us/msg), starttls/plaintext $(calc "$r" 2)"
done
if [ ${#TRATIOS[@]} -gt 0 ]; then
	r=$(printf '%s\n' "${TRATIOS[@]}" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
	res "smtp accept c=16 starttls/plaintext (median of ${#TRATIOS[@]}): $(calc "$r" 2) x $(target "$r" '>=' 0.5 '>= 0.5x')"
fi

# POP3 RETR over TLS: one server with pop3s on, 16 mailboxes of 20 x 1 MiB
# (section 5's), 16 clients each retrieving its own over pop3s and, from
# the same store, in clear; best of BENCH_REPEAT runs each, timed from the
# moment all have logged in. The client decrypts all it gets, as much work
# as the server's encryption, on the same 2 cores.
tls_pop3() {
	local d=$W/tls_pop3 n=${PERBOX[1m]} want pl tl
	say "pop3s: fill $NUSERS x $n x 1 MiB"
	PB_POP3S=127.0.0.1:0 pb_start "$d" || { fail "pop3s" "server did not start"; return; }
	if ! "$LG" fill 127.0.0.1 "$SMTP_PORT" $NUSERS "$n" 1048576 >"$d/fill.out" 2>"$d/fill.err"; then
		pb_stop
		fail "pop3s" "fill: $(first_err "$d/fill.err")"
		return
	fi
	want=$((NUSERS * n))
	say "pop3s: retrieve, in clear and over TLS"
	if ! pop3_best "$POP3_PORT" "$d/plain" "$want" pop3; then
		pb_stop
		fail "pop3 1m plaintext" "$POP3_ERR"
		return
	fi
	if ! pop3_best "$POP3S_PORT" "$d/tls" "$want" pop3s; then
		pb_stop
		fail "pop3s 1m" "$POP3_ERR"
		return
	fi
	pb_stop
	pl=$(kv "$d/plain.best" mib_per_s)
	tl=$(kv "$d/tls.best" mib_per_s)
	res "pop3s RETR 1 MiB x $want, 16 clients: $tl MiB/s over TLS, $pl MiB/s in clear, TLS/clear $(calc "$tl/$pl" 2)"
}
tls_pop3

# ---- 7. outbound delivery ----------------------------------------------------
# Its own section (others edit this file too): tests/bench/outbound.py does
# the work and prints key=value.
outbound_bench() {
	local c d n=${BENCH_OUTBOUND_N:-2000} PY=/usr/bin/python3
	if ! command -v smtp-sink >/dev/null; then
		fail "outbound" "smtp-sink missing (Debian package postfix)"
		return
	fi
	for c in 1 4 20; do
		say "outbound throughput, max_concurrent $c, $n messages"
		d=$W/outbound_c$c
		mkdir -p "$d"
		if $PY "$ROOT/tests/bench/outbound.py" throughput "$BIN" "$d" "$c" \
			"$n" >"$d/out" 2>"$d/err"; then
			res "outbound 4k max_concurrent=$c: $(kv "$d/out" msgs_per_s) msgs/s"
		else
			fail "outbound c=$c" "$(tail -n 1 "$d/err")"
		fi
	done
	say "outbound latency, idle queue"
	d=$W/outbound_lat
	mkdir -p "$d"
	if $PY "$ROOT/tests/bench/outbound.py" latency "$BIN" "$d" 500 \
		>"$d/out" 2>"$d/err"; then
		p50=$(kv "$d/out" p50_ms)
		res "outbound 250-to-250 latency: p50 $p50 ms, p99 $(kv "$d/out" p99_ms) ms $(target "$p50" '<=' 10 '<= 10 ms p50')"
	else
		fail "outbound latency" "$(tail -n 1 "$d/err")"
	fi
}
outbound_bench

# ---- table -------------------------------------------------------------------
echo
echo "== pillarbox benchmark ($(nproc) cores, $(date -u +%Y-%m-%dT%H:%M:%SZ)) =="
printf '%s\n' "${RESULTS[@]}"
exit $RC
