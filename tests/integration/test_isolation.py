"""One client must never hold up the others: a POP3 reader that stops
reading, a client that pipelines thousands of retrievals, many IPv4 clients
behind a dual-stack listener, a client that trickles bytes forever, and
more connections than the server is meant to take.

Every test runs the real binary on loopback ports chosen at run time, checks
that the clients around the misbehaving one get full service (exact replies,
within the client's ordinary timeout of 10 s), and that nothing was lost.
Timeouts here are liveness bounds, never speed requirements."""
import re
import socket
import threading
import time

import pytest

from helpers import SMTPConn, expect
from isolation_util import (
    TIMEOUT, Delivery, SmallWindowPop3, big_message, can_bind,
    dual_stack_ok, listen_port, map_resizes, pop3_login_reply,
    rcpt_reply, read_exact, read_multi_fast, reader_slots, retr_fast,
    stuff, trickle)
from pop3util import _server_dirs  # noqa: F401 (autouse fixture)
from pop3util import (
    AUTH_FAILED, BOB, GREETING, LOGGED_IN, LOGGING_OUT, TOO_MANY_CONN,
    TOO_MANY_FAILS, USER, Pop3, assert_alive, assert_stored, body, connect,
    deliver, expected_top, login, login_retry)

STORED = "250 2.0.0 Ok: stored as "


# --- A: a POP3 client that stops reading ----------------------------------------

def test_stalled_pop3_reader_does_not_stall_commits(make_server):
    """A POP3 client that asks for a 10 MiB message and stops reading keeps
    that message's bytes in flight for as long as it likes (its idle
    timeout is 600 s). Meanwhile other clients deliver 10 MiB messages,
    enough to make the LMDB map grow (event=map_resize): every DATA gets its
    250 within the client's 10 s timeout, RCPT gets 250 rather than
    `451 4.3.0`, a POP3 login gets `+OK Logged in.` rather than
    `[SYS/TEMP]`. Afterwards the stalled client reads its whole message,
    byte for byte, and every delivered message is in its mailbox."""
    server = make_server(extra={"server": {"max_store_size": "64M"}})
    pop3_addr = server.addr("pop3")
    first = big_message("alice")
    deliver(server, USER, first)

    stalled = SmallWindowPop3(pop3_addr, rcvbuf=4096)
    try:
        assert stalled.greeting == GREETING
        stalled.login(USER)
        stalled.send("RETR 1\r\n")
        time.sleep(0.5)        # the server sends until the socket is full
        resizes = map_resizes(server)

        sent = []
        for i in range(3):     # 10 -> 40 MiB stored: the map must grow
            msg = big_message("bob%d" % i)
            d = Delivery(server, BOB, msg)
            d.start()
            assert d.sent.wait(3 * TIMEOUT)
            time.sleep(0.5)    # the commit is under way (maybe a resize)
            rcpt = rcpt_reply(server, USER)
            login_r = pop3_login_reply(pop3_addr, BOB)
            reply = d.result()
            expect(reply, "250 2.0.0")
            assert reply.last.startswith(STORED), reply
            expect(rcpt, "250 2.1.5")
            assert login_r == LOGGED_IN, login_r
            sent.append(msg)
        assert map_resizes(server) > resizes, \
            "no event=map_resize while the reader was stalled: the test " \
            "did not exercise map growth"

        # The stalled client was never cut off: it reads everything now.
        r = stalled.line()
        data = read_multi_fast(stalled)
        assert r == b"+OK %d octets" % len(data), (r, len(data))
        assert data.startswith(b"Return-Path: <sender@example.org>\r\n")
        assert data.endswith(first)
        stalled.quit()
    finally:
        stalled.close()

    c = login_retry(server, BOB)
    assert c.stat()[0] == len(sent)
    for i, msg in enumerate(sent, 1):
        assert retr_fast(c, i).endswith(msg), i
    c.quit()
    c = login(server, USER)
    assert c.stat()[0] == 1
    assert retr_fast(c, 1).endswith(first)
    c.quit()


# --- B: pipelined retrievals and LMDB reader slots ------------------------------

PIPELINERS = ("alice@localhost", "bob@localhost", "carol@localhost",
              "dave@localhost")
BYSTANDER = "erin@localhost"
PAIR = b"TOP 1 0\r\nRETR 1\r\n"
MAX_PAIRS = 20000   # ~6 MB of replies each: more than the kernel buffers


class Pipeliner:
    """A logged-in POP3 session with a 4 KiB receive buffer that sends up to
    MAX_PAIRS pairs `TOP 1 0` + `RETR 1` without reading a byte, and stops
    sending once the server has stopped taking them for 2 s."""

    def __init__(self, server, user):
        c = login(server, user)                   # the expected bytes
        self.data = c.retr(1)
        top = c.top(1, 0)
        assert top == expected_top(self.data, 0)
        c.quit()
        self.pair = (b"+OK\r\n" + stuff(top) + b".\r\n" +
                     b"+OK %d octets\r\n" % len(self.data) +
                     stuff(self.data) + b".\r\n")
        self.user = user
        self.conn = SmallWindowPop3(server.addr("pop3"), rcvbuf=4096)
        assert self.conn.greeting == GREETING
        self.conn.login(user)
        self.script = PAIR * MAX_PAIRS
        self.sent = 0
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.thread.start()

    def _send(self):
        sock = self.conn.sock
        sock.settimeout(2.0)
        view = memoryview(self.script)
        try:
            while self.sent < len(self.script):
                self.sent += sock.send(view[self.sent:self.sent + 65536])
        except socket.timeout:
            pass                  # the server stopped reading: stop here

    def commands_sent(self):
        self.thread.join(60)
        assert not self.thread.is_alive()
        return self.script[:self.sent].count(b"\n")

    def read_all(self):
        """Reads every reply and checks it byte for byte: each one a +OK
        with exactly the right message bytes. A command cut in the middle
        by the 2 s limit is completed once the replies before it are read.
        Returns the number of replies read."""
        n = self.commands_sent()
        top_len = self.pair.index(b"\r\n.\r\n") + 5
        self._check(n, self.pair * (n // 2) + self.pair[:top_len] * (n % 2))
        if self.sent % len(PAIR) not in (0, len(PAIR) - len(b"RETR 1\r\n")):
            self.conn.sock.settimeout(TIMEOUT)
            self.conn.send(self.script[self.sent:self.script.index(
                b"\n", self.sent) + 1])
            n += 1                    # command n-1: TOP if even, else RETR
            self._check(n, self.pair[:top_len] if n % 2 else
                        self.pair[top_len:])
        self.conn.sock.settimeout(TIMEOUT)
        assert self.conn.cmd("QUIT") == LOGGING_OUT
        self.conn.close()
        return n

    def _check(self, n, want):
        got = read_exact(self.conn, len(want))
        if got != want:
            i = next((k for k in range(len(got)) if got[k] != want[k]),
                     len(got))
            start = got.rfind(b"\r\n", 0, i) + 2 if i else 0
            raise AssertionError(
                "%s: the replies to %d pipelined commands differ from the "
                "expected ones after %d of %d octets; there: %r" % (
                    self.user, n, i, len(want), got[start:start + 120]))


def test_pipelined_retrievals_do_not_exhaust_reader_slots(make_server):
    """Four POP3 sessions (one per account; each with a 4 KiB receive
    buffer) pipeline tens of thousands of `TOP 1 0` and `RETR 1` of one
    small message without reading. They may hold their own replies back,
    but not the store: LMDB has about a thousand reader slots, and a slot
    per reply waiting in a session's output would run it out. Meanwhile a
    third party's RCPT gets `250 2.1.5 Ok`, a full delivery gets 250, a
    POP3 login works, and the server process holds at most a couple of
    reader slots per session (mdb_stat -rr). When the sessions read, every
    reply is there, a +OK with exactly the right bytes."""
    server = make_server(users=PIPELINERS + (BYSTANDER,))
    # One copy for all four (no `for` clause), from <>: short replies, so
    # many of them fit in the output a session may have waiting.
    with SMTPConn(server) as c:
        c.ehlo("h")
        r = c.deliver(PIPELINERS, b"Subject: s\r\n\r\nx\r\n", sender="")
        assert r.last.startswith(STORED), r
    pipes = [Pipeliner(server, u) for u in PIPELINERS]
    try:
        counts = [p.commands_sent() for p in pipes]
        assert min(counts) >= 2, counts

        time.sleep(1)          # the server works through what it read
        held = reader_slots(server)
        expect(rcpt_reply(server, USER), "250 2.1.5", "250 2.1.5 Ok")
        note = body("bystander")
        d = Delivery(server, BYSTANDER, note)
        d.start()
        reply = d.result()
        assert reply.last.startswith(STORED), reply
        login_r = pop3_login_reply(server.addr("pop3"), BYSTANDER)
        assert login_r == LOGGED_IN, login_r
        if held is not None:
            assert held <= 2 * len(pipes), \
                "the server holds %d LMDB reader slots for %d sessions " \
                "(%s commands pipelined)" % (held, len(pipes), counts)

        replies = [p.read_all() for p in pipes]
        assert all(r >= c for r, c in zip(replies, counts)), replies
    finally:
        for p in pipes:
            p.conn.close()
    c = login(server, BYSTANDER)
    assert_stored(c.retr(1), note, [BYSTANDER])
    c.quit()
    for u in PIPELINERS:                      # nothing was deleted
        c = login(server, u)
        assert c.stat()[0] == 1
        c.quit()


# --- C: IPv4 clients behind a dual-stack listener -------------------------------

V4_MAPPED_POP3 = {"pop3": {"listen": "[::ffff:127.0.0.1]:0",
                           "login_delay": "0"}}


def _need_dual_stack():
    if not dual_stack_ok():
        pytest.skip("no dual-stack IPv6 socket on this machine")
    for ip in ("127.0.0.2", "127.0.0.3"):
        if not can_bind(ip):
            pytest.skip("cannot bind %s" % ip)


def _v4(server, source):
    """A POP3 connection over IPv4 from `source` to the v4-mapped listener
    (it arrives there as ::ffff:<source>); the greeting is not read."""
    return Pop3(("127.0.0.1", listen_port(server, "pop3")), source=source,
                greet=False)


def test_dual_stack_failed_login_throttle_is_per_ipv4_address(make_server):
    """On an IPv6 listener that takes IPv4 clients (bound to the v4-mapped
    loopback), each IPv4 client is its own address: ten wrong passwords
    from 127.0.0.2 throttle 127.0.0.2 (`-ERR [SYS/TEMP] Too many failed
    logins, try later.`) and nobody else: 127.0.0.1 logs in with the right
    password. The log names the client `ip=127.0.0.2`."""
    _need_dual_stack()
    server = make_server(extra=V4_MAPPED_POP3)
    assert server.ports["pop3"].startswith("[::ffff:127.0.0.1]:"), \
        server.ports
    for i in range(10):
        c = _v4(server, "127.0.0.2")
        assert c.line() == GREETING
        assert c.cmd("USER " + USER).startswith(b"+OK")
        assert c.cmd("PASS wrong%d" % i) == AUTH_FAILED, i
        assert c.cmd("QUIT") == LOGGING_OUT
        c.close()
    c = _v4(server, "127.0.0.2")
    assert c.line() == GREETING
    r = c.cmd("USER " + USER)
    if r != TOO_MANY_FAILS:
        r = c.cmd("PASS secret")
    assert r == TOO_MANY_FAILS, r
    c.close()

    for source in ("127.0.0.1", "127.0.0.3"):  # other IPv4 clients
        c = _v4(server, source)
        assert c.line() == GREETING
        assert c.cmd("USER " + USER).startswith(b"+OK")
        r = c.cmd("PASS secret")
        assert r == LOGGED_IN, (source, r)
        c.quit()

    log = server.log_text()
    assert re.search(r"\bip=127\.0\.0\.2\s", log), log[-2000:]
    assert "::ffff:" not in log.replace("addr=[::ffff:127.0.0.1]", ""), \
        [ln for ln in log.splitlines() if "::ffff:" in ln][:3]


def test_dual_stack_connection_limit_is_per_ipv4_address(make_server):
    """max_connections_per_ip on the dual-stack listener counts each IPv4
    client apart: two connections from 127.0.0.2 are served, a third gets
    `-ERR [SYS/TEMP] Too many connections from your address.` and EOF, one
    from 127.0.0.3 is served, and the two from 127.0.0.2 keep working."""
    _need_dual_stack()
    extra = {"pop3": dict(V4_MAPPED_POP3["pop3"],
                          max_connections_per_ip="2")}
    server = make_server(extra=extra)
    deliver(server, USER, body("limit"))
    a = _v4(server, "127.0.0.2")
    b = _v4(server, "127.0.0.2")
    assert a.line() == GREETING and b.line() == GREETING
    c = _v4(server, "127.0.0.2")
    assert c.line() == TOO_MANY_CONN
    c.expect_eof()
    c.close()
    d = _v4(server, "127.0.0.3")
    assert d.line() == GREETING, "127.0.0.3 counted with 127.0.0.2"
    d.login(BOB)
    d.quit()
    a.login(USER)
    assert a.stat()[0] == 1
    a.quit()
    assert b.capa()
    b.quit()
    log = server.log_text()
    assert "event=refused ip=127.0.0.2 reason=per-ip-limit" in log, \
        log[-2000:]


# --- D: total session lifetime ----------------------------------------------------

SESSION_TIME = {"smtp": {"timeout": "1", "max_session_time": "3"},
                "pop3": {"timeout": "1", "max_session_time": "3"}}


def test_smtp_session_time_limit(make_server):
    """A client that sends one byte every 0.3 s never idles for the 1 s
    idle timeout, so only max_session_time (3 s) ends it: it gets
    `421 4.4.2 mx.test Error: session time limit exceeded` and the
    connection closes (well within 15 s). Other clients are served."""
    server = make_server(extra=SESSION_TIME)
    t0 = time.monotonic()
    c = SMTPConn(server)
    c.ehlo()
    got, closed, _ = trickle(c.sock, b"NOOP\r\n", limit=15)
    elapsed = time.monotonic() - t0
    lines = (c.buf + got).decode("latin-1").split("\r\n")
    assert lines[-1] == "", lines         # whole lines only
    assert lines[-2] == "421 4.4.2 mx.test Error: session time limit " \
        "exceeded", lines[-3:]
    assert all(ln.startswith("250 ") for ln in lines[:-2]), lines
    assert closed, "connection still open after the 421"
    assert elapsed >= 2.5, "cut after %.1f s, before max_session_time" \
        % elapsed
    c.close()
    deliver(server, USER, body("after-trickle"))
    assert_alive(server, USER)


def test_pop3_session_time_limit(make_server):
    """The same in POP3: a logged-in client sending one byte every 0.3 s
    gets `-ERR Session time limit exceeded.` and EOF once max_session_time
    (3 s) has passed, although it was never idle for the 1 s timeout. It
    had marked its message deleted: being cut is not QUIT, so the message
    stays. Other clients are served."""
    server = make_server(extra=SESSION_TIME)
    msg = body("kept")
    deliver(server, USER, msg)
    t0 = time.monotonic()
    c = connect(server)
    c.login(USER)
    assert c.cmd("DELE 1").startswith(b"+OK")
    got, closed, _ = trickle(c.sock, b"NOOP\r\n", limit=15)
    elapsed = time.monotonic() - t0
    lines = (c.buf + got).split(b"\r\n")
    assert lines[-1] == b"", lines
    assert lines[-2] == b"-ERR Session time limit exceeded.", lines[-3:]
    assert all(ln == b"+OK" for ln in lines[:-2]), lines
    assert closed, "connection still open after the -ERR"
    assert elapsed >= 2.5, "cut after %.1f s, before max_session_time" \
        % elapsed
    c.close()
    c = login_retry(server, USER)
    assert c.stat()[0] == 1, "a session cut off by its time limit deleted"
    assert_stored(c.retr(1), msg, [USER])
    c.quit()
    assert_alive(server, BOB)


# --- E: a global connection cap ----------------------------------------------------

CAP_REFUSED_SMTP = "421 4.3.2 mx.test Error: too many connections, try " \
    "again later"
CAP_REFUSED_POP3 = b"-ERR [SYS/TEMP] Too many connections, try again later."


def test_max_connections_counts_every_listener(make_server):
    """[server] max_connections = 3 caps connections over SMTP and POP3
    together (the per-IP limits are far above): two SMTP and one POP3
    connection are served; a fourth gets `421 4.3.2 ... too many
    connections, try again later` on SMTP or `-ERR [SYS/TEMP] Too many
    connections, try again later.` on POP3, then EOF. The three keep full
    service, and once one has gone a new client is served."""
    server = make_server(extra={
        "server": {"max_connections": "3"},
        "smtp": {"max_connections_per_ip": "100"},
        "pop3": {"max_connections_per_ip": "100"}})
    a = SMTPConn(server)                     # greeting checked
    b = connect(server)
    c = SMTPConn(server)

    d = SMTPConn(server, greet=False)
    expect(d.reply(), "421 4.3.2", CAP_REFUSED_SMTP)
    assert d.eof(), "refused SMTP connection left open"
    d.close()
    e = Pop3(server.addr("pop3"), greet=False)
    assert e.line() == CAP_REFUSED_POP3
    e.expect_eof()
    e.close()

    msg = body("capped")
    a.ehlo()
    r = a.deliver([USER], msg)
    assert r.last.startswith(STORED), r
    b.login(USER)
    assert_stored(b.retr(1), msg, [USER])
    b.quit()
    expect(c.cmd("QUIT"), "221")
    assert c.eof()
    c.close()

    end = time.time() + 5                    # a freed slot is served
    while True:
        f = Pop3(server.addr("pop3"), greet=False)
        first = f.line()
        if first == GREETING:
            break
        assert first == CAP_REFUSED_POP3, first
        f.close()
        assert time.time() < end, "no slot freed after two closed"
        time.sleep(0.05)
    f.login(BOB)
    f.quit()
    expect(a.cmd("NOOP"), "250")             # the first is still served
    expect(a.cmd("QUIT"), "221")
    a.close()
