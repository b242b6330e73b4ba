"""Relay rights against the real binary: SMTP AUTH (PLAIN, LOGIN) on the
MX and submission listeners, relay_networks, native POP-before-SMTP, the
sender check, the outbound queue, and every open-relay trick refused.

Clients connect from chosen loopback addresses (127.0.0.x, source_address)
so that each rule sees a real peer address; a client on the server's own
address (127.0.0.1 to 127.0.0.1) is "local" and may use AUTH without TLS.
Every refusal of a relay also checks that nothing entered the queue
(`pillarbox queue list` is empty)."""
import base64
import calendar
import os
import poplib
import re
import shutil
import smtplib
import socket
import subprocess
import time

import pytest

from conftest import BIN
from helpers import (TIMEOUT, SMTPConn, expect,  # noqa: F401
                     precreate_server_dirs, make_body, pop3_messages,
                     split_trace)

RELAY_DENIED = "554 5.7.1 <%s>: Relay access denied"
AUTH_OK = "235 2.7.0 Authentication successful"
AUTH_BAD = "535 5.7.8 Authentication credentials invalid"
NEED_TLS = "530 5.7.0 Must issue a STARTTLS command first"
NEED_AUTH = "530 5.7.0 Authentication required"
THROTTLED = "454 4.7.0 Too many failed authentications, try later"
NOT_OWNED = "553 5.7.1 <%s>: Sender address rejected: not owned by user %s"
FROM_BAD = "553 5.7.1 From: header missing or not understood"
STORED_RE = re.compile(r"^250 2\.0\.0 Ok: stored as [0-9a-f]+$")
QUEUE_RE = re.compile(r"^([0-9a-f]{16}) <([^>]*)> <([^>]*)> attempts=(\d+) "
                      r"next=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) error=(.*)$")
ALICE, BOB = "alice@localhost", "bob@localhost"
NO_TLS = {"smtp": {"require_tls_for_auth": "no"}}


def b64(s):
    return base64.b64encode(s.encode()).decode()


def plain(user=ALICE, password="secret", authz=""):
    return b64("%s\0%s\0%s" % (authz, user, password))


def expect_stored(reply):
    assert STORED_RE.match(reply.last) and len(reply.lines) == 1, reply



@pytest.fixture
def make_server(make_server):
    """These tests look at what the queue holds, so the runner holds it
    ([delivery] max_concurrent = 0): nothing is sent on meanwhile."""
    def make(extra=None, **kw):
        extra = {k: dict(v) for k, v in (extra or {}).items()}
        extra.setdefault("delivery", {}).setdefault("max_concurrent", "0")
        return make_server(extra=extra, **kw)
    return make

def queue(server):
    """`pillarbox queue list` as [(id, sender, rcpt, attempts, next, err)]."""
    r = server.cli("queue", "list")
    assert r.stderr == ""
    out = []
    for line in r.stdout.splitlines():
        m = QUEUE_RE.match(line)
        assert m, line
        out.append(m.groups())
    return out


def queue_show(server, msg_id):
    """`pillarbox queue show ID`: the queued message's stored bytes."""
    r = subprocess.run([BIN, "-c", server.conf, "queue", "show", msg_id],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def assert_queue_empty(server):
    assert queue(server) == [], server.cli("queue", "list").stdout


def conn(server, source=None, proto="smtp", ehlo=True):
    c = SMTPConn(server, proto=proto, source=source)
    if ehlo:
        c.ehlo()
    return c


def login(c, user=ALICE, password="secret"):
    expect(c.cmd("AUTH PLAIN " + plain(user, password)), "235", AUTH_OK)


def deliver_ok(c, sender, rcpts, body):
    expect(c.cmd("MAIL FROM:<%s>" % sender), "250 2.1.0")
    for r in rcpts:
        expect(c.cmd("RCPT TO:<%s>" % r), "250 2.1.5")
    r = c.data(body)
    expect_stored(r)
    return r


def body_from(addr, tag="x"):
    return ("From: %s\r\nSubject: %s\r\nMessage-Id: <%s@client.test>\r\n\r\n"
            "hello %s\r\n" % (addr, tag, tag, tag)).encode()


class SourcePOP3(poplib.POP3):
    """poplib.POP3 from a chosen local address."""

    def __init__(self, host, port, source):
        self.source = source
        super().__init__(host, port, timeout=TIMEOUT)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.source, 0))


def pop_login(server, source, user=ALICE, password="secret"):
    p = SourcePOP3(*server.addr("pop3"), source)
    try:
        p.user(user)
        p.pass_(password)
        return True
    except poplib.error_proto as e:
        return e.args[0].decode()
    finally:
        try:
            p.quit()
        except (poplib.error_proto, OSError):
            p.close()


# ======================================================== SMTP AUTH

def test_auth_offered_only_where_allowed(make_server):
    """require_tls_for_auth (the default): AUTH only for a client on the
    server's own address; 127.0.0.9 connecting to 127.0.0.1 is not."""
    s = make_server()
    with conn(s, ehlo=False) as c:
        assert "250-AUTH PLAIN LOGIN" in c.ehlo().lines
        login(c)
    with conn(s, "127.0.0.9", ehlo=False) as c:
        r = c.ehlo()
        assert not any("AUTH" in l for l in r.lines), r
        expect(c.cmd("AUTH PLAIN " + plain()), "530", NEED_TLS)
        expect(c.cmd("AUTH LOGIN"), "530", NEED_TLS)
    with conn(s, "127.0.0.9", proto="submission", ehlo=False) as c:
        assert not any("AUTH" in l for l in c.ehlo().lines)
        expect(c.cmd("AUTH PLAIN " + plain()), "530", NEED_TLS)
        expect(c.cmd("MAIL FROM:<%s>" % ALICE), "530", NEED_AUTH)
    # require_tls_for_auth = no: offered to everyone
    s2 = make_server(extra=NO_TLS)
    with conn(s2, "127.0.0.9", ehlo=False) as c:
        assert "250-AUTH PLAIN LOGIN" in c.ehlo().lines
        login(c)
    assert_queue_empty(s)


def test_auth_plain_and_login_exchanges(make_server):
    s = make_server(extra=NO_TLS)
    src = "127.0.0.10"
    with conn(s, src) as c:  # PLAIN, initial response
        login(c)
    with conn(s, src) as c:  # PLAIN after "334 "
        expect(c.cmd("AUTH PLAIN"), "334", "334 ")
        expect(c.cmd(plain()), "235", AUTH_OK)
    with conn(s, src) as c:  # PLAIN with authzid = authcid, any case
        expect(c.cmd("auth plain " + plain(authz=ALICE)), "235", AUTH_OK)
    with conn(s, src) as c:  # LOGIN, both prompts
        expect(c.cmd("AUTH LOGIN"), "334", "334 VXNlcm5hbWU6")
        expect(c.cmd(b64(ALICE)), "334", "334 UGFzc3dvcmQ6")
        expect(c.cmd(b64("secret")), "235", AUTH_OK)
    with conn(s, src) as c:  # LOGIN, the user name as initial response
        expect(c.cmd("AUTH LOGIN " + b64("ALICE@localhost")), "334",
               "334 UGFzc3dvcmQ6")
        expect(c.cmd(b64("secret")), "235", AUTH_OK)
    with conn(s, src) as c:  # "*" cancels, at any step
        expect(c.cmd("AUTH PLAIN"), "334")
        expect(c.cmd("*"), "501", "501 5.7.0 Authentication cancelled")
        expect(c.cmd("AUTH LOGIN"), "334")
        expect(c.cmd(b64(ALICE)), "334")
        expect(c.cmd("*"), "501", "501 5.7.0 Authentication cancelled")
        expect(c.cmd("AUTH LOGIN " + b64(ALICE)), "334")
        expect(c.cmd(b64("secret")), "235", AUTH_OK)
    with conn(s, src) as c:  # sequence and syntax
        expect(c.cmd("AUTH CRAM-MD5"), "504",
               "504 5.5.4 Unrecognized authentication type")
        expect(c.cmd("AUTH PLAIN !!!notbase64"), "501",
               "501 5.5.2 Invalid base64 data")
        expect(c.cmd("AUTH"), "501")
        expect(c.cmd("MAIL FROM:<%s>" % ALICE), "250")
        expect(c.cmd("AUTH PLAIN " + plain()), "503",
               "503 5.5.1 Error: AUTH not allowed during a mail transaction")
        expect(c.cmd("RSET"), "250")
        login(c)
        expect(c.cmd("AUTH PLAIN " + plain()), "503",
               "503 5.5.1 Error: already authenticated")
        # EHLO again keeps the login (RFC 4954 resets it only with TLS)
        c.ehlo()
        expect(c.cmd("AUTH LOGIN"), "503")
    with conn(s, src, ehlo=False) as c:
        expect(c.cmd("AUTH PLAIN " + plain()), "503",
               "503 5.5.1 Error: send HELO/EHLO first")
        expect(c.cmd("HELO client.test"), "250")
        expect(c.cmd("AUTH PLAIN " + plain()), "503",
               "503 5.5.1 Error: send EHLO first")
    log = s.log_text()
    assert len(re.findall(r" smtp info sid=\S+ event=auth ip=127\.0\.0\.10 "
                          r"user=alice@localhost mech=(?:PLAIN|LOGIN)\n",
                          log)) == 7, log
    # never a password, never an AUTH payload
    for secret in ("secret", plain(), b64("secret"), b64(ALICE)):
        assert secret not in log


def test_auth_failure_is_delayed_for_that_client_only(make_server):
    s = make_server(extra={"smtp": {"require_tls_for_auth": "no"},
                           "pop3": {"login_delay": "1"}})
    with conn(s, "127.0.0.11") as bad, conn(s, "127.0.0.12") as other:
        t0 = time.time()
        bad.send("AUTH PLAIN %s\r\n" % plain(password="wrong"))
        # meanwhile another client is served at once
        t1 = time.time()
        expect(other.cmd("NOOP"), "250")
        login(other)
        assert time.time() - t1 < 0.8
        expect(bad.reply(), "535", AUTH_BAD)
        assert time.time() - t0 >= 0.9
        # an unknown user: the same reply, the same wait
        t0 = time.time()
        expect(bad.cmd("AUTH LOGIN " + b64("nobody@localhost")), "334")
        expect(bad.cmd(b64("secret")), "535", AUTH_BAD)
        assert time.time() - t0 >= 0.9
        # a PLAIN naming someone else: refused the same way
        expect(bad.cmd("AUTH PLAIN " + plain(authz=BOB)), "535", AUTH_BAD)
        # still not logged in: no relaying
        expect(bad.cmd("MAIL FROM:<%s>" % ALICE), "250")
        expect(bad.cmd("RCPT TO:<x@remote.test>"), "554",
               RELAY_DENIED % "x@remote.test")
    log = s.log_text()
    fails = re.findall(r"^\S+ pillarbox smtp warn sid=[0-9a-f]+ "
                       r"event=auth-failed ip=(\S+) user=(\S*)$", log, re.M)
    assert fails == [("127.0.0.11", ALICE), ("127.0.0.11", "nobody@localhost"),
                     ("127.0.0.11", "")], fails
    assert "wrong" not in log
    assert_queue_empty(s)


def test_auth_failures_throttled_with_pop3(make_server):
    """Ten failures from one address (SMTP or POP3 alike) within 5 minutes:
    further attempts get 454 without a check; other clients go on."""
    s = make_server(extra=NO_TLS)
    src = "127.0.0.13"
    with conn(s, src) as c:
        for _ in range(5):
            expect(c.cmd("AUTH PLAIN " + plain(password="no")), "535")
    for _ in range(5):
        assert pop_login(s, src, password="no") == \
            "-ERR [AUTH] Authentication failed."
    with conn(s, src) as c:
        expect(c.cmd("AUTH PLAIN " + plain()), "454", THROTTLED)
        expect(c.cmd("AUTH LOGIN " + b64(ALICE)), "334")
        expect(c.cmd(b64("secret")), "454", THROTTLED)
    assert pop_login(s, src) == \
        "-ERR [SYS/TEMP] Too many failed logins, try later."
    with conn(s, "127.0.0.14") as c:
        login(c)


def test_failed_auth_counts_toward_the_error_limit(make_server):
    s = make_server(extra={"smtp": {"require_tls_for_auth": "no"}})
    with conn(s, "127.0.0.15") as c:
        for i in range(19):
            expect(c.cmd("AUTH CRAM-MD5"), "504")
        expect(c.cmd("AUTH PLAIN " + plain(password="no")), "535")
        expect(c.reply(), "421", "421 4.7.0 mx.test Error: too many errors")
        assert c.eof()


def test_long_auth_lines(make_server):
    """RFC 4954 4: AUTH lines of 12288 octets are taken (a response too
    long to be ours fails like a wrong password); other commands stay
    within 512."""
    s = make_server(extra=NO_TLS)
    with conn(s, "127.0.0.16") as c:
        expect(c.cmd("AUTH PLAIN " + "A" * 12000), "535", AUTH_BAD)
        expect(c.cmd("AUTH PLAIN"), "334")
        expect(c.cmd("B" * 12000), "535", AUTH_BAD)
        expect(c.cmd("NOOP " + "x" * 600), "500",
               "500 5.5.2 Line too long")
        expect(c.cmd("AUTH PLAIN " + "A" * 13000), "500",
               "500 5.5.2 Line too long")
        login(c)


# ======================================================== submission

def test_submission_needs_auth_then_relays(make_server):
    s = make_server()
    assert "submission" in s.ports and s.ports["submission"] != \
        s.ports["smtp"]
    assert re.search(r" submission info event=listening proto=submission "
                     r"addr=127\.0\.0\.1:\d+", s.log_text())
    with conn(s, proto="submission") as c:
        assert c.greeting.last == "220 mx.test ESMTP pillarbox"
        expect(c.cmd("MAIL FROM:<%s>" % ALICE), "530", NEED_AUTH)
        expect(c.cmd("RCPT TO:<%s>" % BOB), "503")
        login(c)
        deliver_ok(c, ALICE, ["Friend@Remote.test"], body_from(ALICE))
    (e,) = queue(s)
    assert e[1:5] == (ALICE, "Friend@remote.test", "0", e[4])
    assert e[5] == "-"
    when = calendar.timegm(time.strptime(e[4], "%Y-%m-%dT%H:%M:%SZ"))
    assert abs(when - time.time()) < 60  # due at once
    assert re.search(r" relay info sid=\S+ event=relay-decision "
                     r"ip=127\.0\.0\.1 to=Friend@remote\.test verdict=allow "
                     r"reason=auth user=alice@localhost", s.log_text())
    assert re.search(r" submission info sid=\S+ event=stored .* queued=1 ",
                     s.log_text())


def test_relayed_received_says_esmtpa(make_server):
    s = make_server()
    with conn(s, proto="submission") as c:
        login(c)
        deliver_ok(c, ALICE, [BOB, "x@remote.test"], body_from(ALICE, "esmtpa"))
    (msg,) = pop3_messages(s, BOB)
    rp, rec, rest = split_trace(msg)
    assert rp == ALICE
    assert rec["proto"] == "ESMTPA"
    assert rec["auth"] == ALICE
    assert rec["for"] is None  # two recipients
    assert rest == body_from(ALICE, "esmtpa")


# ======================================================== relay rules

def test_mx_relays_for_nobody_by_default(make_server):
    s = make_server()
    for src in ("127.0.0.1", "127.0.0.5"):
        with conn(s, src) as c:
            expect(c.cmd("MAIL FROM:<a@remote.test>"), "250")
            for r in ("x@remote.test", "postmaster@remote.test"):
                expect(c.cmd("RCPT TO:<%s>" % r), "554", RELAY_DENIED % r)
            expect(c.cmd("DATA"), "503")
            # local recipients are anyone's to write to
            expect(c.cmd("RCPT TO:<%s>" % ALICE), "250")
            expect_stored(c.data(make_body("mx-" + src)))
    assert_queue_empty(s)
    assert len(pop3_messages(s)) == 2
    assert re.search(r" relay warn sid=\S+ event=relay-decision "
                     r"ip=127\.0\.0\.5 to=x@remote\.test verdict=deny "
                     r"reason=denied user=-", s.log_text())


def test_relay_networks(make_server):
    s = make_server(extra={"smtp": {
        "relay_networks": "10.0.0.0/8, 127.0.0.16/29 192.168.0.0/16"}})
    with conn(s, "127.0.0.17") as c:  # inside 127.0.0.16/29
        deliver_ok(c, "scanner@localhost", ["boss@remote.test"],
                   body_from("scanner@localhost", "scan"))
        # nobody to check a sender against: the null sender too
        deliver_ok(c, "", ["x@remote.test"], make_body("bounce"))
    with conn(s, "127.0.0.24") as c:  # just outside
        expect(c.cmd("MAIL FROM:<scanner@localhost>"), "250")
        expect(c.cmd("RCPT TO:<boss@remote.test>"), "554",
               RELAY_DENIED % "boss@remote.test")
    q = queue(s)
    assert [(e[1], e[2]) for e in q] == [("scanner@localhost",
                                          "boss@remote.test"),
                                         ("", "x@remote.test")], q
    assert re.search(r" relay info sid=\S+ event=relay-decision "
                     r"ip=127\.0\.0\.17 to=boss@remote\.test verdict=allow "
                     r"reason=network user=-", s.log_text())


def test_pop_before_smtp(make_server):
    s = make_server()
    assert pop_login(s, "127.0.0.3") is True
    with conn(s, "127.0.0.3") as c:
        deliver_ok(c, ALICE, ["friend@remote.test"], body_from(ALICE, "pbs"))
        # the grant is alice's: she sends as herself only
        expect(c.cmd("MAIL FROM:<%s>" % BOB), "250")
        expect(c.cmd("RCPT TO:<friend@remote.test>"), "553",
               NOT_OWNED % (BOB, ALICE))
        expect(c.cmd("RSET"), "250")
        expect(c.cmd("MAIL FROM:<%s>" % ALICE), "250")
        expect(c.cmd("RCPT TO:<friend@remote.test>"), "250")
        r = c.data(body_from(BOB, "forged-from"))
        expect(r, "553", NOT_OWNED % (BOB, ALICE))
    with conn(s, "127.0.0.4") as c:  # no grant there
        expect(c.cmd("MAIL FROM:<%s>" % ALICE), "250")
        expect(c.cmd("RCPT TO:<friend@remote.test>"), "554",
               RELAY_DENIED % "friend@remote.test")
    q = queue(s)
    assert [(e[1], e[2]) for e in q] == [(ALICE, "friend@remote.test")], q
    assert re.search(r" relay info sid=\S+ event=relay-decision "
                     r"ip=127\.0\.0\.3 to=friend@remote\.test verdict=allow "
                     r"reason=pop-before-smtp user=alice@localhost",
                     s.log_text())


def test_failed_pop3_login_grants_nothing(make_server):
    s = make_server()
    assert pop_login(s, "127.0.0.3", password="wrong") == \
        "-ERR [AUTH] Authentication failed."
    with conn(s, "127.0.0.3") as c:
        expect(c.cmd("MAIL FROM:<%s>" % ALICE), "250")
        expect(c.cmd("RCPT TO:<x@remote.test>"), "554",
               RELAY_DENIED % "x@remote.test")
    assert_queue_empty(s)


def test_pop_before_smtp_grant_expires(make_server):
    s = make_server(extra={"smtp": {"pop_before_smtp": "2"}})
    assert pop_login(s, "127.0.0.6") is True
    with conn(s, "127.0.0.6") as c:
        deliver_ok(c, ALICE, ["x@remote.test"], body_from(ALICE, "in-time"))
    deadline = time.time() + 30
    while True:
        with conn(s, "127.0.0.6") as c:
            expect(c.cmd("MAIL FROM:<%s>" % ALICE), "250")
            r = c.cmd("RCPT TO:<late@remote.test>")
        if r.code == 554:
            expect(r, "554", RELAY_DENIED % "late@remote.test")
            break
        assert r.code == 250 and time.time() < deadline, r
        time.sleep(0.2)
    assert [e[2] for e in queue(s)] == ["x@remote.test"]


# ==================================== one message, local and relayed

def test_mixed_recipients_one_commit(make_server):
    s = make_server()
    s.cli("alias", "add", "team@localhost", "alice@localhost,bob@localhost")
    body = body_from(ALICE, "mixed")
    with conn(s, proto="submission") as c:
        login(c)
        expect(c.cmd("MAIL FROM:<%s>" % ALICE), "250")
        for r in ("team@localhost", "Carol@Remote.test", "dave@other.test",
                  "carol@remote.test", "Carol@Remote.test"):
            expect(c.cmd("RCPT TO:<%s>" % r), "250 2.1.5")
        r = c.data(body)
        expect_stored(r)
        assert len(r.lines) == 1  # one commit, one 250
    # the local copies, each with its own Return-Path
    for u in (ALICE, BOB):
        (msg,) = pop3_messages(s, u)
        rp, rec, rest = split_trace(msg)
        assert rp == ALICE and rest == body and rec["proto"] == "ESMTPA"
    # one queue entry per distinct remote recipient (case kept), one id
    q = queue(s)
    assert sorted(e[2] for e in q) == ["Carol@remote.test",
                                       "carol@remote.test",
                                       "dave@other.test"], q
    assert len({e[0] for e in q}) == 1
    # the queued copy: Received first, no Return-Path (RFC 5321 4.4)
    stored = queue_show(s, q[0][0])
    assert stored.startswith(b"Received: from "), stored[:200]
    assert b"Return-Path" not in stored
    assert stored.endswith(body)
    (msg,) = pop3_messages(s, ALICE)
    assert msg == b"Return-Path: <alice@localhost>\r\n" + stored
    # STAT counts the Return-Path too
    p = poplib.POP3(*s.addr("pop3"), timeout=TIMEOUT)
    p.user(ALICE)
    p.pass_("secret")
    assert p.stat() == (1, len(msg))
    assert p.list()[1] == [b"1 %d" % len(msg)]
    hdr = b"\r\n".join(p.top(1, 0)[1])
    assert hdr.startswith(b"Return-Path: <alice@localhost>\r\nReceived: ")
    p.quit()
    r = s.cli("queue", "show", "ffff", check=False)
    assert r.returncode == 1 and "no such entry" in r.stderr


# ======================================================== open relay

TRICKS = [
    ("user%remote.test@localhost", "550 5.1.1"),
    ('"user@remote.test"@localhost', "550 5.1.1"),
    ("remote.test!user@localhost", "550 5.1.1"),
    ("@localhost:user@remote.test", "501 5.1.3"),
    ("@a.test,@localhost:user@remote.test", "501 5.1.3"),
    ("user@remote.test@localhost", "501 5.1.3"),
    ("user@[192.0.2.1]", "554 5.7.1"),
    ("user@[IPv6:2001:db8::1]", "554 5.7.1"),
    ("user@[127.0.0.7]", "554 5.7.1"),  # the client's, not ours
    ("user@remote.test.", "554 5.7.1"),
    ("user@REMOTE.test", "554 5.7.1"),
    ("user@localhost.remote.test", "554 5.7.1"),
    ("user@sub.localhost", "554 5.7.1"),
]


@pytest.mark.parametrize("rcpt,code", TRICKS)
def test_open_relay_tricks_refused(make_server, rcpt, code):
    s = make_server()
    with conn(s, "127.0.0.7") as c:
        expect(c.cmd("MAIL FROM:<spammer@remote.test>"), "250")
        r = c.cmd("RCPT TO:<%s>" % rcpt)
        expect(r, code)
        expect(c.cmd("DATA"), "503")
    assert_queue_empty(s)


def test_local_spellings_are_local(make_server):
    """Our own address literal, a trailing dot and any case are local."""
    s = make_server()
    with conn(s, "127.0.0.7") as c:
        deliver_ok(c, "someone@remote.test",
                   ["alice@LOCALHOST.", "ALICE@[127.0.0.1]",
                    "bob@[IPv6:::ffff:127.0.0.1]"], make_body("spellings"))
    assert_queue_empty(s)
    assert len(pop3_messages(s, ALICE)) == 1  # one copy for both spellings
    assert len(pop3_messages(s, BOB)) == 1


def test_probing_for_a_relay_gets_cut_off(make_server):
    s = make_server()
    with conn(s, "127.0.0.8") as c:
        expect(c.cmd("MAIL FROM:<spammer@remote.test>"), "250")
        for i in range(20):
            r = c.cmd("RCPT TO:<v%d@victim.test>" % i)
            expect(r, "554")
        expect(c.reply(), "421", "421 4.7.0 mx.test Error: too many errors")
        assert c.eof()
    assert_queue_empty(s)


# ======================================================== sender check

def test_sender_check_mail_from(make_server):
    s = make_server()
    s.cli("alias", "add", "info@localhost", "alice@localhost,bob@localhost")
    s.cli("alias", "add", "bobs@localhost", "bob@localhost")
    with conn(s, proto="submission") as c:
        login(c)
        for a in (BOB, "bobs@localhost", "alice@example.org",
                  "alice@remote.test"):
            expect(c.cmd("MAIL FROM:<%s>" % a), "553", NOT_OWNED % (a, ALICE))
        # a bounce is the server's to send, not a user's
        expect(c.cmd("MAIL FROM:<>"), "553", NOT_OWNED % ("", ALICE))
        # her own address (any case) and an alias that reaches her
        for a in ("Alice@LocalHost", "info@localhost"):
            deliver_ok(c, a, ["x@remote.test"], body_from(a, "own"))
    assert [e[1] for e in queue(s)] == ["Alice@localhost", "info@localhost"]
    # the null sender is fine on the MX (other servers' bounces)
    with conn(s, "127.0.0.5") as c:
        deliver_ok(c, "", [ALICE], make_body("bounce"))


@pytest.mark.parametrize("from_field,ok", [
    ("alice@localhost", True),
    ("Alice Smith <ALICE@localhost>", True),
    ('"Smith, Alice" <alice@localhost>, info@localhost', True),
    ("Alice\r\n <alice@localhost> (folded)", True),
    ("bob@localhost", False),
    ('"alice@localhost" <bob@localhost>', False),
    ("alice@localhost, bob@localhost", False),
    ("undisclosed-recipients:;", None),
    ("<alice@localhost", None),
    ("", None),
])
def test_sender_check_from_header(make_server, from_field, ok):
    s = make_server()
    s.cli("alias", "add", "info@localhost", "alice@localhost")
    body = ("Subject: from\r\nFrom: %s\r\n\r\nhi\r\n" % from_field).encode()
    with conn(s, proto="submission") as c:
        login(c)
        expect(c.cmd("MAIL FROM:<%s>" % ALICE), "250")
        expect(c.cmd("RCPT TO:<x@remote.test>"), "250")
        expect(c.cmd("RCPT TO:<%s>" % BOB), "250")
        r = c.data(body)
        if ok:
            expect_stored(r)
        elif ok is False:
            expect(r, "553", NOT_OWNED % ("bob@localhost", ALICE))
        else:
            expect(r, "553", FROM_BAD)
        # BDAT alike
        expect(c.cmd("MAIL FROM:<%s>" % ALICE), "250")
        expect(c.cmd("RCPT TO:<%s>" % BOB), "250")
        c.send(b"BDAT %d LAST\r\n" % len(body) + body)
        r2 = c.reply()
        assert r2.code == r.code and r2.last.split(" ", 2)[1] == \
            r.last.split(" ", 2)[1], (r, r2)
    assert len(queue(s)) == (1 if ok else 0)
    assert len(pop3_messages(s, BOB)) == (2 if ok else 0)


def test_missing_from_header_refused(make_server):
    s = make_server()
    with conn(s, proto="submission") as c:
        login(c)
        expect(c.cmd("MAIL FROM:<%s>" % ALICE), "250")
        expect(c.cmd("RCPT TO:<x@remote.test>"), "250")
        expect(c.data(b"Subject: no from\r\n\r\nhi\r\n"), "553", FROM_BAD)
        expect(c.cmd("NOOP"), "250")
    assert_queue_empty(s)


def test_sender_check_off(make_server):
    s = make_server(extra={"smtp": {"sender_check": "off"}})
    with conn(s, proto="submission") as c:
        login(c)
        deliver_ok(c, "boss@remote.test", ["x@remote.test"],
                   body_from("ceo@bank.test", "anyone"))
        deliver_ok(c, "", [BOB], b"Subject: no from\r\n\r\nhi\r\n")
    assert len(queue(s)) == 1


# ======================================================== real clients

def msmtp_send(server, tmp_path, auth, rcpt, body):
    conf = tmp_path / ("msmtprc-" + auth)
    host, port = server.addr("submission")
    conf.write_text("account default\nhost %s\nport %d\nfrom %s\n"
                    "auth %s\nuser %s\npassword secret\ntls off\n"
                    "logfile -\n" % (host, port, ALICE, auth, ALICE))
    os.chmod(conf, 0o600)
    return subprocess.run(["msmtp", "-C", str(conf), rcpt], input=body,
                          capture_output=True, timeout=60)


@pytest.mark.skipif(shutil.which("msmtp") is None,
                    reason="no msmtp (Debian msmtp)")
@pytest.mark.parametrize("auth", ["plain", "login"])
def test_msmtp_submits(make_server, tmp_path, auth):
    s = make_server()
    body = body_from(ALICE, "msmtp-" + auth)
    r = msmtp_send(s, tmp_path, auth, "friend@remote.test", body)
    assert r.returncode == 0, r.stdout + r.stderr
    (e,) = queue(s)
    assert e[1:3] == (ALICE, "friend@remote.test")
    assert queue_show(s, e[0]).endswith(body)
    assert "mech=%s" % auth.upper() in s.log_text()
    # a wrong password: msmtp fails, nothing more is queued
    conf = tmp_path / ("msmtprc-" + auth)
    conf.write_text(conf.read_text().replace("password secret",
                                             "password wrong"))
    r = subprocess.run(["msmtp", "-C", str(conf), "x@remote.test"],
                       input=body, capture_output=True, timeout=60)
    assert r.returncode != 0
    assert len(queue(s)) == 1


@pytest.mark.skipif(shutil.which("swaks") is None,
                    reason="no swaks (Debian swaks)")
@pytest.mark.parametrize("auth", ["PLAIN", "LOGIN"])
def test_swaks_submits(make_server, auth):
    s = make_server()
    host, port = s.addr("submission")
    r = subprocess.run(["swaks", "--server", "%s:%d" % (host, port),
                        "--auth", auth, "--auth-user", ALICE,
                        "--auth-password", "secret", "--from", ALICE,
                        "--to", "friend@remote.test,bob@localhost",
                        "--helo", "laptop.test"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "235 2.7.0 Authentication successful" in r.stdout
    (e,) = queue(s)
    assert e[1:3] == (ALICE, "friend@remote.test")
    (msg,) = pop3_messages(s, BOB)
    assert split_trace(msg)[1]["auth"] == ALICE
    # swaks without AUTH on submission: 530 at MAIL
    r = subprocess.run(["swaks", "--server", "%s:%d" % (host, port),
                        "--from", ALICE, "--to", "friend@remote.test"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and NEED_AUTH in r.stdout
    assert len(queue(s)) == 1
