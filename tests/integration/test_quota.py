"""Mailbox quotas (issue #16): the usage the store keeps, what SMTP answers
for a full mailbox (at RCPT, and at the end of the data for one the message
would take past its quota), the DSN for the recipients that did not get a
message others did, POP3 deletions freeing room at once, and the CLI.
Wire behaviour is tests/PROTOCOL.md; why 550/552 and not 4xx, DESIGN.md."""
import base64
import re
import time

from helpers import (SENDER, SMTPConn, expect, make_body, pop3_messages,
                     pop3_open, pop3_stat, stored_body)

USERS = ("alice@localhost", "bob@localhost", "carol@localhost")
FULL_RCPT = "550 5.2.2 <%s>: Quota exceeded (mailbox for user is full)"
FULL_DATA = "552 5.2.2 <%s>: Quota exceeded (mailbox for user is full)"
REMOTE = "someone@remote.test"  # not a local domain (conftest's are)
STORED = re.compile(r"^250 2\.0\.0 Ok: stored as \S+$")


def usage(server, user):
    """(messages, used, quota) as `pillarbox user quota USER` shows it;
    quota None for none. The line must be exactly list's line."""
    out = server.cli("user", "quota", user).stdout
    m = re.match(r"^(\S+) messages=(\d+) used=(\d+) quota=(\d+|none)"
                 r"( admin)?\n$", out)
    assert m and m.group(1) == user, out
    assert out in server.cli("user", "list").stdout.splitlines(True)
    quota = None if m.group(4) == "none" else int(m.group(4))
    return int(m.group(2)), int(m.group(3)), quota


def set_quota(server, user, size):
    server.cli("user", "quota", user, str(size))


def assert_usage_is_stat(server, user):
    """The running total is what POP3's STAT counts."""
    count, octets = pop3_stat(server, user)
    assert usage(server, user)[:2] == (count, octets)
    return count, octets


def send(server, rcpts, body, sender=SENDER):
    """One transaction on the MX port, every RCPT accepted; the final
    reply."""
    with SMTPConn(server) as c:
        c.begin(rcpts, sender=sender)
        return c.data(body)


def assert_stored(reply):
    assert STORED.match(reply.last) and len(reply.lines) == 1, reply


def fill(server, user, tag):
    """Delivers one message to user (no quota yet) and sets the quota to
    exactly its usage: the mailbox is full. Returns the usage."""
    assert_stored(send(server, [user], make_body(tag)))
    _, used, _ = usage(server, user)
    set_quota(server, user, used)
    return used


def wait_log(server, pattern, timeout=10):
    """The server's log once it matches pattern: the loop writes its log
    lines once per turn, so a reply may arrive before them."""
    deadline = time.time() + timeout
    while True:
        text = server.log_text()
        if re.search(pattern, text) or time.time() > deadline:
            return text
        time.sleep(0.02)


# ============================================================== RCPT

def test_rcpt_to_full_mailbox_refused(make_server):
    """At or over the quota: 550 5.2.2 at RCPT on the MX port and on
    submission, for the user and for an alias reaching only full
    mailboxes; nothing is stored, the other recipient gets the message."""
    s = make_server(users=USERS)
    used = fill(s, "bob@localhost", "fill")
    assert usage(s, "bob@localhost") == (1, used, used)
    s.cli("alias", "add", "team@localhost", "bob@localhost")
    before = pop3_messages(s, "bob@localhost")
    body = make_body("after-full")
    with SMTPConn(s) as c:
        c.begin([])
        for rcpt in ("bob@localhost", "BOB@localhost", "team@localhost"):
            expect(c.cmd("RCPT TO:<%s>" % rcpt), "550 5.2.2",
                   FULL_RCPT % rcpt)
        expect(c.cmd("DATA"), "503 5.5.1")
        expect(c.cmd("RCPT TO:<alice@localhost>"), "250 2.1.5")
        assert_stored(c.data(body))
    assert [stored_body(m) for m in pop3_messages(s)] == [body]
    assert pop3_messages(s, "bob@localhost") == before
    assert usage(s, "bob@localhost") == (1, used, used)
    log = wait_log(s, r"reason=quota")
    assert re.search(r"event=reject .* to=<bob@localhost> reason=quota", log)

    # the same on submission, logged in (AUTH PLAIN; the client is on the
    # server's own address, so no TLS is needed)
    plain = base64.b64encode(b"\0carol@localhost\0secret").decode()
    with SMTPConn(s, proto="submission") as c:
        c.ehlo()
        expect(c.cmd("AUTH PLAIN " + plain), "235 2.7.0")
        expect(c.cmd("MAIL FROM:<carol@localhost>"), "250 2.1.0")
        expect(c.cmd("RCPT TO:<bob@localhost>"), "550 5.2.2",
               FULL_RCPT % "bob@localhost")
        expect(c.cmd("RCPT TO:<team@localhost>"), "550 5.2.2",
               FULL_RCPT % "team@localhost")
        expect(c.cmd("RSET"), "250 2.0.0")
    assert pop3_messages(s, "bob@localhost") == before

    # over the quota (lowered below the usage) is full too
    set_quota(s, "bob@localhost", used - 1)
    with SMTPConn(s) as c:
        c.begin([])
        expect(c.cmd("RCPT TO:<bob@localhost>"), "550 5.2.2",
               FULL_RCPT % "bob@localhost")
    # and quota 0 is no limit at all
    set_quota(s, "bob@localhost", 0)
    assert usage(s, "bob@localhost") == (1, used, None)
    assert_stored(send(s, ["bob@localhost"], body))
    assert [stored_body(m) for m in pop3_messages(s, "bob@localhost")][1:] \
        == [body]
    assert_usage_is_stat(s, "bob@localhost")


# ========================================================= at the data

def test_message_crossing_quota_one_recipient(server):
    """Room left, but not for this message: RCPT is taken, the end of the
    data gets 552 5.2.2 and nothing is stored. One octet more of quota
    and the same message fits exactly."""
    body = make_body("crossing", lines=40)
    assert_stored(send(server, ["alice@localhost"], body))
    n, size = assert_usage_is_stat(server, "alice@localhost")
    assert n == 1
    # the same message again takes as many octets (the trace headers have
    # one length: same sender, recipient, client, id and date widths)
    set_quota(server, "alice@localhost", 2 * size - 1)
    with SMTPConn(server) as c:
        c.begin(["alice@localhost"])
        expect(c.data(body), "552 5.2.2", FULL_DATA % "alice@localhost")
        # the session goes on
        expect(c.cmd("NOOP"), "250", "250 2.0.0 Ok")
    assert usage(server, "alice@localhost") == (1, size, 2 * size - 1)
    assert [stored_body(m) for m in pop3_messages(server)] == [body]
    assert pop3_stat(server, "bob@localhost") == (0, 0)
    log = wait_log(server, r"to=<alice@localhost> reason=quota")
    assert "to=<alice@localhost> reason=quota id=" in log

    set_quota(server, "alice@localhost", 2 * size)
    assert_stored(send(server, ["alice@localhost"], body))
    assert usage(server, "alice@localhost") == (2, 2 * size, 2 * size)
    assert_usage_is_stat(server, "alice@localhost")
    # now exactly at the quota: full
    with SMTPConn(server) as c:
        c.begin([])
        expect(c.cmd("RCPT TO:<alice@localhost>"), "550 5.2.2",
               FULL_RCPT % "alice@localhost")


def test_pop3_dele_frees_quota_at_once(server):
    """POP3's QUIT expunges in one commit, and the usage drops in that
    commit: the message refused a moment ago is taken now."""
    body = make_body("dele", lines=20)
    assert_stored(send(server, ["alice@localhost"], body))
    _, size = assert_usage_is_stat(server, "alice@localhost")
    set_quota(server, "alice@localhost", size)
    with SMTPConn(server) as c:
        c.begin([])
        expect(c.cmd("RCPT TO:<alice@localhost>"), "550 5.2.2")
    p = pop3_open(server)
    assert p.dele(1).startswith(b"+OK")
    # marked only: nothing is freed before QUIT
    assert usage(server, "alice@localhost") == (1, size, size)
    assert p.quit().startswith(b"+OK")
    assert usage(server, "alice@localhost") == (0, 0, size)
    assert_stored(send(server, ["alice@localhost"], body))
    assert [stored_body(m) for m in pop3_messages(server)] == [body]
    assert usage(server, "alice@localhost") == (1, size, size)


def dsn_parts(msg):
    """The DSN's human part, its delivery-status part and the rest."""
    head, report = msg.split(b"Content-Type: message/delivery-status", 1)
    return head, report


def test_two_recipients_one_over_quota_gets_dsn(make_server):
    """One mailbox takes the message, the other would go over its quota:
    250 (the message is delivered), and the local sender gets a DSN with
    Status 5.2.2 for the other, in the same commit."""
    s = make_server(users=USERS)
    set_quota(s, "bob@localhost", 100)  # empty, but the message is bigger
    body = make_body("two-rcpts", lines=10)
    with SMTPConn(s) as c:
        c.begin(["bob@localhost", "carol@localhost"],
                sender="alice@localhost")
        assert_stored(c.data(body))
    assert [stored_body(m) for m in pop3_messages(s, "carol@localhost")] \
        == [body]
    assert pop3_stat(s, "bob@localhost") == (0, 0)
    assert usage(s, "bob@localhost") == (0, 0, 100)
    (dsn,) = pop3_messages(s, "alice@localhost")
    assert dsn.startswith(b"Return-Path: <>\r\n")
    assert b"Content-Type: multipart/report; report-type=delivery-status" \
        in dsn
    human, report = dsn_parts(dsn)
    assert (b"<bob@localhost>: 552 5.2.2 Quota exceeded (mailbox for user "
            b"is full)\r\n") in human
    assert b"Final-Recipient: rfc822; bob@localhost\r\n" in report
    assert b"Action: failed\r\nStatus: 5.2.2\r\n" in report
    assert b"Subject: two-rcpts" in report  # the original headers
    assert b"line 3 of two-rcpts" not in dsn  # not its body
    assert b"carol" not in human and b"carol" not in report.split(
        b"text/rfc822-headers")[0]
    assert s.cli("queue", "list").stdout == ""
    log = wait_log(s, r"reason=quota")
    assert re.search(r"smtp info sid=\S+ event=reject ip=127\.0\.0\.1 "
                     r"helo=\S+ from=<alice@localhost> to=<bob@localhost> "
                     r"reason=quota id=\S+$", log, re.M)


def test_alias_reaching_a_full_mailbox(make_server):
    """An alias with one full target and one with room: taken; the full
    one does not get it, and the sender hears of it (the mailbox named)."""
    s = make_server(users=USERS)
    used = fill(s, "bob@localhost", "fill")
    s.cli("alias", "add", "both@localhost", "bob@localhost,carol@localhost")
    body = make_body("alias")
    assert_stored(send(s, ["both@localhost"], body, sender="alice@localhost"))
    assert [stored_body(m) for m in pop3_messages(s, "carol@localhost")] \
        == [body]
    assert usage(s, "bob@localhost") == (1, used, used)
    (dsn,) = pop3_messages(s, "alice@localhost")
    assert b"Final-Recipient: rfc822; bob@localhost\r\n" in dsn
    assert b"Status: 5.2.2\r\n" in dsn


def test_no_dsn_for_null_sender_or_full_sender(make_server):
    """A bounce is never bounced: MAIL FROM:<> gets no DSN. A local sender
    whose own mailbox is full gets none either (a hard quota holds for the
    server's own mail too): dropped and logged, nothing queued."""
    s = make_server(users=USERS)
    set_quota(s, "bob@localhost", 100)
    body = make_body("from-null")
    assert_stored(send(s, ["bob@localhost", "carol@localhost"], body,
                       sender=""))
    assert pop3_stat(s, "bob@localhost") == (0, 0)
    assert len(pop3_messages(s, "carol@localhost")) == 1
    assert pop3_stat(s, "alice@localhost") == (0, 0)
    log = wait_log(s, r"from=<> to=<bob@localhost> reason=quota")
    assert "event=bounce-dropped" not in log

    used = fill(s, "alice@localhost", "alice-full")
    assert_stored(send(s, ["bob@localhost", "carol@localhost"],
                       make_body("from-full"), sender="alice@localhost"))
    assert len(pop3_messages(s, "carol@localhost")) == 2
    assert usage(s, "alice@localhost") == (1, used, used)
    assert pop3_stat(s, "bob@localhost") == (0, 0)
    assert s.cli("queue", "list").stdout == ""
    log = wait_log(s, r"event=bounce-dropped")
    assert re.search(r"deliver warn event=bounce-dropped msg=[0-9a-f]{16} "
                     r"to=<alice@localhost> reason=quota", log)


def test_remote_sender_dsn_is_queued(make_server):
    """A remote sender's DSN is queued from <>, in the same commit (the
    runner is held, so it stays there)."""
    s = make_server(users=USERS,
                    extra={"delivery": {"max_concurrent": "0"}})
    set_quota(s, "bob@localhost", 100)
    assert_stored(send(s, ["bob@localhost", "carol@localhost"],
                       make_body("remote-sender"), sender=REMOTE))
    (line,) = s.cli("queue", "list").stdout.splitlines()
    assert re.match(r"^[0-9a-f]{16} <> <%s> attempts=0 " % REMOTE, line)
    qid = line.split()[0]
    dsn = s.cli("queue", "show", qid).stdout  # text: CRLF read as LF
    assert "Final-Recipient: rfc822; bob@localhost\n" in dsn
    assert "Status: 5.2.2\n" in dsn
