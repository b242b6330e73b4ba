"""POP3 integration tests against the real pillarbox binary (RFC 1939, 2449,
5034, 3206; exact texts from tests/PROTOCOL.md).

Messages are delivered with smtplib through the SMTP listener and read back
over raw sockets (pop3util.Pop3) so every byte on the wire is checked."""
import poplib
import threading
import time

import pytest

from pop3util import _server_dirs  # noqa: F401 (autouse fixture)
from pop3util import (
    AUTH_CANCELLED, AUTH_FAILED, BAD_BASE64, BAD_STATE, BOB, CRLF,
    GREETING, IN_USE, INACTIVITY, INVALID_NUM, IS_DELETED, LOGGED_IN,
    LOGGING_OUT, MARKED, MISSING_ARG, NO_SUCH, PASSWORD, TOO_LONG,
    TOO_MANY_CONN, TOO_MANY_ERRORS, TOO_MANY_FAILS, UNKNOWN, USER, Pop3,
    assert_alive, assert_stored, body, capabilities, connect, deliver,
    deliver_many, expected_top, is_ok, login, login_retry, plain, restart,
    unstuff, TRICKY)


def three(server):
    """Delivers three messages to alice; returns them (as sent)."""
    msgs = [body("m1"),
            body("m2", b".dot first\r\n..second\r\nthird\r\n" + TRICKY),
            body("m3", b"\xe4\xf6\xfc latin-1 line\r\n")]
    deliver_many(server, USER, msgs)
    return msgs


# --- greeting, CAPA, login ---------------------------------------------------

def test_greeting_capa_and_quit_in_authorization(server):
    c = connect(server)
    caps = c.capa()
    assert sorted(caps) == capabilities(0), caps
    assert len(caps) == len(set(caps)), "duplicate capability: %r" % caps
    assert c.cmd("QUIT") == LOGGING_OUT
    c.expect_eof()


def test_capa_after_login(server):
    c = login(server)
    caps = c.capa()
    # RFC 2449 lets a server drop USER/SASL after login; the rest stays.
    for cap in (b"TOP", b"UIDL", b"RESP-CODES", b"PIPELINING",
                b"IMPLEMENTATION pillarbox"):
        assert cap in caps, (cap, caps)
    assert c.stat() == (0, 0)
    c.quit()


def test_user_pass_login(server):
    c = connect(server)
    assert is_ok(c.cmd("USER " + USER))
    assert c.cmd("PASS " + PASSWORD) == LOGGED_IN
    assert c.stat() == (0, 0)
    r, lst = c.list()
    assert lst == []
    assert c.uidl() == []
    c.quit()
    # bad password and unknown user: same text
    for user, pw in ((USER, "wrong"), ("nobody@localhost", PASSWORD),
                     ("alice@elsewhere.invalid", PASSWORD),
                     (USER.upper(), "SECRET")):
        c = connect(server)
        assert is_ok(c.cmd("USER " + user))
        assert c.cmd("PASS " + pw) == AUTH_FAILED, (user, pw)
        c.close()
    c = connect(server)                          # empty password never works
    assert is_ok(c.cmd("USER " + USER))
    assert c.cmd("PASS ") in (AUTH_FAILED, MISSING_ARG)
    c.close()
    assert_alive(server)


def test_auth_plain_initial_response(server):
    deliver(server, USER, body("a1"))
    c = connect(server)
    r = c.cmd("AUTH PLAIN " + plain())
    assert is_ok(r), r
    assert c.stat()[0] == 1
    c.quit()


def test_auth_plain_continuation(server):
    c = connect(server)
    assert c.cmd("AUTH PLAIN") == b"+ "
    r = c.cmd(plain())
    assert is_ok(r), r
    assert c.stat() == (0, 0)
    c.quit()


def test_auth_plain_cancel_and_errors(server):
    c = connect(server)
    assert c.cmd("AUTH PLAIN") == b"+ "
    assert c.cmd("*") == AUTH_CANCELLED
    assert c.cmd("STAT") == BAD_STATE            # still AUTHORIZATION
    assert c.cmd("AUTH PLAIN !!!not-base64***") == BAD_BASE64
    assert c.cmd("STAT") == BAD_STATE
    assert c.cmd("AUTH PLAIN") == b"+ "
    assert c.cmd("@@@@") == BAD_BASE64
    assert c.cmd("STAT") == BAD_STATE
    c.login()                                     # same connection still usable
    assert c.stat() == (0, 0)
    c.quit()
    c = connect(server)
    assert c.cmd("AUTH PLAIN " + plain(password="wrong")) == AUTH_FAILED
    c.close()
    c = connect(server)
    assert c.cmd("AUTH PLAIN " + plain(user="nobody@localhost")) == AUTH_FAILED
    c.close()
    assert_alive(server)


def test_auth_plain_authzid_cannot_switch_mailbox(server):
    """alice's credentials with authzid=bob must never open bob's maildrop."""
    deliver(server, BOB, body("for-bob"))
    c = connect(server)
    r = c.cmd("AUTH PLAIN " + plain(authzid=BOB))
    if is_ok(r):
        assert c.stat() == (0, 0), "logged into bob's mailbox as alice"
        c.quit()
    else:
        assert r.startswith(b"-ERR"), r
        c.close()


def test_poplib_client(server):
    msgs = three(server)
    host, port = server.addr("pop3")
    p = poplib.POP3(host, port, timeout=15)
    try:
        assert p.getwelcome() == GREETING
        caps = p.capa()
        assert "UIDL" in caps and "TOP" in caps and "USER" in caps
        p.user(USER)
        assert p.pass_(PASSWORD) == LOGGED_IN
        n, size = p.stat()
        assert n == 3
        _, listing, _ = p.list()
        sizes = [int(x.split()[1]) for x in listing]
        assert sum(sizes) == size
        _, uids, _ = p.uidl()
        assert len(uids) == 3
        for i, m in enumerate(msgs, 1):
            resp, lines, octets = p.retr(i)
            data = b"".join(ln + CRLF for ln in lines)
            assert octets == len(data) == sizes[i - 1]
            assert resp == b"+OK %d octets" % len(data)
            assert_stored(data, m, [USER])
        _, lines, _ = p.top(2, 0)
        assert lines[-1] == b""
        assert p.dele(1) == MARKED
        assert p.stat()[0] == 2
        assert p.rset().startswith(b"+OK")
        assert p.noop().startswith(b"+OK")
        assert p.stat() == (n, size)
        assert p.quit() == LOGGING_OUT
    finally:
        p.close()


# --- retrieval -----------------------------------------------------------------

def test_stat_list_uidl_retr_top_noop(server):
    msgs = three(server)
    c = login(server)
    datas = [c.retr(i) for i in (1, 2, 3)]
    for d, m in zip(datas, msgs):
        assert_stored(d, m, [USER])
    assert c.stat() == (3, sum(map(len, datas)))
    head, lst = c.list()
    assert head == b"+OK 3 messages", head
    assert lst == [(i, len(d)) for i, d in enumerate(datas, 1)]
    for i, d in enumerate(datas, 1):
        assert c.cmd("LIST %d" % i) == b"+OK %d %d" % (i, len(d))
    uids = c.uidl()
    assert [n for n, _ in uids] == [1, 2, 3]
    assert len({u for _, u in uids}) == 3, uids
    for n, u in uids:
        assert c.cmd("UIDL %d" % n) == b"+OK %d %s" % (n, u)
    for i, d in enumerate(datas, 1):
        assert c.top(i, 0) == expected_top(d, 0)
        assert c.top(i, 2) == expected_top(d, 2)
        assert c.top(i, 100000) == d
    # TOP of message 2 includes body lines starting with '.' (stuffed on
    # the wire, checked by unstuff()).
    assert expected_top(datas[1], 2).endswith(b"\r\n\r\nHello m2.\r\n"
                                              b".dot first\r\n")
    assert c.top(2, 3) == expected_top(datas[1], 3)
    assert c.top(2, 3).endswith(b".dot first\r\n..second\r\n")
    assert is_ok(c.cmd("NOOP"))
    assert c.stat() == (3, sum(map(len, datas)))
    c.quit()
    c = login(server)                       # stored durably, same bytes again
    assert [c.retr(i) for i in (1, 2, 3)] == datas
    assert c.uidl() == uids
    c.quit()


def test_dot_lines_and_8bit_roundtrip(server):
    msg = body("dots", TRICKY)
    # the body also starts with a '.' line right after the header block
    msg2 = body("dots2").replace(b"\r\n\r\nHello", b"\r\n\r\n.\r\nHello")
    deliver(server, USER, msg)
    deliver(server, USER, msg2)
    c = login(server)
    r = c.cmd("RETR 1")
    raw = c.multi()
    data = unstuff(raw)            # asserts every '.'-line is stuffed
    assert r == b"+OK %d octets" % len(data)
    assert_stored(data, msg, [USER])
    assert b".." in raw and b"..." in raw and b"...." in raw
    assert raw[-1] == b"..", raw[-3:]
    assert_stored(c.retr(2), msg2, [USER])
    _, lst = c.list()
    assert lst[0][1] == len(data)
    c.quit()


def test_commands_case_insensitive(server):
    msgs = three(server)
    c = connect(server)
    assert is_ok(c.cmd("user " + USER))
    assert c.cmd("pass " + PASSWORD) == LOGGED_IN
    r = c.cmd("stat")
    assert r == b"+OK 3 %d" % c.stat()[1]
    r = c.cmd("Retr 1")
    assert_stored(unstuff(c.multi()), msgs[0], [USER])
    assert r.startswith(b"+OK ")
    assert c.cmd("qUiT") == LOGGING_OUT
    c.expect_eof()


def test_big_message_1mib(server):
    lines, total, i = [], 0, 0
    while total < 1 << 20:
        ln = (b"." if i % 7 == 0 else b"") + b"%07d " % i + \
            bytes(range(0x41, 0x5b)) * 2 + b"\xc3\xa9" * 10
        lines.append(ln + CRLF)
        total += len(ln) + 2
        i += 1
    msg = body("big", b"".join(lines))
    assert len(msg) > 1 << 20
    deliver(server, USER, msg)
    c = login(server)
    data = c.retr(1)
    assert_stored(data, msg, [USER])
    assert c.stat() == (1, len(data))
    assert c.cmd("LIST 1") == b"+OK 1 %d" % len(data)
    c.quit()


# --- snapshot, UIDs ------------------------------------------------------------

def test_snapshot_stable_during_session(server):
    deliver_many(server, USER, [body("s1"), body("s2")])
    c = login(server)
    snap = c.snapshot()
    assert snap[0][0] == 2
    # SMTP accepts for a mailbox whose POP3 session is open...
    late = body("late")
    deliver(server, USER, late)
    # ...but this session's numbering does not change
    assert c.snapshot() == snap
    assert c.cmd("RETR 3") == NO_SUCH
    assert c.cmd("LIST 3") == NO_SUCH
    assert c.cmd("UIDL 3") == NO_SUCH
    assert c.cmd("DELE 3") == NO_SUCH
    c.quit()
    c = login(server)                      # the next session sees it
    st = c.stat()
    assert st[0] == 3
    uids = c.uidl()
    assert uids[:2] == snap[2]
    assert int(uids[2][1]) > max(int(u) for _, u in snap[2])
    assert_stored(c.retr(3), late, [USER])
    c.quit()


def test_uids_stable_and_never_reused(server):
    deliver_many(server, USER, [body("u1"), body("u2"), body("u3")])
    c = login(server)
    u = c.uidl()
    seen = {int(x) for _, x in u}
    assert c.cmd("DELE 1") == MARKED
    assert c.cmd("DELE 3") == MARKED       # the highest uid goes too
    c.quit()
    deliver(server, USER, body("u4"))
    c = login(server)
    u2 = c.uidl()
    assert u2[0] == (1, u[1][1]), (u, u2)    # survivor keeps its uid
    assert int(u2[1][1]) > max(seen), (u, u2)
    seen |= {int(u2[1][1])}
    assert c.cmd("DELE 2") == MARKED
    c.quit()
    restart(server)                          # uids survive a restart
    c = login(server)
    assert c.uidl() == [(1, u[1][1])]
    c.quit()
    deliver(server, USER, body("u5"))
    c = login(server)
    u3 = c.uidl()
    assert u3[0] == (1, u[1][1])
    assert int(u3[1][1]) > max(seen), (seen, u3)
    c.quit()


# --- deletion ------------------------------------------------------------------

def test_dele_then_rset_restores(server):
    three(server)
    c = login(server)
    snap = c.snapshot()
    datas = [c.retr(i) for i in (1, 2, 3)]
    assert c.cmd("DELE 2") == MARKED
    assert c.stat() == (2, len(datas[0]) + len(datas[2]))
    _, lst = c.list()
    assert lst == [(1, len(datas[0])), (3, len(datas[2]))]
    assert [n for n, _ in c.uidl()] == [1, 3]
    assert c.cmd("LIST 3") == b"+OK 3 %d" % len(datas[2])   # numbers stable
    assert is_ok(c.cmd("RSET"))
    assert c.snapshot() == snap
    assert c.retr(2) == datas[1]
    c.quit()
    c = login(server)
    assert c.snapshot() == snap
    c.quit()


def test_dele_then_quit_commits(server):
    three(server)
    c = login(server)
    datas = [c.retr(i) for i in (1, 2, 3)]
    uids = c.uidl()
    assert c.cmd("DELE 1") == MARKED
    assert c.cmd("DELE 3") == MARKED
    c.quit()
    c = login(server)
    assert c.stat() == (1, len(datas[1]))
    assert c.retr(1) == datas[1]
    assert c.uidl() == [(1, uids[1][1])]
    assert c.cmd("RETR 2") == NO_SUCH
    c.quit()


def test_shared_message_deleted_by_one_stays_for_other(server):
    msg = body("shared", TRICKY)
    deliver(server, [USER, BOB], msg)
    a = login(server, USER)
    b = login(server, BOB)                   # different maildrops: no lock
    da = a.retr(1)
    assert_stored(da, msg, [USER, BOB])
    assert b.retr(1) == da
    assert a.cmd("DELE 1") == MARKED
    a.quit()
    b.quit()
    a = login(server, USER)
    assert a.stat() == (0, 0)
    a.quit()
    b = login(server, BOB)
    assert b.stat() == (1, len(da))
    assert b.retr(1) == da
    assert b.cmd("DELE 1") == MARKED
    b.quit()
    b = login(server, BOB)
    assert b.stat() == (0, 0)
    b.quit()


@pytest.mark.parametrize("how", ["close", "reset", "partial-quit"])
def test_drop_without_quit_deletes_nothing(server, how):
    three(server)
    c = login(server)
    snap = c.snapshot()
    datas = [c.retr(i) for i in (1, 2, 3)]
    assert c.cmd("DELE 1") == MARKED
    assert c.cmd("DELE 2") == MARKED
    if how == "close":
        c.close()
    elif how == "reset":
        c.abort()
    else:
        c.send("QUI")
        c.close()
    c = login_retry(server)
    assert c.snapshot() == snap
    assert [c.retr(i) for i in (1, 2, 3)] == datas
    c.quit()


# --- locking -------------------------------------------------------------------

def test_in_use_until_quit(server):
    deliver(server, USER, body("lock"))
    a = login(server)
    b = connect(server)
    assert is_ok(b.cmd("USER " + USER))
    assert b.cmd("PASS " + PASSWORD) == IN_USE
    b.close()
    b = connect(server)
    assert b.cmd("AUTH PLAIN " + plain()) == IN_USE
    assert b.cmd("STAT") == BAD_STATE            # not logged in
    b.close()
    assert_alive(server, BOB)                    # other maildrops unaffected
    assert a.stat()[0] == 1                      # holder unaffected
    a.quit()
    # QUIT answered and connection closed: the lock is gone
    c = login(server)
    assert c.stat()[0] == 1
    c.quit()


def test_in_use_released_after_drop(server):
    a = login(server)
    b = connect(server)
    assert is_ok(b.cmd("USER " + USER))
    assert b.cmd("PASS " + PASSWORD) == IN_USE
    b.close()
    a.close()                                    # no QUIT
    c = login_retry(server)
    c.quit()


def test_in_use_released_after_timeout(make_server):
    server = make_server(extra={"pop3": {"timeout": "1"}})
    msg = body("t")
    deliver(server, USER, msg)
    a = login(server)
    assert a.cmd("DELE 1") == MARKED
    b = connect(server)
    assert is_ok(b.cmd("USER " + USER))
    assert b.cmd("PASS " + PASSWORD) == IN_USE
    b.close()
    assert a.line() == INACTIVITY                # a idles past timeout
    a.expect_eof()
    c = login_retry(server)
    st = c.stat()
    assert st[0] == 1, "timed-out session's DELE was committed"
    assert_stored(c.retr(1), msg, [USER])
    c.quit()


# --- login delay and throttling --------------------------------------------------

def _timed_fail(server, user, password, out, key, use_auth=False):
    c = connect(server)
    try:
        if use_auth:
            t0 = time.monotonic()
            r = c.cmd("AUTH PLAIN " + plain(user, password))
        else:
            assert is_ok(c.cmd("USER " + user))
            t0 = time.monotonic()
            r = c.cmd("PASS " + password)
        out[key] = (r, time.monotonic() - t0)
    finally:
        c.close()


def test_login_delay_same_for_wrong_password_and_unknown_user(make_server):
    server = make_server(extra={"pop3": {"login_delay": "1"}})
    c = connect(server)
    assert sorted(c.capa()) == capabilities(1)
    c.close()
    out = {}
    cases = {"wrong-password": (USER, "wrong", False),
             "unknown-user": ("nobody@localhost", PASSWORD, False),
             "unknown-domain": ("x@nowhere.invalid", PASSWORD, False),
             "auth-plain-wrong": (USER, "wrong", True)}
    ts = [threading.Thread(target=_timed_fail,
                           args=(server, u, p, out, k, a))
          for k, (u, p, a) in cases.items()]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert set(out) == set(cases), out
    for k, (r, dt) in out.items():
        assert r == AUTH_FAILED, (k, r)
        assert 0.9 <= dt < 10, (k, dt)
    # a correct login is still possible and not refused afterwards
    c = login(server)
    c.quit()


def test_login_delay_does_not_block_others(make_server):
    server = make_server(extra={"pop3": {"login_delay": "1"}})
    deliver(server, USER, body("x"))
    sent = threading.Event()
    res = {}

    def failing():
        c = connect(server)
        try:
            assert is_ok(c.cmd("USER " + BOB))
            c.send("PASS wrong\r\n")
            sent.set()
            res["reply"] = c.line()
            res["t"] = time.monotonic()
        finally:
            c.close()

    t = threading.Thread(target=failing)
    t.start()
    assert sent.wait(10)
    time.sleep(0.2)              # let the server start on the failing PASS
    c = login(server)
    assert c.stat()[0] == 1
    t_ok = time.monotonic()
    t.join(30)
    c.quit()
    assert res.get("reply") == AUTH_FAILED, res
    assert t_ok < res["t"], "successful login+STAT waited for another " \
        "client's failed-login delay"


def test_failed_login_throttle(server):
    for i in range(10):
        c = connect(server)
        assert is_ok(c.cmd("USER " + (USER if i % 2 else "ghost@localhost")))
        assert c.cmd("PASS wrong%d" % i) == AUTH_FAILED, i
        assert c.cmd("QUIT") == LOGGING_OUT
        c.close()
    # 11th attempt, correct password: refused without checking
    c = connect(server)
    r = c.cmd("USER " + USER)
    if r != TOO_MANY_FAILS:
        assert is_ok(r), r
        r = c.cmd("PASS " + PASSWORD)
    assert r == TOO_MANY_FAILS, r
    c.close()
    c = connect(server)
    assert c.cmd("AUTH PLAIN " + plain()) == TOO_MANY_FAILS
    c.close()
    # another source address is not throttled
    try:
        other = Pop3(server.addr("pop3"), source="127.0.0.2")
    except OSError as e:
        pytest.skip("cannot bind 127.0.0.2: %s" % e)
    assert other.greeting == GREETING
    other.login()
    other.quit()


# --- bad input ----------------------------------------------------------------

def test_commands_in_wrong_state(server):
    three(server)
    c = connect(server)
    assert c.cmd("PASS " + PASSWORD) == BAD_STATE     # PASS without USER
    for cmd in ("STAT", "LIST", "LIST 1", "UIDL", "RETR 1", "DELE 1",
                "TOP 1 0", "RSET", "NOOP"):
        assert c.cmd(cmd) == BAD_STATE, cmd
    c.login()                                          # still AUTHORIZATION
    snap = c.snapshot()
    for cmd in ("USER " + BOB, "PASS " + PASSWORD, "AUTH PLAIN " + plain(BOB),
                "USER " + USER):
        assert c.cmd(cmd) == BAD_STATE, cmd
        assert c.snapshot() == snap
    c.quit()
    assert_alive(server)


def test_unknown_command(server):
    three(server)
    c = connect(server)
    assert c.cmd("FOO") == UNKNOWN
    assert c.cmd("XYZZY 1 2") == UNKNOWN
    r = c.cmd("")
    assert r.startswith(b"-ERR"), r
    c.login()
    snap = c.snapshot()
    for cmd in ("FOO", "RETRX 1", "LISTING", "XYZZY 1 2"):
        assert c.cmd(cmd) == UNKNOWN, cmd
        assert c.snapshot() == snap
    c.quit()
    assert_alive(server)


def test_missing_argument(server):
    three(server)
    c = connect(server)
    assert c.cmd("USER") == MISSING_ARG
    assert c.cmd("PASS " + PASSWORD) == BAD_STATE      # USER was not taken
    c.login()
    snap = c.snapshot()
    for cmd in ("RETR", "DELE", "TOP", "TOP 1"):
        assert c.cmd(cmd) == MISSING_ARG, cmd
        assert c.snapshot() == snap
    c.quit()
    assert_alive(server)


def test_invalid_message_number(server):
    three(server)
    c = login(server)
    snap = c.snapshot()
    for cmd in ("RETR abc", "RETR 1x", "RETR 0", "RETR -1", "DELE 0",
                "DELE abc", "LIST 0", "LIST x", "UIDL 0", "UIDL 2y",
                "TOP 0 1", "TOP x 1"):
        assert c.cmd(cmd) == INVALID_NUM, cmd
        assert c.snapshot() == snap
    c.quit()
    assert_alive(server)


def test_message_number_out_of_range(server):
    three(server)
    c = login(server)
    snap = c.snapshot()
    for cmd in ("RETR 4", "LIST 4", "UIDL 4", "DELE 4", "TOP 4 0",
                "RETR 1000000"):
        assert c.cmd(cmd) == NO_SUCH, cmd
        assert c.snapshot() == snap
    # numbers that overflow 32/64 bits must not wrap around to message 1
    for n in (2 ** 32 + 1, 2 ** 64 + 1, 10 ** 30):
        for cmd in ("RETR %d" % n, "DELE %d" % n):
            r = c.cmd(cmd)
            assert r in (NO_SUCH, INVALID_NUM), (cmd, r)
            assert c.snapshot() == snap
    c.quit()
    assert_alive(server)


def test_already_deleted(server):
    three(server)
    c = login(server)
    assert c.cmd("DELE 1") == MARKED
    snap = c.snapshot()
    for cmd in ("RETR 1", "DELE 1", "LIST 1", "UIDL 1", "TOP 1 0"):
        assert c.cmd(cmd) == IS_DELETED, cmd
        assert c.snapshot() == snap
    assert is_ok(c.cmd("RSET"))
    assert c.stat()[0] == 3
    c.quit()
    assert_alive(server)


def test_line_length_limit(server):
    three(server)
    # 255 octets including CRLF: accepted
    line = b"USER " + b"a" * 248
    assert len(line) + 2 == 255
    c = connect(server)
    assert is_ok(c.cmd(line))
    c.close()
    # 256 octets: refused, and the USER is not taken
    line = b"USER " + b"a" * 249
    assert len(line) + 2 == 256
    c = connect(server)
    assert c.cmd(line) == TOO_LONG
    assert c.cmd("PASS " + PASSWORD) == BAD_STATE
    c.login()
    snap = c.snapshot()
    line = b"NOOP " + b"x" * 249
    assert len(line) + 2 == 256
    assert c.cmd(line) == TOO_LONG
    assert c.snapshot() == snap
    # a much longer line, pipelined with the next command: one error, then
    # the next command is answered normally
    c.send(b"RETR " + b"1" * 5000 + b"\r\nSTAT\r\n")
    assert c.line() == TOO_LONG
    assert c.line() == b"+OK %d %d" % snap[0]
    assert c.snapshot() == snap
    c.quit()
    assert_alive(server)


def test_nul_bytes(server):
    three(server)
    c = login(server)
    snap = c.snapshot()
    for raw in (b"STAT\x00\r\n", b"DELE\x001\r\n", b"DELE 1\x00\r\n",
                b"\x00\r\n"):
        c.send(raw)
        r = c.line()
        assert r.startswith(b"-ERR"), (raw, r)
        assert c.snapshot() == snap
    c.quit()
    # a NUL must not truncate the user name into a valid one
    c = connect(server)
    c.send(b"USER " + USER.encode() + b"\x00junk\r\n")
    c.line()
    r = c.cmd("PASS " + PASSWORD)
    assert r.startswith(b"-ERR"), r
    c.close()
    c = connect(server)
    assert c.cmd("USER " + USER).startswith(b"+OK")
    r = c.cmd(b"PASS " + PASSWORD.encode() + b"\x00")
    assert r.startswith(b"-ERR"), r
    c.close()
    assert_alive(server)
    login(server).quit()


def test_garbage_bytes(server):
    three(server)
    c = connect(server)
    assert c.cmd(b"\x80\xff\xfe garbage \x01\x02\x1b[0m") == UNKNOWN
    c.login()
    snap = c.snapshot()
    for raw in (b"\x80\xff\xfe garbage \x01\x02\x1b[0m",
                b"\xff\xf4\xff\xfd\x06",          # telnet IAC IP IAC DO TM
                bytes(range(0x80, 0x100))):
        assert c.cmd(raw) == UNKNOWN, raw
        assert c.snapshot() == snap
    c.quit()
    assert_alive(server)


def test_idle_timeout(make_server):
    server = make_server(extra={"pop3": {"timeout": "1"}})
    t0 = time.monotonic()
    a = connect(server)                         # AUTHORIZATION
    b = login(server)                           # TRANSACTION
    for c in (a, b):
        assert c.line() == INACTIVITY
        c.expect_eof()
    assert time.monotonic() - t0 >= 0.5, "timed out far too early"
    assert_alive(server)


def test_max_connections_per_ip(make_server):
    server = make_server(extra={"pop3": {"max_connections_per_ip": "2"}})
    a = connect(server)
    b = connect(server)
    c = Pop3(server.addr("pop3"), greet=False)
    assert c.line() == TOO_MANY_CONN
    c.expect_eof()
    c.close()
    a.login()                                   # the first two still work
    assert a.stat() == (0, 0)
    assert b.capa()
    try:
        other = Pop3(server.addr("pop3"), source="127.0.0.2")
        assert other.greeting == GREETING       # per address, not global
        other.close()
    except OSError:
        pass
    assert b.cmd("QUIT") == LOGGING_OUT
    b.expect_eof()
    b.close()
    end = time.time() + 5
    while True:                                 # a freed slot is reusable
        d = Pop3(server.addr("pop3"), greet=False)
        first = d.line()
        if first == GREETING:
            break
        assert first == TOO_MANY_CONN, first
        d.close()
        assert time.time() < end, "slot not freed after QUIT"
        time.sleep(0.05)
    d.login(BOB)
    d.quit()
    a.quit()


def test_too_many_errors_closes(server):
    c = connect(server)
    for i in range(19):
        assert c.cmd("BOGUS%d" % i) == UNKNOWN, i
    assert c.capa()                             # still served after 19
    r = c.cmd("BOGUS19")
    if r == UNKNOWN:
        r = c.line()
    assert r == TOO_MANY_ERRORS, r
    c.expect_eof()
    assert_alive(server)
    assert_alive(server, USER)


# --- pipelining -----------------------------------------------------------------

def test_pipelined_commands_answered_in_order(server):
    msgs = three(server)
    c = login(server)
    st = c.stat()
    head, lst = c.list()
    uids = c.uidl()
    d1, d2 = c.retr(1), c.retr(2)
    c.send(b"STAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nNOOP\r\nRETR 9\r\nLIST 2\r\n"
           b"RETR 2\r\nUIDL 3\r\n")
    assert c.line() == b"+OK %d %d" % st
    assert c.line() == head
    assert c.multi() == [b"%d %d" % x for x in lst]
    assert is_ok(c.line())
    assert c.multi() == [b"%d %s" % x for x in uids]
    assert c.line() == b"+OK %d octets" % len(d1)
    assert unstuff(c.multi()) == d1
    assert is_ok(c.line())
    assert c.line() == NO_SUCH
    assert c.line() == b"+OK 2 %d" % len(d2)
    assert c.line() == b"+OK %d octets" % len(d2)
    assert unstuff(c.multi()) == d2
    assert c.line() == b"+OK 3 %s" % uids[2][1]
    assert_stored(d2, msgs[1], [USER])
    c.quit()


def test_pipelined_login(server):
    deliver(server, USER, body("p"))
    c = connect(server)
    c.send("USER %s\r\nPASS %s\r\nSTAT\r\nDELE 1\r\nRSET\r\nQUIT\r\n"
           % (USER, PASSWORD))
    assert is_ok(c.line())
    assert c.line() == LOGGED_IN
    assert c.line().startswith(b"+OK 1 ")
    assert c.line() == MARKED
    assert is_ok(c.line())
    assert c.line() == LOGGING_OUT
    c.expect_eof()
    c = connect(server)
    c.send("AUTH PLAIN %s\r\nSTAT\r\nQUIT\r\n" % plain())
    assert is_ok(c.line())
    assert c.line().startswith(b"+OK 1 ")
    assert c.line() == LOGGING_OUT
    c.expect_eof()


def test_pipelined_retr_many(server):
    big = body("big", b"".join(b".%05d " % i + b"z" * 90 + b"\r\n"
                               for i in range(2000)))
    msgs = [body("r1", TRICKY), big, body("r3")]
    deliver_many(server, USER, msgs)
    c = login(server)
    datas = [c.retr(i) for i in (1, 2, 3)]
    rounds = 10
    # several MB of replies to ~100 bytes of commands: the server must
    # apply back-pressure without dropping or reordering anything
    c.send(b"RETR 1\r\nRETR 2\r\nRETR 3\r\n" * rounds + b"STAT\r\n")
    for _ in range(rounds):
        for d in datas:
            assert c.line() == b"+OK %d octets" % len(d)
            assert unstuff(c.multi()) == d
    assert c.line() == b"+OK 3 %d" % sum(map(len, datas))
    c.quit()


def test_commands_split_byte_by_byte(server):
    msg = body("bytes", TRICKY)
    deliver(server, USER, msg)
    c = connect(server)
    script = ("USER %s\r\nPASS %s\r\nSTAT\r\nRETR 1\r\nQUIT\r\n"
              % (USER, PASSWORD)).encode()
    for i in range(len(script)):
        c.send(script[i:i + 1])
        time.sleep(0.002)
    assert is_ok(c.line())
    assert c.line() == LOGGED_IN
    st = c.line()
    assert c.line().endswith(b" octets")
    data = unstuff(c.multi())
    assert st == b"+OK 1 %d" % len(data)
    assert_stored(data, msg, [USER])
    assert c.line() == LOGGING_OUT
    c.expect_eof()


# --- crash during the QUIT commit ---------------------------------------------

def test_kill9_during_quit_commit_is_atomic(server):
    n = 50
    # None: kill right after the +OK of QUIT (deletes must then be durable)
    # (the commit itself may take well under a millisecond, so most moments
    # are fractions of one; waiting is a busy loop for precision)
    moments = [0.0, None, 0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.001,
               0.002, 0.02]
    outcomes = []
    originals = None
    for attempt, delay in enumerate(moments):
        if originals is None:
            msgs = [body("k%d-%d" % (attempt, i)) for i in range(n)]
            deliver_many(server, USER, msgs)
            c = login(server)
            originals = [c.retr(i) for i in range(1, n + 1)]
            for d, m in zip(originals, msgs):
                assert_stored(d, m, [USER])
            uids = c.uidl()
        else:
            c = login(server)
        c.send(b"".join(b"DELE %d\r\n" % i for i in range(1, n + 1)))
        for i in range(n):
            assert c.line() == MARKED, i
        c.send("QUIT\r\n")
        if delay is None:
            assert c.line() == LOGGING_OUT
        elif delay:
            end = time.perf_counter() + delay
            while time.perf_counter() < end:
                pass
        restart(server, kill=True)
        c.close()
        c = login(server)
        count, size = c.stat()
        assert count in (0, n), "partial commit: %d of %d left (kill %s s " \
            "after QUIT; earlier attempts %r)" % (count, n, delay, outcomes)
        if count == n:
            assert size == sum(map(len, originals))
            assert c.uidl() == uids
            for i, d in enumerate(originals, 1):
                assert c.retr(i) == d, i
        else:
            assert size == 0
            originals = None
        if delay is None:
            assert count == 0, "QUIT answered +OK but deletes were lost"
        outcomes.append((delay, count))
        c.quit()
