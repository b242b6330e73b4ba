"""SMTP hardening, second pass: the real pillarbox binary on loopback, raw
sockets and POP3 to check what was (not) delivered.

- the error limit counts errors of a session that delivers nothing; 452 for
  too many recipients is never one; probers still get 421
- a recipient no local user can ever have gets a 5xx, not a 4xx
- client-supplied values cannot add keys to log lines
- a NUL in a message refuses it (DATA and BDAT)
- a body over 256 KiB goes to its spill file off the loop thread, in order,
  and a full disk there is 452 4.3.1
- max_message_size above what the store takes is not advertised
"""
import os
import re
import signal
import socket
import struct
import shutil
import subprocess
import threading
import time
import urllib.parse

import pytest

from helpers import (SENDER, TIMEOUT, SMTPConn, expect,  # noqa: F401
                     precreate_server_dirs, make_body, pop3_messages,
                     pop3_stat, restart, stored_body)

OK = "250 2.0.0 Ok"
RCPT_OK = "250 2.1.5 Ok"
TOO_MANY_RCPTS = "452 4.5.3 Too many recipients"
TOO_MANY_ERRORS = "421 4.7.0 mx.test Error: too many errors"
NUL_REPLY = "500 5.5.2 NUL character in message"
STORED_RE = re.compile(r"^250 2\.0\.0 Ok: stored as [0-9a-f]+$")


def unknown(addr):
    return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % addr


def expect_stored(reply):
    assert STORED_RE.match(reply.last) and len(reply.lines) == 1, reply


def count(server, user="alice@localhost"):
    return pop3_stat(server, user)[0]


def stop_clean(server):
    """Stops the server now (so its log is complete) and checks what the
    fixture would: exit 0, no sanitizer report."""
    rc = server.stop()
    text = server.log_text()
    for bad in ("ERROR: AddressSanitizer", "runtime error:",
                "LeakSanitizer"):
        assert bad not in text, text[-5000:]
    assert rc == 0, "server exit %s\n%s" % (rc, text[-3000:])
    return text


def big_body(size, tag="big"):
    """A CRLF message of about size octets; every 7th line starts with a
    dot (stuffed on the wire)."""
    head = ("Subject: %s\r\nMessage-Id: <%s@client.test>\r\n\r\n"
            % (tag, tag)).encode()
    lines, n, i = [head], len(head), 0
    while n < size:
        line = b"%s%07d %s\r\n" % (b"." if i % 7 == 0 else b"", i,
                                  bytes([97 + i % 26]) * 60)
        lines.append(line)
        n += len(line)
        i += 1
    return b"".join(lines)


def stuffed(body):
    return re.sub(rb"(?m)^\.", b"..", body)


# ============================================= 1. the error limit

def test_125_pipelined_rcpts_then_data(make_server):
    """RFC 5321 4.5.3.1.10: past max_recipients the client gets 452 and
    sends the rest later. 452 is not an error, so 125 pipelined RCPTs at
    max_recipients = 100 get 100 x 250, 25 x 452, and the message goes to
    the 100; the other 25 get it in the next transaction."""
    users = ["u%03d@localhost" % i for i in range(125)]
    s = make_server(extra={"smtp": {"max_recipients": "100"}}, users=users)
    body1, body2 = make_body("first-100"), make_body("last-25")
    with SMTPConn(s) as c:
        c.send(("EHLO client.test\r\nMAIL FROM:<%s>\r\n" % SENDER
                + "".join("RCPT TO:<%s>\r\n" % u for u in users)
                + "DATA\r\n").encode())
        expect(c.reply(), "250")
        expect(c.reply(), "250 2.1.0", "250 2.1.0 Ok")
        got = [c.reply().last for _ in users]
        assert got == [RCPT_OK] * 100 + [TOO_MANY_RCPTS] * 25, got
        expect(c.reply(), "354", "354 End data with <CR><LF>.<CR><LF>")
        c.send(stuffed(body1) + b".\r\n")
        expect_stored(c.reply())
        # the client sends the rest later, in the same session
        c.send(("MAIL FROM:<%s>\r\n" % SENDER
                + "".join("RCPT TO:<%s>\r\n" % u for u in users[100:])
                + "DATA\r\n").encode())
        expect(c.reply(), "250 2.1.0", "250 2.1.0 Ok")
        assert [c.reply().last for _ in users[100:]] == [RCPT_OK] * 25
        expect(c.reply(), "354")
        c.send(stuffed(body2) + b".\r\n")
        expect_stored(c.reply())
        expect(c.cmd("NOOP"), "250", OK)
        assert c.no_pending()
    for i, u in enumerate(users):
        msgs = pop3_messages(s, u)
        assert [stored_body(m) for m in msgs] == \
            [body1 if i < 100 else body2], u


def list_rcpts(live, dead, leading_dead=3):
    """A list's recipients: a few dead ones first, then live and dead
    interleaved."""
    out = list(dead[:leading_dead])
    rest = dead[leading_dead:]
    for i, u in enumerate(live):
        out.append(u)
        if i < len(rest):
            out.append(rest[i])
    return out + rest[len(live):]


def test_list_message_with_dead_addresses_reaches_the_live_ones(make_server):
    """A list message with 25 unknown addresses among 30 live ones is
    delivered to the live ones; once it is accepted the error count starts
    again (19 more errors are allowed, the 20th ends the session)."""
    live = ["m%02d@localhost" % i for i in range(30)]
    dead = ["gone%02d@localhost" % i for i in range(25)]
    rcpts = list_rcpts(live, dead)
    s = make_server(users=live)
    body = make_body("list-message")
    with SMTPConn(s) as c:
        c.ehlo()
        c.send(("MAIL FROM:<%s>\r\n" % SENDER
                + "".join("RCPT TO:<%s>\r\n" % r for r in rcpts)
                + "DATA\r\n").encode())
        expect(c.reply(), "250 2.1.0", "250 2.1.0 Ok")
        got = [c.reply().last for _ in rcpts]
        want = [RCPT_OK if r in live else unknown(r) for r in rcpts]
        assert got == want
        expect(c.reply(), "354")
        c.send(stuffed(body) + b".\r\n")
        expect_stored(c.reply())
        for _ in range(19):
            expect(c.cmd("FOOBAR"), "500 5.5.1",
                   "500 5.5.1 Command unrecognized")
        expect(c.cmd("NOOP"), "250", OK)
        c.send(b"FOOBAR\r\n")
        expect(c.reply(), "500 5.5.1")
        expect(c.reply(), "421 4.7.0", TOO_MANY_ERRORS)
        assert c.eof()
    for u in live:
        assert [stored_body(m) for m in pop3_messages(s, u)] == [body], u


def test_dead_addresses_count_when_nothing_is_delivered(make_server):
    """The recipients a transaction refused count once it ends without a
    message: RSET after one live and 25 dead addresses ends the session."""
    s = make_server()
    with SMTPConn(s) as c:
        c.begin(["alice@localhost"])
        for i in range(25):
            expect(c.cmd("RCPT TO:<gone%d@localhost>" % i), "550 5.1.1",
                   unknown("gone%d@localhost" % i))
        c.send(b"RSET\r\n")
        expect(c.reply(), "250", OK)
        expect(c.reply(), "421 4.7.0", TOO_MANY_ERRORS)
        assert c.eof()
    assert count(s) == 0


def test_one_valid_address_buys_no_endless_guesses(make_server):
    """A transaction with a live recipient sets aside at most
    max_recipients refused ones: a prober that knows one address still
    ends at the limit."""
    s = make_server(extra={"smtp": {"max_recipients": "30"}})
    with SMTPConn(s) as c:
        c.begin(["alice@localhost"])
        for i in range(30):
            expect(c.cmd("RCPT TO:<guess%d@localhost>" % i), "550 5.1.1",
                   unknown("guess%d@localhost" % i))
        c.send(b"RCPT TO:<guess30@localhost>\r\n")
        expect(c.reply(), "550 5.1.1", unknown("guess30@localhost"))
        expect(c.reply(), "421 4.7.0", TOO_MANY_ERRORS)
        assert c.eof()
    assert count(s) == 0


def test_pure_prober_gets_421_at_the_limit(server):
    """Harvesting addresses (550) or probing for a relay (554) with no live
    recipient ends at the 20th refusal; RSET does not wipe the count."""
    with SMTPConn(server) as c:
        c.begin([])
        for i in range(10):
            expect(c.cmd("RCPT TO:<guess%d@localhost>" % i), "550 5.1.1",
                   unknown("guess%d@localhost" % i))
        expect(c.cmd("RSET"), "250", OK)
        expect(c.cmd("MAIL FROM:<%s>" % SENDER), "250 2.1.0")
        for i in range(9):
            expect(c.cmd("RCPT TO:<x%d@remote.test>" % i), "554 5.7.1",
                   "554 5.7.1 <x%d@remote.test>: Relay access denied" % i)
        c.send(b"RCPT TO:<guess10@localhost>\r\nNOOP\r\n")
        expect(c.reply(), "550 5.1.1", unknown("guess10@localhost"))
        expect(c.reply(), "421 4.7.0", TOO_MANY_ERRORS)
        assert c.eof()
        assert c.buf == b""  # the pipelined NOOP got nothing
    assert count(server) == 0
    assert count(server, "bob@localhost") == 0


# ================================= 2. permanent conditions get 5xx

def test_address_no_user_can_have_is_permanent(server):
    """A quoted local part with a space or a comma parses, but no local
    user can have it (the store refuses such names): 550 5.1.1, not a 451
    that senders retry for days. The session goes on."""
    body = make_body("after-unrepresentable")
    with SMTPConn(server) as c:
        c.begin([])
        for a in ('"a b"@localhost', '"a,b"@localhost', '"a b"@example.org',
                  '"a\\ b"@localhost'):
            shown = a.replace("\\ ", " ")
            expect(c.cmd("RCPT TO:<%s>" % a), "550 5.1.1", unknown(shown))
        expect(c.cmd("RCPT TO:<\"a b\"@remote.test>"), "554 5.7.1",
               '554 5.7.1 <"a b"@remote.test>: Relay access denied')
        expect(c.cmd("DATA"), "503 5.5.1")
        expect(c.cmd("RCPT TO:<alice@localhost>"), "250 2.1.5")
        expect_stored(c.data(body))
        # as a sender it is fine: senders are not looked up
        expect(c.cmd('MAIL FROM:<"a b"@example.org>'), "250 2.1.0")
        expect(c.cmd("RCPT TO:<bob@localhost>"), "250 2.1.5")
        expect_stored(c.data(body))
    assert [stored_body(m) for m in pop3_messages(server)] == [body]
    (msg,) = pop3_messages(server, "bob@localhost")
    assert msg.startswith(b'Return-Path: <"a b"@example.org>\r\n')


# ====================================================== 3. the logs

LINE_RE = re.compile(r"^(\S+) pillarbox (\w+) (\w+) (.*)$")
TOKEN_RE = re.compile(r"^[a-z][a-z0-9_-]*=[^=\s]*$")


def check_log_lines(text):
    """Every line: one event= and at most one ip= key; no forged
    ip=6.6.6.6; SMTP lines are all key=value with unique keys. Returns the
    SMTP lines as (line, {key: value})."""
    smtp = []
    for line in text.splitlines():
        m = LINE_RE.match(line)
        if not m:
            continue
        toks = m.group(4).split(" ")
        assert sum(t.startswith("event=") for t in toks) <= 1, line
        assert sum(t.startswith("ip=") for t in toks) <= 1, line
        assert "ip=6.6.6.6" not in toks, line
        if m.group(2) != "smtp":
            continue
        for t in toks:
            assert TOKEN_RE.match(t), (t, line)
        keys = [t.split("=", 1)[0] for t in toks]
        assert len(keys) == len(set(keys)), line
        smtp.append((line, dict(t.split("=", 1) for t in toks)))
    return smtp


HOSTILE_HELO = 'evil"event=login"ip=6.6.6.6'
HOSTILE_FROM = '"x ip=6.6.6.6 event=login"@example.org'
HOSTILE_RCPT = '"y ip=6.6.6.6 event=auth-failed"@localhost'
HOSTILE_RELAY = '"z\\\\ ip=6.6.6.6 %41 event=login"@remote.test'


def test_client_values_add_no_log_keys(server):
    """A hostile HELO name, sender and recipients cannot put a key of their
    own into a log line (a fail2ban filter reading ip= would ban
    6.6.6.6); each is logged encoded and decodes back to what was sent."""
    body = make_body("hostile")
    with SMTPConn(server) as c:
        expect(c.cmd("EHLO " + HOSTILE_HELO), "250")
        expect(c.cmd("MAIL FROM:<%s>" % HOSTILE_FROM), "250 2.1.0")
        expect(c.cmd("RCPT TO:<%s>" % HOSTILE_RCPT), "550 5.1.1",
               unknown(HOSTILE_RCPT))
        expect(c.cmd("RCPT TO:<%s>" % HOSTILE_RELAY), "554 5.7.1")
        expect(c.cmd("RCPT TO:<alice@localhost>"), "250 2.1.5")
        expect_stored(c.data(body))
        # a refused message logs its sender too
        expect(c.cmd("MAIL FROM:<%s>" % HOSTILE_FROM), "250 2.1.0")
        expect(c.cmd("RCPT TO:<alice@localhost>"), "250 2.1.5")
        expect(c.cmd("DATA"), "354")
        c.send(b"a\nb\r\n.\r\n")
        expect(c.reply(), "500 5.5.2")
    text = stop_clean(server)
    smtp = check_log_lines(text)
    events = {}
    for line, kv in smtp:
        events.setdefault(kv.get("event"), []).append(kv)
    dec = urllib.parse.unquote
    (stored,) = events["stored"]
    assert dec(stored["from"]) == "<%s>" % HOSTILE_FROM
    assert dec(stored["helo"]) == HOSTILE_HELO
    rejects = events["reject"]
    tos = sorted(dec(kv["to"]) for kv in rejects if "to" in kv)
    assert tos == sorted(["<%s>" % HOSTILE_RCPT, "<%s>" % HOSTILE_RELAY])
    for kv in rejects:
        assert dec(kv["helo"]) == HOSTILE_HELO
        assert dec(kv["from"]) == "<%s>" % HOSTILE_FROM
        assert kv["ip"] == "127.0.0.1"
    assert any("reply" in kv for kv in rejects)


# ======================================================= 4. NUL bytes

NUL_BODIES = [
    b"Subject: nul\r\n\r\na\x00b\r\n",
    # the smuggling shape: a hop that drops NULs ends the message here
    b"Subject: nul\r\n\r\nhello\r\n\x00.\r\nMAIL FROM:<x@y>\r\n"
    b"RCPT TO:<bob@localhost>\r\nDATA\r\nsmuggled\r\n",
    b"\x00Subject: nul first\r\n\r\nbody\r\n",
    b"Subject: nul last\r\n\r\nbody\x00\r\n",
]


def test_nul_in_data_refused(server):
    good = make_body("clean-after-nul")
    with SMTPConn(server) as c:
        c.ehlo()
        for b in NUL_BODIES + [big_body(600 << 10) + b"\x00\r\n",
                               b"\x00" + big_body(600 << 10)]:
            c.begin(["alice@localhost", "bob@localhost"], ehlo=False)
            expect(c.cmd("DATA"), "354")
            c.send(stuffed(b) + b".\r\nNOOP\r\n")
            expect(c.reply(), "500 5.5.2", NUL_REPLY)
            expect(c.reply(), "250", OK)
            assert c.no_pending()
        expect_stored(c.deliver(["alice@localhost"], good))
    assert [stored_body(m) for m in pop3_messages(server)] == [good]
    assert count(server, "bob@localhost") == 0


def test_nul_in_bdat_refused(server):
    good = make_body("clean-after-bdat-nul")
    with SMTPConn(server) as c:
        c.ehlo()
        for b in NUL_BODIES + [big_body(600 << 10) + b"\x00\r\n"]:
            c.begin(["alice@localhost"], ehlo=False)
            c.send(b"BDAT %d LAST\r\n" % len(b) + b + b"NOOP\r\n")
            expect(c.reply(), "500 5.5.2", NUL_REPLY)
            expect(c.reply(), "250", OK)
        # in the first of two chunks: seen only at the end of the message
        c.begin(["alice@localhost"], ehlo=False)
        first, last = b"Subject: x\r\n\r\na\x00", b"b\r\n"
        c.send(b"BDAT %d\r\n" % len(first) + first)
        expect(c.reply(), "250 2.0.0", "250 2.0.0 %d octets received"
               % len(first))
        c.send(b"BDAT %d LAST\r\n" % len(last) + last)
        expect(c.reply(), "500 5.5.2", NUL_REPLY)
        assert c.no_pending()
        c.begin(["alice@localhost"], ehlo=False)
        c.send(b"BDAT %d LAST\r\n" % len(good) + good)
        expect_stored(c.reply())
    assert [stored_body(m) for m in pop3_messages(server)] == [good]


# =========================================== 5. spilling off the loop

def test_big_messages_stored_exactly(server):
    """Bodies over 256 KiB go to their spill file in chunks written on the
    thread pool: they must arrive whole and in order, by DATA (with a
    small message pipelined right behind) and by uneven BDAT chunks."""
    b1 = big_body(3 << 20, "big-data")
    b2 = make_body("small-behind-big")
    b3 = big_body((2 << 20) + 12345, "big-bdat")
    cuts = [1, 70000, 262144, 262145, 900000, 1 << 20, len(b3)]
    with SMTPConn(server) as c:
        c.ehlo()
        c.send(b"MAIL FROM:<%s>\r\nRCPT TO:<alice@localhost>\r\nDATA\r\n"
               % SENDER.encode())
        expect(c.reply(), "250 2.1.0")
        expect(c.reply(), "250 2.1.5")
        expect(c.reply(), "354")
        c.send(stuffed(b1) + b".\r\nMAIL FROM:<%s>\r\n" % SENDER.encode()
               + b"RCPT TO:<alice@localhost>\r\nDATA\r\n")
        expect_stored(c.reply())
        expect(c.reply(), "250 2.1.0")
        expect(c.reply(), "250 2.1.5")
        expect(c.reply(), "354")
        c.send(stuffed(b2) + b".\r\n")
        expect_stored(c.reply())
        c.begin(["alice@localhost", "bob@localhost"], ehlo=False)
        prev = 0
        for i, cut in enumerate(cuts):
            chunk = b3[prev:cut]
            last = i == len(cuts) - 1
            c.send(b"BDAT %d%s\r\n" % (len(chunk), b" LAST" if last else b"")
                   + chunk)
            if last:
                expect_stored(c.reply())
            else:
                expect(c.reply(), "250 2.0.0",
                       "250 2.0.0 %d octets received" % cut)
            prev = cut
    assert [stored_body(m) for m in pop3_messages(server)] == [b1, b2, b3]
    assert [stored_body(m) for m in pop3_messages(server, "bob@localhost")] \
        == [b3]


def test_spill_file_io_is_off_the_loop_thread(server):
    """strace the running server while it takes a 2 MiB message: the spill
    file is opened (O_TMPFILE) and written only by other threads, never by
    the loop thread (whose thread id is the process id)."""
    pid = server.proc.pid
    out = os.path.join(server.dir, "strace.out")
    err = os.path.join(server.dir, "strace.err")
    with open(err, "wb") as ef:
        st = subprocess.Popen(["strace", "-f", "-qq", "-p", str(pid), "-o",
                               out, "-e",
                               "trace=open,openat,write,pwrite64,writev"],
                              stderr=ef)
    try:
        # with -qq strace says nothing on attaching: wait until it traces
        # the loop thread (a NOOP makes it write to its socket)
        deadline = time.time() + 30
        with SMTPConn(server) as probe:
            while True:
                expect(probe.cmd("NOOP"), "250")
                if os.path.exists(out) and re.search(
                        r"^%d\s+write" % pid, open(out).read(), re.M):
                    break
                assert time.time() < deadline, "strace did not attach"
                time.sleep(0.1)
        body = big_body(2 << 20, "traced")
        with SMTPConn(server) as c:
            expect_stored(c.deliver(["alice@localhost"], body, ehlo=True))
    finally:
        st.send_signal(signal.SIGINT)  # detaches; the server runs on
        st.wait(timeout=30)
    trace = open(out).read().splitlines()
    tmp = [l for l in trace if "O_TMPFILE" in l]
    assert tmp, "no spill file was opened"
    fds = set()
    for l in tmp:
        assert not l.startswith("%d " % pid), "loop thread opened: " + l
        m = re.search(r"= (\d+)$", l)
        if m:
            fds.add(m.group(1))
    pw = [l for l in trace if re.match(r"^\d+\s+pwrite64\(", l)]
    assert pw, "no spill write seen"
    for l in trace:
        if not l.startswith("%d " % pid):
            continue
        assert "pwrite64(" not in l, "loop thread wrote a file: " + l
        m = re.match(r"^\d+\s+(?:write|writev)\((\d+),", l)
        assert not (m and m.group(1) in fds), "loop thread wrote: " + l
    assert [stored_body(m) for m in pop3_messages(server)] == [body]


def abort(sock):
    """Closes with a RST, as a client that vanishes does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                    struct.pack("ii", 1, 0))
    sock.close()


def test_disconnect_while_spilling(server):
    """Clients that vanish in the middle of big bodies (chunks still being
    written on the thread pool) cost nothing: no crash, nothing stored,
    others served. Under ASan this checks that a session's teardown frees
    nothing a write job still uses."""
    blob = big_body(6 << 20, "vanishing")
    for size in (300 << 10, 600 << 10, 1 << 20, 3 << 20, 6 << 20):
        for bdat in (False, True):
            c = SMTPConn(server)
            c.begin(["alice@localhost", "bob@localhost"])
            if bdat:
                c.send(b"BDAT %d LAST\r\n" % (len(blob) + 10))
            else:
                expect(c.cmd("DATA"), "354")
            c.send(stuffed(blob[:size]) if not bdat else blob[:size])
            abort(c.sock)
    body = make_body("after-vanishing")
    with SMTPConn(server) as c:
        expect_stored(c.deliver(["alice@localhost"], body, ehlo=True))
    assert [stored_body(m) for m in pop3_messages(server)] == [body]
    assert count(server, "bob@localhost") == 0


def test_stop_while_spilling(server):
    """SIGTERM while big bodies are being received and written: a clean
    exit (0, no sanitizer report), and nothing half-stored."""
    blob = stuffed(big_body(8 << 20, "stopped"))
    conns = []
    for _ in range(3):
        c = SMTPConn(server)
        c.begin(["alice@localhost"])
        expect(c.cmd("DATA"), "354")
        conns.append(c)

    def push(c):
        try:
            c.send(blob)
        except OSError:
            pass  # the server closed: expected

    threads = [threading.Thread(target=push, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    time.sleep(0.3)
    stop_clean(server)
    for t in threads:
        t.join(TIMEOUT * 3)
        assert not t.is_alive()
    for c in conns:
        c.close()
    restart(server)
    assert count(server) == 0


@pytest.fixture
def small_fs(tmp_path):
    """A 4 MiB tmpfs for data_dir (root only), unmounted at the end: the
    disk that fills up under a spill file."""
    mnt = tmp_path / "smallfs"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount(8) here (Debian package mount)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700",
                        "pillarbox-test", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % r.stderr.strip())
    yield str(mnt)
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_on_spill_is_452(small_fs, make_server):
    """The spill file hits a full disk (ENOSPC): temporary, about storage,
    so 452 4.3.1 (not 451); nothing is stored, and the space comes back
    for the next message once the file is gone."""
    s = make_server(extra={"server": {"data_dir": small_fs + "/data"}})
    small = make_body("fits")
    with SMTPConn(s) as c:
        c.begin(["alice@localhost"])
        r = c.data(big_body(6 << 20, "too-big-for-disk"))
        expect(r, "452 4.3.1", "452 4.3.1 Insufficient system storage")
        expect(c.cmd("NOOP"), "250", OK)
        c.begin(["alice@localhost"], ehlo=False)
        blob = big_body(6 << 20, "bdat-too-big-for-disk")
        c.send(b"BDAT %d LAST\r\n" % len(blob) + blob)
        expect(c.reply(), "452 4.3.1", "452 4.3.1 Insufficient system storage")
        # Local failures are not the client's errors: no 421 after many.
        # The spill file is closed on the thread pool just after the 452,
        # so its space comes back a moment later: a retry gets in.
        deadline = time.time() + TIMEOUT
        while True:
            r = c.deliver(["alice@localhost"], small)
            if not r.startswith("452 4.3.1") or time.time() > deadline:
                break
            time.sleep(0.05)
        expect_stored(r)
    assert [stored_body(m) for m in pop3_messages(s)] == [small]
    assert "event=spill-error" in s.log_text()


# ============================================== 6. sizes past 4 GiB

def test_size_limit_within_what_the_store_takes(make_server):
    """LMDB stores a value of under 4 GiB: a larger max_message_size would
    accept messages whose commit fails on every retry. SIZE advertises the
    part of it the store can take, and MAIL SIZE= over it gets 552."""
    cap = 0xffffffff - 2048
    s = make_server(extra={"smtp": {"max_message_size": "8G"}})
    with SMTPConn(s) as c:
        r = c.ehlo()
        assert "250-SIZE %d" % cap in r.lines, r
        expect(c.cmd("MAIL FROM:<%s> SIZE=%d" % (SENDER, cap + 1)),
               "552 5.3.4", "552 5.3.4 Message size exceeds fixed limit")
        expect(c.cmd("MAIL FROM:<%s> SIZE=%d" % (SENDER, cap)), "250 2.1.0")
