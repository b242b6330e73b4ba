"""SMTP STARTTLS (RFC 3207) and AUTH over it.

The 220 goes out in clear, then the handshake; whatever the client
pipelined behind STARTTLS is dropped unread (CVE-2011-0411); the session
starts over (EHLO again); the capabilities after TLS list AUTH and no
STARTTLS; Received: says ESMTPS / ESMTPSA (RFC 3848) and the TLS in use."""
import os
import poplib
import smtplib
import socket
import ssl

import pytest

HOST = "mx.test"
READY = "220 2.0.0 Ready to start TLS"
REQUIRE = {"smtp": {"require_tls_for_auth": "yes"}}


def context(server):
    return ssl.create_default_context(
        cafile=os.path.join(server.data, "selfsigned-cert.pem"))


class Conn:
    """A raw SMTP connection that can turn into TLS."""

    def __init__(self, server, port="smtp", source=None):
        self.sock = socket.create_connection(
            server.addr(port), timeout=10,
            source_address=(source, 0) if source else None)
        self.buf = b""
        assert self.reply()[0].startswith("220 ")

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode()

    def reply(self):
        lines = [self.line()]
        while lines[-1][3:4] == "-":
            lines.append(self.line())
        return lines

    def cmd(self, text):
        self.sock.sendall(text.encode() + b"\r\n")
        return self.reply()

    def starttls(self, server):
        assert self.buf == b"", self.buf
        self.sock = context(server).wrap_socket(self.sock,
                                                server_hostname=HOST)

    def silent(self, seconds=0.5):
        self.sock.settimeout(seconds)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            return True
        finally:
            self.sock.settimeout(10)
        self.buf += data
        return False


def source_or_skip(ip):
    try:
        socket.create_connection(("127.0.0.1", 9), timeout=0.1,
                                 source_address=(ip, 0)).close()
    except ConnectionRefusedError:
        return ip
    except OSError as e:
        pytest.skip("cannot bind %s: %s" % (ip, e))
    return ip


def test_starttls_then_auth_relays_with_esmtpsa(make_server):
    """From 127.0.0.9 (not exempt): no AUTH in clear; after STARTTLS the
    EHLO lists AUTH and not STARTTLS, AUTH works, and the Received: line
    says ESMTPSA and which TLS."""
    s = make_server(extra=REQUIRE)
    src = source_or_skip("127.0.0.9")
    host, port = s.addr("smtp")
    with smtplib.SMTP(host, port, local_hostname="client.test",
                      source_address=(src, 0), timeout=10) as c:
        c.ehlo()
        assert c.has_extn("starttls") and not c.has_extn("auth")
        assert c.docmd("AUTH", "PLAIN") == \
            (530, b"5.7.0 Must issue a STARTTLS command first")
        c._host = HOST  # the name smtplib checks the certificate for
        c.starttls(context=context(s))
        c.ehlo()
        assert not c.has_extn("starttls") and c.has_extn("auth")
        c.login("bob@localhost", "secret")
        c.sendmail("bob@localhost", ["alice@localhost"],
                   b"From: bob@localhost\r\nSubject: tls\r\n\r\nhi\r\n")
    p = poplib.POP3(*s.addr("pop3"))
    p.user("alice@localhost")
    p.pass_("secret")
    msg = b"\r\n".join(p.retr(1)[1])
    p.quit()
    assert b"with ESMTPSA id" in msg, msg
    assert b"(using TLSv1.2 ECDHE-" in msg, msg
    assert b"(authenticated as bob@localhost)" in msg, msg


def test_pipelined_after_starttls_is_dropped(make_server):
    s = make_server()
    c = Conn(s)
    c.cmd("EHLO client.test")
    c.sock.sendall(b"STARTTLS\r\nRSET\r\n")
    assert c.reply() == [READY]
    c.starttls(s)
    assert c.silent(), c.buf
    # The session starts over: EHLO first.
    assert c.cmd("MAIL FROM:<a@b.test>") == \
        ["503 5.5.1 Error: send HELO/EHLO first"]
    ehlo = c.cmd("EHLO client.test")
    assert "250-STARTTLS" not in ehlo and "250-AUTH PLAIN LOGIN" in ehlo
    assert c.cmd("QUIT") == ["221 2.0.0 Bye"]


def test_starttls_refusals(make_server):
    s = make_server()
    c = Conn(s)
    assert c.cmd("STARTTLS") == ["503 5.5.1 Error: send HELO/EHLO first"]
    c.cmd("EHLO client.test")
    assert c.cmd("STARTTLS now") == \
        ["501 5.5.4 Syntax error: no arguments allowed"]
    assert c.cmd("MAIL FROM:<a@b.test>") == ["250 2.1.0 Ok"]
    assert c.cmd("STARTTLS") == \
        ["503 5.5.1 Error: STARTTLS inside a mail transaction"]
    assert c.cmd("RSET") == ["250 2.0.0 Ok"]
    assert c.cmd("STARTTLS") == [READY]
    c.starttls(s)
    c.cmd("EHLO client.test")
    assert c.cmd("STARTTLS") == ["503 5.5.1 Error: TLS already active"]
    assert c.cmd("QUIT") == ["221 2.0.0 Bye"]


def test_mx_over_starttls_says_esmtps(make_server):
    s = make_server()
    host, port = s.addr("smtp")
    with smtplib.SMTP(host, port, local_hostname="client.test",
                      timeout=10) as c:
        c._host = HOST
        c.starttls(context=context(s))
        c.sendmail("x@example.org", ["alice@localhost"],
                   b"Subject: mx\r\n\r\nhi\r\n")
    p = poplib.POP3(*s.addr("pop3"))
    p.user("alice@localhost")
    p.pass_("secret")
    msg = b"\r\n".join(p.retr(1)[1])
    p.quit()
    assert b"with ESMTPS id" in msg, msg
