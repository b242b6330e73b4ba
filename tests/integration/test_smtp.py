"""SMTP integration tests: the real pillarbox binary on loopback, driven by
smtplib, swaks and raw sockets; every delivery (or non-delivery) is checked
through POP3. Wire behaviour is tests/PROTOCOL.md."""
import random
import re
import shutil
import smtplib
import subprocess
import threading
import time

import pytest

from helpers import (HELO_NAME, SENDER, TIMEOUT, SMTPConn, expect,  # noqa: F401
                     precreate_server_dirs,
                     make_body, pop3_messages, pop3_stat, split_trace,
                     stored_body)

# AUTH is offered here because the tests' client is on the server's own
# address (127.0.0.1 to 127.0.0.1): see test_relay.py for the rest
EHLO_EXTS = ["PIPELINING", None, "8BITMIME", "ENHANCEDSTATUSCODES",
             "SMTPUTF8", "AUTH PLAIN LOGIN", "CHUNKING"]
# PROTOCOL.md says "<hex id>"; test_stored_id_is_hex checks the exact form,
# the other tests accept any id
STORED_RE = re.compile(r"^250 2\.0\.0 Ok: stored as (\S+)$")
OK = "250 2.0.0 Ok"


def smtp_client(server):
    host, port = server.addr("smtp")
    return smtplib.SMTP(host, port, local_hostname=HELO_NAME,
                        timeout=TIMEOUT)


def expect_stored(reply):
    assert STORED_RE.match(reply.last) and len(reply.lines) == 1, reply


def expect_octets(reply, chunk, total):
    """BDAT non-LAST reply: "250 2.0.0 <n> octets received"; PROTOCOL.md
    does not say whether n counts the chunk or the message so far."""
    assert reply.last in ("250 2.0.0 %d octets received" % chunk,
                          "250 2.0.0 %d octets received" % total), reply


def mailbox(server, user="alice@localhost"):
    return pop3_messages(server, user)


def count(server, user="alice@localhost"):
    return pop3_stat(server, user)[0]


def assert_empty(server, *users):
    for u in users or ("alice@localhost", "bob@localhost"):
        assert count(server, u) == 0, "%s got mail: %r" % (
            u, mailbox(server, u))


def pad_line(prefix, total):
    """prefix padded with 'a' to total octets including the CRLF."""
    prefix = prefix.encode() if isinstance(prefix, str) else prefix
    assert len(prefix) + 2 <= total
    return prefix + b"a" * (total - len(prefix) - 2) + b"\r\n"


# ====================================================== happy path

def test_greeting_and_ehlo_lists_every_extension(make_server):
    s = make_server(extra={"smtp": {"max_message_size": "1048576"}})
    with SMTPConn(s) as c:
        r = c.cmd("EHLO " + HELO_NAME)
        want = ["250-mx.test"] + ["250-" + (e or "SIZE 1048576")
                                  for e in EHLO_EXTS[:-1]] + ["250 CHUNKING"]
        assert r.lines == want
        expect(c.cmd("HELO " + HELO_NAME), "250", "250 mx.test")
        expect(c.cmd("QUIT"), "221", "221 2.0.0 Bye")
        assert c.eof()
    # smtplib sees the same extensions
    with smtp_client(s) as cl:
        code, _ = cl.ehlo()
        assert code == 250
        for e in ("pipelining", "size", "8bitmime", "enhancedstatuscodes",
                  "smtputf8", "auth", "chunking"):
            assert cl.has_extn(e), e
        assert cl.esmtp_features["size"] == "1048576"


def test_ehlo_default_size_is_25M(server):
    with SMTPConn(server) as c:
        r = c.ehlo()
        assert r.lines[0] == "250-mx.test"
        assert [l[4:] for l in r.lines[1:]][0] == "PIPELINING"
        size = r.lines[2]
        # 25M: PROTOCOL.md says "default 25M" (binary suffix expected)
        assert size in ("250-SIZE 26214400", "250-SIZE 25000000"), r


def test_deliver_one_recipient_exact_bytes(server):
    body = (b"Message-Id: <one@client.test>\r\nSubject: hello\r\n"
            b"From: sender@example.org\r\nTo: alice@localhost\r\n\r\n"
            b"first line\r\n.starts with a dot\r\n..two dots\r\n.\r\n"
            b"\r\n  leading spaces and trailing   \r\n\tTAB\r\nlast\r\n")
    with smtp_client(server) as cl:
        assert cl.sendmail(SENDER, ["alice@localhost"], body) == {}
        # right after the 250, before QUIT, POP3 sees it
        msgs = mailbox(server)
    assert len(msgs) == 1
    rp, rec, rest = split_trace(msgs[0])
    assert rp == SENDER
    assert rec["helo"] == HELO_NAME
    assert rec["ip"] == "127.0.0.1"
    assert rec["by"] == "mx.test"
    assert rec["proto"] == "ESMTP"
    assert rec["for"] == "alice@localhost"
    assert rest == body
    assert count(server, "bob@localhost") == 0


def test_stored_id_is_hex(server):
    """PROTOCOL.md: "stored as <hex id>" and Received "id HEX"."""
    with SMTPConn(server) as c:
        r = c.deliver(["alice@localhost"], make_body("hex-id"), ehlo=True)
    expect_stored(r)
    sid = STORED_RE.match(r.last).group(1)
    (msg,) = mailbox(server)
    rid = split_trace(msg)[1]["id"]
    assert re.fullmatch(r"<?[0-9A-Fa-f]+>?", sid), r.last
    assert re.fullmatch(r"[0-9A-Fa-f]+", rid), rid


def test_deliver_two_recipients_no_for_clause(server):
    body = make_body("two-rcpts")
    with smtp_client(server) as cl:
        assert cl.sendmail(SENDER, ["alice@localhost", "bob@localhost"],
                           body) == {}
    for u in ("alice@localhost", "bob@localhost"):
        msgs = mailbox(server, u)
        assert len(msgs) == 1, u
        rp, rec, rest = split_trace(msgs[0])
        assert rec["for"] is None, rec["unfolded"]
        assert " for " not in rec["unfolded"]
        assert rec["proto"] == "ESMTP"
        assert rest == body


def test_alias_delivers_once_per_mailbox(server):
    server.cli("alias", "add", "team@localhost",
               "alice@localhost,bob@localhost")
    body = make_body("alias-and-users")
    with smtp_client(server) as cl:
        assert cl.sendmail(SENDER, ["alice@localhost", "bob@localhost",
                                    "team@localhost"], body) == {}
    for u in ("alice@localhost", "bob@localhost"):
        msgs = mailbox(server, u)
        assert len(msgs) == 1, (u, msgs)
        assert stored_body(msgs[0]) == body
    # the alias alone reaches both, once each
    body2 = make_body("alias-only")
    with smtp_client(server) as cl:
        assert cl.sendmail(SENDER, ["team@localhost"], body2) == {}
    for u in ("alice@localhost", "bob@localhost"):
        msgs = mailbox(server, u)
        assert [stored_body(m) for m in msgs] == [body, body2], u


def test_helo_gives_with_smtp(server):
    body = make_body("helo")
    with smtp_client(server) as cl:
        code, msg = cl.helo(HELO_NAME)
        assert (code, msg) == (250, b"mx.test")
        assert cl.sendmail(SENDER, ["alice@localhost"], body) == {}
    (msg,) = mailbox(server)
    _, rec, rest = split_trace(msg)
    assert rec["proto"] == "SMTP"
    assert rec["helo"] == HELO_NAME
    assert rec["for"] == "alice@localhost"
    assert rest == body


def test_8bitmime_body_stored_exactly(server):
    body = (b"Subject: =?utf-8?q?8bit?=\r\nContent-Type: text/plain; "
            b"charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            b"Gr\xc3\xbc\xc3\x9fe \xe2\x98\x83 caf\xc3\xa9\r\n"
            b"raw high octets \x80\x81\xfe\xff\r\n"
            b".\xc3\xa9 dot then 8bit\r\n")
    with smtp_client(server) as cl:
        assert cl.sendmail(SENDER, ["alice@localhost"], body,
                           mail_options=["BODY=8BITMIME"]) == {}
    (msg,) = mailbox(server)
    assert stored_body(msg) == body


UTF8_SENDER = "j\u00f6s\u00e9@example.org"
UTF8_USER = "j\u00f6s\u00e9@localhost"


def _send_utf8(server):
    body = ("Subject: utf8 \u2603\r\nFrom: %s\r\n\r\nh\u00e9llo\r\n"
            % UTF8_SENDER).encode("utf-8")
    with smtp_client(server) as cl:
        assert cl.sendmail(UTF8_SENDER, ["alice@localhost"], body,
                           mail_options=["SMTPUTF8", "BODY=8BITMIME"]) == {}
    (msg,) = mailbox(server)
    return body, msg


def test_smtputf8_sender(server):
    body, msg = _send_utf8(server)
    rp, rec, rest = split_trace(msg)
    assert rp == UTF8_SENDER
    assert rec["for"] == "alice@localhost"
    assert rest == body


def test_smtputf8_received_with_utf8esmtp(server):
    """PROTOCOL.md: protocol UTF8SMTP with SMTPUTF8."""
    _, msg = _send_utf8(server)
    assert split_trace(msg)[1]["proto"] == "UTF8SMTP"


def test_smtputf8_utf8_local_part_user(server):
    r = server.cli("user", "add", UTF8_USER, stdin="secret\n", check=False)
    if r.returncode != 0:
        pytest.skip("CLI refuses a UTF-8 user: %s" % r.stderr.strip())
    body = ("Subject: to %s\r\n\r\nbonjour\r\n" % UTF8_USER).encode()
    with SMTPConn(server) as c:
        c.ehlo()
        expect(c.cmd("MAIL FROM:<%s> SMTPUTF8" % SENDER), "250 2.1.0")
        expect(c.cmd("RCPT TO:<%s>" % UTF8_USER), "250 2.1.5")
        expect_stored(c.data(body))
        # without SMTPUTF8 the same address is refused
        expect(c.cmd("MAIL FROM:<%s>" % SENDER), "250 2.1.0")
        r = c.cmd("RCPT TO:<%s>" % UTF8_USER)
        assert r.code in (501, 553), r
    msgs = pop3_messages(server, UTF8_USER)
    assert len(msgs) == 1
    rp, rec, rest = split_trace(msgs[0])
    assert rec["for"] == UTF8_USER
    assert rest == body
    assert_empty(server)


BDAT_CONTENT = (make_body("bdat") + b".leading dot kept\r\n"
                b"\r\n.\r\n"  # not a terminator in BDAT
                b"..two dots kept\r\nlast line\r\n")


def bdat_chunks():
    """BDAT_CONTENT in 3 chunks; one boundary falls between CR and LF."""
    cut1 = BDAT_CONTENT.index(b"\r\n", 30) + 1
    cut2 = cut1 + 17
    chunks = [BDAT_CONTENT[:cut1], BDAT_CONTENT[cut1:cut2],
              BDAT_CONTENT[cut2:]]
    assert chunks[1].startswith(b"\n")
    return chunks


def send_chunks(c, chunks):
    total = 0
    for ch in chunks:
        c.send(b"BDAT %d\r\n" % len(ch) + ch)
        total += len(ch)
        expect_octets(c.reply(), len(ch), total)


def check_bdat_stored(server, n):
    msgs = mailbox(server)
    assert len(msgs) == n
    for m in msgs:
        rp, rec, rest = split_trace(m)
        assert rest == BDAT_CONTENT
        assert rec["proto"] == "ESMTP"
        assert rec["for"] == "alice@localhost"


def test_bdat_chunks(server):
    chunks = bdat_chunks()
    with SMTPConn(server) as c:
        c.ehlo()
        # several chunks, the last with LAST
        c.begin(["alice@localhost"], ehlo=False)
        send_chunks(c, chunks[:-1])
        c.send(b"BDAT %d LAST\r\n" % len(chunks[-1]) + chunks[-1])
        expect_stored(c.reply())
        # the whole transaction pipelined in one send
        c.send(b"MAIL FROM:<%s>\r\nRCPT TO:<alice@localhost>\r\n"
               % SENDER.encode()
               + b"".join(b"BDAT %d\r\n" % len(ch) + ch for ch in chunks[:-1])
               + b"BDAT %d LAST\r\n" % len(chunks[-1]) + chunks[-1]
               + b"NOOP\r\n")
        expect(c.reply(), "250 2.1.0")
        expect(c.reply(), "250 2.1.5")
        total = 0
        for ch in chunks[:-1]:
            total += len(ch)
            expect_octets(c.reply(), len(ch), total)
        expect_stored(c.reply())
        expect(c.reply(), "250", OK)
    check_bdat_stored(server, 2)


def test_bdat_0_last(server):
    chunks = bdat_chunks()
    with SMTPConn(server) as c:
        c.ehlo()
        # pipelined: BDAT 0 LAST followed by another command
        c.begin(["alice@localhost"], ehlo=False)
        send_chunks(c, chunks)
        c.send(b"BDAT 0 LAST\r\nNOOP\r\n")
        expect_stored(c.reply())
        expect(c.reply(), "250", OK)
        # alone: the client waits for the reply before sending more
        c.begin(["alice@localhost"], ehlo=False)
        send_chunks(c, chunks)
        c.send(b"BDAT 0 LAST\r\n")
        expect_stored(c.reply())
    check_bdat_stored(server, 2)


def test_bdat_bare_cr_refused(server):
    """BDAT content follows the same line rules as DATA: a bare CR (also
    one that ends the last chunk) or bare LF refuses the message whole."""
    for body in (b"Subject: x\r\n\r\nab\r", b"Subject: x\r\n\r\na\rb\r\n",
                 b"Subject: x\r\n\r\na\nb\r\n"):
        with SMTPConn(server) as c:
            c.begin(["alice@localhost"])
            c.send(b"BDAT %d LAST\r\n" % len(body) + body)
            expect(c.reply(), "500 5.5.2", "500 5.5.2 Bare CR or LF in message")
            expect(c.cmd("NOOP"), "250")
    assert pop3_stat(server)[0] == 0


def test_bdat_without_final_crlf_is_completed(server):
    """A BDAT message need not end in CRLF; the stored one does, so POP3
    sizes and the final "." come out right."""
    body = b"Subject: x\r\n\r\nno newline at the end"
    with SMTPConn(server) as c:
        c.begin(["alice@localhost"])
        c.send(b"BDAT %d LAST\r\n" % len(body) + body)
        expect_stored(c.reply())
    (msg,) = pop3_messages(server)
    assert stored_body(msg) == body + b"\r\n"


@pytest.mark.skipif(shutil.which("swaks") is None, reason="no swaks")
def test_swaks_delivers(server):
    host, port = server.addr("smtp")
    r = subprocess.run(["swaks", "--to", "alice@localhost", "--server",
                        "%s:%d" % (host, port), "--timeout", "20",
                        "--header", "Subject: swaks-test"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    (msg,) = mailbox(server)
    rp, rec, rest = split_trace(msg)
    assert rec["proto"] == "ESMTP"
    assert b"Subject: swaks-test\r\n" in rest
    assert b"X-Mailer: swaks" in rest


# ====================================================== pipelining

def test_pipelining_mail_rcpt_rcpt_data_in_one_send(server):
    body = make_body("pipelined")
    with SMTPConn(server) as c:
        c.ehlo()
        c.send("MAIL FROM:<%s>\r\nRCPT TO:<alice@localhost>\r\n"
               "RCPT TO:<nobody@localhost>\r\nRCPT TO:<bob@localhost>\r\n"
               "DATA\r\n" % SENDER)
        expect(c.reply(), "250 2.1.0", "250 2.1.0 Ok")
        expect(c.reply(), "250 2.1.5", "250 2.1.5 Ok")
        expect(c.reply(), "550 5.1.1")
        expect(c.reply(), "250 2.1.5", "250 2.1.5 Ok")
        expect(c.reply(), "354", "354 End data with <CR><LF>.<CR><LF>")
        c.send(body + b".\r\n")
        expect_stored(c.reply())
        assert c.no_pending()
    for u in ("alice@localhost", "bob@localhost"):
        (msg,) = mailbox(server, u)
        assert stored_body(msg) == body


def test_pipelining_transactions_replies_in_order(server):
    b1, b2, b3 = (make_body("order-%d" % i) for i in (1, 2, 3))
    payload = (
        b"EHLO client.test\r\n"
        b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<alice@localhost>\r\n"
        b"DATA\r\n" + b1 + b".\r\n"
        b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<bob@localhost>\r\n"
        b"DATA\r\n" + b2 + b".\r\n"
        b"RSET\r\n"
        b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<alice@localhost>\r\n"
        b"RCPT TO:<bob@localhost>\r\nDATA\r\n" + b3 + b".\r\n"
        b"NOOP\r\nQUIT\r\n")
    with SMTPConn(server) as c:
        c.send(payload)
        got = [c.reply() for _ in range(17)]
        assert c.eof()
    want = ["250", "250 2.1.0", "250 2.1.5", "354", "STORED",
            "250 2.1.0", "250 2.1.5", "354", "STORED",
            OK,
            "250 2.1.0", "250 2.1.5", "250 2.1.5", "354", "STORED",
            OK, "221 2.0.0 Bye"]
    for i, (w, g) in enumerate(zip(want, got)):
        if w == "STORED":
            expect_stored(g)
        elif w in (OK, "221 2.0.0 Bye"):
            assert g.last == w, (i, got)
        else:
            assert g.startswith(w), (i, got)
    for u, bodies in (("alice@localhost", [b1, b3]),
                      ("bob@localhost", [b2, b3])):
        assert [stored_body(m) for m in mailbox(server, u)] == bodies, u


def test_commands_split_byte_by_byte(server):
    body = b"Subject: slow\r\n\r\na\r\n.dot\r\nend\r\n"

    def trickle(c, data):
        for i in range(len(data)):
            c.send(data[i:i + 1])
            time.sleep(0.002)

    with SMTPConn(server) as c:
        trickle(c, b"EHLO client.test\r\n")
        expect(c.reply(), "250")
        trickle(c, b"MAIL FROM:<sender@example.org>\r\n")
        expect(c.reply(), "250 2.1.0")
        trickle(c, b"RCPT TO:<alice@localhost>\r\n")
        expect(c.reply(), "250 2.1.5")
        trickle(c, b"DATA\r\n")
        expect(c.reply(), "354")
        trickle(c, b"Subject: slow\r\n\r\na\r\n..dot\r\nend\r\n.\r\n")
        expect_stored(c.reply())
        trickle(c, b"NOOP\r\n")
        expect(c.reply(), "250", OK)
    (msg,) = mailbox(server)
    assert stored_body(msg) == body


# ====================================================== VRFY/HELP/NOOP/RSET

def test_vrfy_never_confirms(server):
    with SMTPConn(server) as c:
        c.ehlo()
        for arg in ("alice@localhost", "<alice@localhost>", "alice",
                    "nobody@localhost", "<nobody@localhost>", "nobody",
                    "someone@remote.test"):
            expect(c.cmd("VRFY " + arg), "252 2.5.0")
        expect(c.cmd("NOOP"), "250", OK)


def test_help_noop_quit(server):
    with SMTPConn(server) as c:
        expect(c.cmd("HELP"), "214 2.0.0")
        expect(c.cmd("NOOP"), "250", OK)
        c.ehlo()
        expect(c.cmd("HELP"), "214 2.0.0")
        expect(c.cmd("NOOP"), "250", OK)
        expect(c.cmd("QUIT"), "221", "221 2.0.0 Bye")
        assert c.eof()


def test_rset_clears_transaction(server):
    with SMTPConn(server) as c:
        c.begin(["alice@localhost"])
        expect(c.cmd("RSET"), "250", OK)
        expect(c.cmd("RCPT TO:<bob@localhost>"), "503 5.5.1")
        expect(c.cmd("DATA"), "503 5.5.1")
        # a fresh transaction works and alice was really dropped
        body = make_body("after-rset")
        expect_stored(c.deliver(["bob@localhost"], body))
    assert_empty(server, "alice@localhost")
    (msg,) = mailbox(server, "bob@localhost")
    assert stored_body(msg) == body


# ====================================================== bad input

def test_command_line_512_ok_513_too_long(server):
    body = make_body("line-limit")
    with SMTPConn(server) as c:
        c.ehlo()
        line512 = pad_line("NOOP ", 512)
        assert len(line512) == 512
        c.send(line512)
        expect(c.reply(), "250", OK)
        c.begin(["alice@localhost"], ehlo=False)
        # 513 octets: a RCPT for bob that must not be taken into account
        line513 = pad_line("RCPT TO:<bob@localhost> X-PAD=", 513)
        assert len(line513) == 513
        c.send(line513 + b"NOOP\r\n")
        expect(c.reply(), "500 5.5.2", "500 5.5.2 Line too long")
        expect(c.reply(), "250", OK)
        # far longer: still exactly one error reply
        c.send(pad_line("RCPT TO:<bob@localhost> X-PAD=", 5000)
               + b"NOOP\r\n")
        expect(c.reply(), "500 5.5.2", "500 5.5.2 Line too long")
        expect(c.reply(), "250", OK)
        assert c.no_pending()
        expect_stored(c.data(body))
    assert_empty(server, "bob@localhost")
    (msg,) = mailbox(server)
    assert stored_body(msg) == body
    assert split_trace(msg)[1]["for"] == "alice@localhost"


def test_unknown_command(server):
    with SMTPConn(server) as c:
        for cmd in ("FOOBAR", "MAILX FROM:<a@example.org>", "XYZZY 1 2 3"):
            expect(c.cmd(cmd), "500 5.5.1", "500 5.5.1 Command unrecognized")
        c.ehlo()
        expect(c.cmd("FOOBAR"), "500 5.5.1", "500 5.5.1 Command unrecognized")
        expect(c.cmd("NOOP"), "250", OK)
    assert_empty(server)


def test_commands_before_helo(server):
    with SMTPConn(server) as c:
        expect(c.cmd("MAIL FROM:<%s>" % SENDER), "503 5.5.1")
        expect(c.cmd("RCPT TO:<alice@localhost>"), "503 5.5.1")
        expect(c.cmd("DATA"), "503 5.5.1")
        expect(c.cmd("NOOP"), "250", OK)
        # nothing of the above counts once EHLO is given
        c.ehlo()
        expect(c.cmd("RCPT TO:<alice@localhost>"), "503 5.5.1")
        expect(c.cmd("DATA"), "503 5.5.1")
    assert_empty(server)


def test_bad_command_sequence(server):
    # RCPT/DATA before MAIL, DATA before RCPT, MAIL twice
    body = make_body("sequence")
    with SMTPConn(server) as c:
        c.ehlo()
        expect(c.cmd("RCPT TO:<alice@localhost>"), "503 5.5.1")
        expect(c.cmd("DATA"), "503 5.5.1")
        expect(c.cmd("MAIL FROM:<%s>" % SENDER), "250 2.1.0")
        expect(c.cmd("DATA"), "503 5.5.1")
        expect(c.cmd("MAIL FROM:<other@example.org>"), "503 5.5.1")
        # the first transaction is intact
        expect(c.cmd("RCPT TO:<alice@localhost>"), "250 2.1.5")
        expect_stored(c.data(body))
    (msg,) = mailbox(server)
    rp, _, rest = split_trace(msg)
    assert rp == SENDER
    assert rest == body
    assert_empty(server, "bob@localhost")


def test_bdat_out_of_sequence(server):
    body = make_body("bdat-sequence")
    with SMTPConn(server) as c:
        # before EHLO, before MAIL, before RCPT: 503, and the chunk's
        # octets are read and dropped (RFC 3030 2), not taken as commands
        c.send(b"BDAT 6\r\nRSET\r\nNOOP\r\n")
        expect(c.reply(), "503 5.5.1")
        expect(c.reply(), "250", OK)
        c.ehlo()
        c.send(b"BDAT 6\r\nRSET\r\nNOOP\r\n")
        expect(c.reply(), "503 5.5.1")
        expect(c.reply(), "250", OK)
        expect(c.cmd("MAIL FROM:<%s>" % SENDER), "250 2.1.0")
        c.send(b"BDAT 6 LAST\r\nRSET\r\nNOOP\r\n")
        expect(c.reply(), "503 5.5.1")
        expect(c.reply(), "250", OK)
        # zero-length chunks out of sequence, each reply awaited alone
        expect(c.cmd("BDAT 0 LAST"), "503 5.5.1")
        expect(c.cmd("NOOP"), "250", OK)
    with SMTPConn(server) as c:
        expect(c.cmd("BDAT 0 LAST"), "503 5.5.1")
        c.ehlo()
        expect(c.cmd("BDAT 0"), "503 5.5.1")
        expect_stored(c.deliver(["alice@localhost"], body))
    assert [stored_body(m) for m in mailbox(server)] == [body]
    assert_empty(server, "bob@localhost")


def test_command_ending_in_bare_lf(server):
    body = make_body("bare-lf-cmd")
    with SMTPConn(server) as c:
        c.send(b"EHLO client.test\n")
        expect(c.reply(), "500 5.5.2", "500 5.5.2 Line must end with CRLF")
        c.ehlo()
        c.begin(["alice@localhost"], ehlo=False)
        c.send(b"RCPT TO:<bob@localhost>\nNOOP\r\n")
        expect(c.reply(), "500 5.5.2", "500 5.5.2 Line must end with CRLF")
        expect(c.reply(), "250", OK)
        assert c.no_pending()
        expect_stored(c.data(body))
    assert_empty(server, "bob@localhost")
    assert [stored_body(m) for m in mailbox(server)] == [body]


def test_nul_in_command(server):
    body = make_body("nul-cmd")
    with SMTPConn(server) as c:
        expect(c.cmd(b"NO\x00OP"), "500 5.5.2")
        c.ehlo()
        expect(c.cmd(b"MAIL FROM:<%s>\x00" % SENDER.encode()), "500 5.5.2")
        expect(c.cmd("MAIL FROM:<%s>" % SENDER), "250 2.1.0")
        expect(c.cmd(b"RCPT TO:<bob@localhost>\x00"), "500 5.5.2")
        expect(c.cmd(b"RCPT TO:<bob\x00@localhost>"), "500 5.5.2")
        expect(c.cmd(b"\x00\x00\x00"), "500 5.5.2")
        expect(c.cmd("NOOP"), "250", OK)
        expect(c.cmd("RCPT TO:<alice@localhost>"), "250 2.1.5")
        expect_stored(c.data(body))
    assert_empty(server, "bob@localhost")
    assert [stored_body(m) for m in mailbox(server)] == [body]


MALFORMED = [
    "alice@localhost",                 # missing <>
    "<alice@localhost",                # missing >
    "alice@localhost>",                # missing <
    "<alice@>",
    "<@localhost>",
    "<alice bob@localhost>",
    "<alice@bob@localhost>",
    "<@example.org:alice@localhost>",  # source route
    "<@a.example,@b.example:alice@localhost>",
    "<alice@[127.0.0.1>",              # unclosed address literal
    "<alice@[1.2.3]>",                 # no IPv4 address
    "<alice@[x-tag:1.2.3.4]>",         # general address literal
    "<.alice@localhost>",
    "<alice..x@localhost>",
    "<alice@-localhost>",
    "<alice@local_host>",
]
# UTF-8 without SMTPUTF8: refused, as a syntax error (501) or with RFC 6531
# 3.4's 553 5.6.7; PROTOCOL.md does not single this case out
UTF8_ADDR = "<j\u00f6s\u00e9@localhost>"


def test_malformed_rcpt_addresses(server):
    bad = []
    with SMTPConn(server) as c:
        c.begin([])
        for a in MALFORMED:
            r = c.cmd("RCPT TO:" + a)
            if r.last != "501 5.1.3 Bad recipient address syntax":
                bad.append((a, r.lines))
        r = c.cmd("RCPT TO:" + UTF8_ADDR)
        assert r.startswith("501 5.1.3") or r.startswith("553 5.6.7"), r
        expect(c.cmd("DATA"), "503 5.5.1")  # no recipient was taken
    assert not bad, bad
    assert_empty(server)
    # the null path is not a recipient either
    with SMTPConn(server) as c:
        c.begin([])
        expect(c.cmd("RCPT TO:<>"), "501 5.1.3")


def test_malformed_mail_addresses_and_params(server):
    bad = []
    with SMTPConn(server) as c:
        c.ehlo()
        for a in MALFORMED:
            r = c.cmd("MAIL FROM:" + a)
            if r.last != "501 5.1.7 Bad sender address syntax":
                bad.append((a, r.lines))
        r = c.cmd("MAIL FROM:" + UTF8_ADDR)
        assert r.startswith("501 5.1.7") or r.startswith("553 5.6.7"), r
        expect(c.cmd("RCPT TO:<alice@localhost>"), "503 5.5.1")
    assert not bad, bad
    with SMTPConn(server) as c:
        c.ehlo()
        for p in (" FOO=BAR", " SIZE=abc", " BODY=9BIT", " SIZE"):
            r = c.cmd("MAIL FROM:<%s>%s" % (SENDER, p))
            assert r.startswith("501 5.5.4") or r.startswith("555 5.5.4"), \
                (p, r)
        expect(c.cmd("RCPT TO:<alice@localhost>"), "503 5.5.1")
        # the null sender is fine
        body = make_body("null-sender")
        expect(c.cmd("MAIL FROM:<>"), "250 2.1.0")
        expect(c.cmd("RCPT TO:<alice@localhost>"), "250 2.1.5")
        expect_stored(c.data(body))
    (msg,) = mailbox(server)
    rp, _, rest = split_trace(msg)
    assert rp == "" and rest == body
    assert msg.startswith(b"Return-Path: <>\r\n")


def test_unknown_local_user(server):
    body = make_body("unknown-user")
    with SMTPConn(server) as c:
        c.begin([])
        expect(c.cmd("RCPT TO:<nobody@localhost>"), "550 5.1.1",
               "550 5.1.1 <nobody@localhost>: Recipient address rejected: "
               "User unknown")
        expect(c.cmd("RCPT TO:<nobody@example.org>"), "550 5.1.1",
               "550 5.1.1 <nobody@example.org>: Recipient address rejected: "
               "User unknown")
        expect(c.cmd("DATA"), "503 5.5.1")
        expect(c.cmd("RCPT TO:<alice@localhost>"), "250 2.1.5")
        expect_stored(c.data(body))
    (msg,) = mailbox(server)
    _, rec, rest = split_trace(msg)
    assert rest == body and rec["for"] == "alice@localhost"
    assert_empty(server, "bob@localhost")


def test_relay_denied(server):
    with SMTPConn(server) as c:
        c.begin([])
        for a in ("someone@remote.test", "alice@sub.localhost",
                  "alice@localhost.remote.test"):
            expect(c.cmd("RCPT TO:<%s>" % a), "554 5.7.1",
                   "554 5.7.1 <%s>: Relay access denied" % a)
        expect(c.cmd("DATA"), "503 5.5.1")
    assert_empty(server)


def test_max_recipients(make_server):
    users = ("alice@localhost", "bob@localhost", "carol@localhost",
             "dave@localhost")
    s = make_server(extra={"smtp": {"max_recipients": "3"}}, users=users)
    body = make_body("max-rcpt")
    with SMTPConn(s) as c:
        c.begin(users[:3])
        expect(c.cmd("RCPT TO:<dave@localhost>"), "452 4.5.3",
               "452 4.5.3 Too many recipients")
        expect(c.cmd("RCPT TO:<dave@localhost>"), "452 4.5.3")
        expect_stored(c.data(body))
    for u in users[:3]:
        (msg,) = mailbox(s, u)
        assert stored_body(msg) == body
    assert_empty(s, "dave@localhost")


SIZE_LIMIT = 10000


def test_size_param_over_limit(make_server):
    s = make_server(extra={"smtp": {"max_message_size": str(SIZE_LIMIT)}})
    body = make_body("size-ok")
    with SMTPConn(s) as c:
        r = c.ehlo()
        assert "250-SIZE %d" % SIZE_LIMIT in r.lines
        expect(c.cmd("MAIL FROM:<%s> SIZE=%d" % (SENDER, SIZE_LIMIT + 1)),
               "552 5.3.4", "552 5.3.4 Message size exceeds fixed limit")
        expect(c.cmd("MAIL FROM:<%s> SIZE=999999999999" % SENDER),
               "552 5.3.4", "552 5.3.4 Message size exceeds fixed limit")
        expect(c.cmd("RCPT TO:<alice@localhost>"), "503 5.5.1")
        expect(c.cmd("MAIL FROM:<%s> SIZE=%d" % (SENDER, len(body))),
               "250 2.1.0")
        expect(c.cmd("RCPT TO:<alice@localhost>"), "250 2.1.5")
        expect_stored(c.data(body))
    assert [stored_body(m) for m in mailbox(s)] == [body]


def test_body_over_limit_without_size(make_server):
    s = make_server(extra={"smtp": {"max_message_size": str(SIZE_LIMIT)}})
    big = make_body("too-big", lines=2000)
    assert len(big) > 3 * SIZE_LIMIT
    small = make_body("small-after-big")
    with SMTPConn(s) as c:
        c.begin(["alice@localhost", "bob@localhost"])
        expect(c.data(big), "552 5.3.4",
               "552 5.3.4 Message size exceeds fixed limit")
        expect(c.cmd("NOOP"), "250", OK)
        # the transaction is over
        expect(c.cmd("RCPT TO:<alice@localhost>"), "503 5.5.1")
        # BDAT over the limit: refused, and the chunk octets are consumed
        c.begin(["alice@localhost"], ehlo=False)
        c.send(b"BDAT %d LAST\r\n" % len(big) + big)
        expect(c.reply(), "552 5.3.4")
        expect(c.cmd("NOOP"), "250", OK)
        assert c.no_pending()
        expect_stored(c.deliver(["alice@localhost"], small))
    assert [stored_body(m) for m in mailbox(s)] == [small]
    assert_empty(s, "bob@localhost")


def test_data_line_1000_ok_1001_too_long(server):
    ok_line = b"x" * 998 + b"\r\n"
    long_line = b"y" * 999 + b"\r\n"
    good = make_body("line-1000", extra=ok_line)
    bad = make_body("line-1001", extra=long_line + b"after\r\n")
    huge = make_body("line-100k", extra=b"z" * 100000 + b"\r\nafter\r\n")
    with SMTPConn(server) as c:
        c.begin(["alice@localhost"])
        expect(c.data(bad), "500 5.5.2", "500 5.5.2 Line too long in message")
        expect(c.cmd("NOOP"), "250", OK)
        c.begin(["alice@localhost"], ehlo=False)
        expect(c.data(huge), "500 5.5.2",
               "500 5.5.2 Line too long in message")
        expect(c.cmd("NOOP"), "250", OK)
        assert c.no_pending()
        c.begin(["alice@localhost"], ehlo=False)
        expect_stored(c.data(good))
    msgs = mailbox(server)
    assert [stored_body(m) for m in msgs] == [good]


SMUGGLE_TAIL = (b"MAIL FROM:<x@y>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\n"
                b"smuggled\r\n")


@pytest.mark.parametrize("sep", [b"\n.\r\n", b"\r.\r\n", b"\n.\n"],
                         ids=["LF.CRLF", "CR.CRLF", "LF.LF"])
def test_smtp_smuggling(server, sep):
    head = b"Subject: smuggle\r\n\r\nhello"
    with SMTPConn(server) as c:
        # form 1 (as in the issue): the smuggled part ends with its own
        # CRLF.CRLF, followed by another CRLF.CRLF
        c.begin(["alice@localhost"])
        expect(c.cmd("DATA"), "354")
        c.send(head + sep + SMUGGLE_TAIL + b".\r\n" + b"\r\n.\r\n"
               + b"NOOP\r\n")
        replies = []
        while True:
            r = c.reply()
            replies.append(r)
            if r.last == OK:
                break
        expect(replies[0], "500 5.5.2", "500 5.5.2 Bare CR or LF in message")
        # what follows the real end of the message ("\r\n" and ".\r\n")
        # may only draw error replies, never a 2xx/3xx
        for r in replies[1:-1]:
            assert r.code >= 500, replies
        assert len(replies) <= 4, replies
        # form 2 (the real attack): the client's terminator ends it
        c.begin(["alice@localhost"], ehlo=False)
        expect(c.cmd("DATA"), "354")
        c.send(head + sep + SMUGGLE_TAIL + b"\r\n.\r\nNOOP\r\n")
        expect(c.reply(), "500 5.5.2", "500 5.5.2 Bare CR or LF in message")
        expect(c.reply(), "250", OK)
        assert c.no_pending()
        expect(c.cmd("NOOP"), "250", OK)
    assert_empty(server)


def test_bare_lf_or_cr_in_body_refused(server):
    good = make_body("clean")
    bodies = [b"Subject: lf\r\n\r\nline1\nline2\r\n",
              b"Subject: cr\r\n\r\nline1\rline2\r\n",
              b"Subject: crcr\r\n\r\nline1\r\r\nline2\r\n",
              b"Subject: lf-hdr\nX: y\r\n\r\nbody\r\n"]
    with SMTPConn(server) as c:
        c.ehlo()
        for b in bodies:
            c.begin(["alice@localhost"], ehlo=False)
            expect(c.cmd("DATA"), "354")
            c.send(b + b".\r\n")
            expect(c.reply(), "500 5.5.2",
                   "500 5.5.2 Bare CR or LF in message")
            expect(c.cmd("NOOP"), "250", OK)
        # same through BDAT
        for b in bodies[:2]:
            c.begin(["alice@localhost"], ehlo=False)
            c.send(b"BDAT %d LAST\r\n" % len(b) + b)
            expect(c.reply(), "500 5.5.2",
                   "500 5.5.2 Bare CR or LF in message")
            expect(c.cmd("NOOP"), "250", OK)
        expect_stored(c.deliver(["alice@localhost"], good))
    assert [stored_body(m) for m in mailbox(server)] == [good]


def test_disconnect_mid_data(server):
    partials = [b"Subject: cut\r\n\r\nhalf a li",
                b"Subject: cut\r\n\r\nwhole line\r\n",
                b"Subject: cut\r\n\r\nwhole line\r\n.",
                b"Subject: cut\r\n\r\nwhole line\r\n.\r"]
    for p in partials:
        c = SMTPConn(server)
        c.begin(["alice@localhost", "bob@localhost"])
        expect(c.cmd("DATA"), "354")
        c.send(p)
        time.sleep(0.05)
        c.close()
    # mid-BDAT: a 1000-octet chunk cut short, and a complete non-LAST one
    c = SMTPConn(server)
    c.begin(["alice@localhost"])
    c.send(b"BDAT 1000 LAST\r\n" + b"Subject: cut\r\n\r\n" + b"x" * 100)
    time.sleep(0.05)
    c.close()
    c = SMTPConn(server)
    c.begin(["alice@localhost"])
    chunk = b"Subject: cut\r\n\r\nbody\r\n"
    c.send(b"BDAT %d\r\n" % len(chunk) + chunk)
    expect(c.reply(), "250 2.0.0")
    c.close()
    time.sleep(0.3)
    body = make_body("after-disconnects")
    with smtp_client(server) as cl:
        assert cl.sendmail(SENDER, ["alice@localhost"], body) == {}
    assert [stored_body(m) for m in mailbox(server)] == [body]
    assert_empty(server, "bob@localhost")


def _deliver_ok(server, tag):
    body = make_body(tag)
    with smtp_client(server) as cl:
        assert cl.sendmail(SENDER, ["bob@localhost"], body) == {}
    return body


def test_binary_garbage(server):
    rnd = random.Random(1234)
    # no line end at all
    garbage = bytes(rnd.randrange(256) for _ in range(4096))
    garbage = garbage.replace(b"\r", b"").replace(b"\n", b"") + b"\x00"
    c1 = SMTPConn(server)
    try:
        c1.send(garbage)
    except OSError:
        pass
    # with line ends: every line is an error; 20 errors close the session
    lines = b"".join(bytes(rnd.randrange(256) for _ in range(60))
                     .replace(b"\r", b"").replace(b"\n", b"")
                     + b"\x00\r\n" for _ in range(60))
    c2 = SMTPConn(server)
    try:
        c2.send(lines)
    except OSError:
        pass
    # meanwhile other clients are served
    b1 = _deliver_ok(server, "during-garbage")
    # c1: an error reply or a close, once the line ends
    try:
        c1.send(b"\r\n")
    except OSError:
        pass
    try:
        r = c1.reply()
        assert r.code >= 400, r
    except (EOFError, ConnectionResetError):
        pass  # closed: allowed
    c1.close()
    # c2: only error replies, and the session ends
    assert c2.eof(timeout=TIMEOUT), "session with garbage lines not closed"
    for line in c2.buf.split(b"\r\n"):
        assert line == b"" or line[:1] in (b"4", b"5"), c2.buf
    c2.close()
    b2 = _deliver_ok(server, "after-garbage")
    assert [stored_body(m) for m in mailbox(server, "bob@localhost")] == \
        [b1, b2]
    assert_empty(server, "alice@localhost")


def test_megabyte_without_newline(server):
    c = SMTPConn(server)
    c.begin(["alice@localhost"])
    sent = {"err": None}

    def blast():
        try:
            c.send(b"A" * (1 << 20))
            c.send(b"\r\nNOOP\r\n")
        except OSError as e:  # closed by the server: allowed
            sent["err"] = e

    t = threading.Thread(target=blast)
    t.start()
    b1 = _deliver_ok(server, "during-megabyte")
    t.join(TIMEOUT * 3)
    assert not t.is_alive(), "server neither read the long line nor closed"
    replies = []
    closed = False
    try:
        while True:
            replies.append(c.reply())
            if replies[-1].last == OK:
                break
    except (EOFError, ConnectionResetError):
        closed = True
    c.close()
    if closed:
        assert all(r.startswith("500 5.5.2") for r in replies), replies
        assert len(replies) <= 1, replies
    else:
        assert len(replies) == 2, replies
        expect(replies[0], "500 5.5.2", "500 5.5.2 Line too long")
    b2 = _deliver_ok(server, "after-megabyte")
    assert [stored_body(m) for m in mailbox(server, "bob@localhost")] == \
        [b1, b2]
    assert_empty(server, "alice@localhost")


def test_idle_timeout(make_server):
    s = make_server(extra={"smtp": {"timeout": "1"}})
    idle = SMTPConn(s)
    mid = SMTPConn(s)
    mid.begin(["alice@localhost"])
    expect(mid.cmd("DATA"), "354")
    mid.send(b"Subject: idle\r\n\r\npartial line\r\n")
    for c in (idle, mid):
        r = c.reply()
        expect(r, "421 4.4.2", "421 4.4.2 mx.test Error: timeout exceeded")
        assert c.eof(timeout=5)
        c.close()
    assert_empty(s)
    body = make_body("after-timeout")
    with SMTPConn(s) as c:
        expect_stored(c.deliver(["alice@localhost"], body, ehlo=True))
    assert [stored_body(m) for m in mailbox(s)] == [body]


def test_max_connections_per_ip(make_server):
    s = make_server(extra={"smtp": {"max_connections_per_ip": "2"}})
    c1, c2 = SMTPConn(s), SMTPConn(s)
    c3 = SMTPConn(s, greet=False)
    expect(c3.reply(), "421 4.7.0",
           "421 4.7.0 mx.test Error: too many connections from your address")
    assert c3.eof(timeout=5)
    c3.close()
    c1.close()
    # once c1 is gone, a new connection is accepted
    deadline = time.time() + 10
    while True:
        c4 = SMTPConn(s, greet=False)
        r = c4.reply()
        if r.code == 220:
            break
        expect(r, "421 4.7.0")
        c4.close()
        assert time.time() < deadline, "slot of a closed connection not freed"
        time.sleep(0.1)
    body = make_body("conn-limit")
    expect_stored(c4.deliver(["alice@localhost"], body, ehlo=True))
    expect(c2.cmd("NOOP"), "250", OK)
    c2.close()
    c4.close()
    assert [stored_body(m) for m in mailbox(s)] == [body]


def test_too_many_errors(server):
    with SMTPConn(server) as c:
        for _ in range(19):
            expect(c.cmd("FOOBAR"), "500 5.5.1")
        expect(c.cmd("NOOP"), "250", OK)
        c.send(b"FOOBAR\r\n")
        r = c.reply()
        if r.code == 500:
            r = c.reply()
        expect(r, "421 4.7.0", "421 4.7.0 mx.test Error: too many errors")
        assert c.eof(timeout=5)


def test_store_full(make_server):
    s = make_server(extra={"server": {"max_store_size": "1M"}})
    acked = []
    full = None
    with SMTPConn(s) as c:
        c.ehlo()
        for i in range(16):
            body = make_body("full-%d" % i, lines=1,
                             extra=(b"%07d" % i + b"x" * 990 + b"\r\n") * 300)
            # MAIL, RCPT or the end of DATA may say the store is full
            r = c.cmd("MAIL FROM:<%s>" % SENDER)
            if r.code == 250:
                r = c.cmd("RCPT TO:<alice@localhost>")
                if r.code == 250:
                    r = c.data(body)
            if r.startswith("452 4.3.1"):
                full = r
                break
            expect_stored(r)
            acked.append(body)
        assert full is not None, "store never reported full"
        expect(full, "452 4.3.1", "452 4.3.1 Insufficient system storage")
        expect(c.cmd("RSET"), "250", OK)
        expect(c.cmd("NOOP"), "250", OK)
    print("store full after %d messages of 300 KiB: %r" % (len(acked), full))
    assert acked, "not even one 300 KiB message fit in 1M"
    assert [stored_body(m) for m in mailbox(s)] == acked
    with SMTPConn(s) as c:
        c.ehlo()
        expect(c.cmd("NOOP"), "250", OK)
    assert_empty(s, "bob@localhost")


def test_rcpt_harvesting_ends_at_error_limit(server):
    """Unknown recipients count as errors: probing for addresses ends at
    the limit like any other abuse, and nothing was stored."""
    with SMTPConn(server) as c:
        c.begin([], ehlo=True)
        for i in range(19):
            expect(c.cmd("RCPT TO:<guess%d@localhost>" % i), "550 5.1.1")
        c.send(b"RCPT TO:<guess19@localhost>\r\n")
        expect(c.reply(), "550 5.1.1")
        expect(c.reply(), "421 4.7.0")
        assert c.eof()
    assert pop3_stat(server)[0] == 0
