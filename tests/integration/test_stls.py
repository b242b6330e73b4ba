"""POP3 STLS (RFC 2595) and require_tls_for_auth on POP3.

The STLS reply goes out in clear, then the handshake; whatever the client
pipelined behind STLS is dropped unread (CVE-2011-0411), and nothing
learnt in clear (USER) carries over. With require_tls_for_auth = yes (the
default) passwords are neither offered nor taken before TLS, except from a
tool on the server's own address."""
import os
import socket
import ssl

import pytest

from pop3util import (GREETING, LOGGED_IN, LOGGING_OUT, PASSWORD, USER,
                      capabilities)

HOST = "mx.test"
STLS_OK = b"+OK Begin TLS negotiation."
NEED_TLS = (b"-ERR [AUTH] Plaintext authentication disallowed on "
            b"non-secure connections, use STLS.")
TLS_ACTIVE = b"-ERR Command not permitted when TLS active."
REQUIRE = {"pop3": {"require_tls_for_auth": "yes"}}


def context(server):
    ctx = ssl.create_default_context(
        cafile=os.path.join(server.data, "selfsigned-cert.pem"))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class Line:
    """A POP3 connection over a socket that may turn into TLS."""

    def __init__(self, server, source=None):
        self.sock = socket.create_connection(
            server.addr("pop3"), timeout=10,
            source_address=(source, 0) if source else None)
        self.buf = b""
        assert self.line() == GREETING

    def send(self, data):
        self.sock.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def cmd(self, text):
        self.send(text.encode() + b"\r\n")
        return self.line()

    def capa(self):
        assert self.cmd("CAPA") == b"+OK Capability list follows"
        caps = []
        while (ln := self.line()) != b".":
            caps.append(ln)
        return sorted(caps)

    def starttls(self, server):
        assert self.buf == b"", self.buf  # nothing read past the +OK
        self.sock = context(server).wrap_socket(self.sock,
                                                server_hostname=HOST)

    def silent(self, seconds=0.5):
        """True when the server sends nothing for a while."""
        self.sock.settimeout(seconds)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            return True
        finally:
            self.sock.settimeout(10)
        self.buf += data
        return False


def test_stls_then_login(make_server):
    s = make_server(extra=REQUIRE)
    c = Line(s)
    assert c.capa() == capabilities(0)  # 127.0.0.1 to 127.0.0.1: local
    assert c.cmd("STLS") == STLS_OK
    c.starttls(s)
    assert c.capa() == capabilities(0, stls=False)
    assert c.cmd("STLS") == TLS_ACTIVE
    assert c.cmd("USER " + USER).startswith(b"+OK")
    assert c.cmd("PASS " + PASSWORD) == LOGGED_IN
    assert c.cmd("STAT") == b"+OK 0 0"
    assert c.cmd("QUIT") == LOGGING_OUT


def test_pipelined_after_stls_is_dropped(make_server):
    """STLS and CAPA in one packet: CAPA is read in clear before the
    handshake and must never be answered inside TLS."""
    s = make_server()
    c = Line(s)
    c.send(b"STLS\r\nCAPA\r\n")
    assert c.line() == STLS_OK
    c.starttls(s)
    assert c.silent(), c.buf
    assert c.cmd("QUIT") == LOGGING_OUT


def test_user_given_in_clear_is_forgotten(make_server):
    s = make_server()
    c = Line(s)
    assert c.cmd("USER " + USER).startswith(b"+OK")
    assert c.cmd("STLS") == STLS_OK
    c.starttls(s)
    assert c.cmd("PASS " + PASSWORD) == \
        b"-ERR Command not valid in this state."


def test_stls_argument_and_state(make_server):
    s = make_server()
    c = Line(s)
    assert c.cmd("STLS now") == b"-ERR Too many arguments."
    assert c.cmd("USER " + USER).startswith(b"+OK")
    assert c.cmd("PASS " + PASSWORD) == LOGGED_IN
    assert c.cmd("STLS") == b"-ERR Command not valid in this state."
    assert c.cmd("QUIT") == LOGGING_OUT


def test_no_password_in_clear_from_another_address(make_server):
    """127.0.0.9 reaching 127.0.0.1 is not a local tool: no USER, PASS or
    AUTH before TLS, none offered; after STLS all works."""
    s = make_server(extra=REQUIRE)
    try:
        c = Line(s, source="127.0.0.9")
    except OSError as e:
        pytest.skip("cannot bind 127.0.0.9: %s" % e)
    caps = c.capa()
    assert b"USER" not in caps and b"SASL PLAIN" not in caps
    assert b"STLS" in caps
    assert c.cmd("USER " + USER) == NEED_TLS
    assert c.cmd("PASS " + PASSWORD) == NEED_TLS
    assert c.cmd("AUTH PLAIN") == NEED_TLS
    assert c.cmd("STLS") == STLS_OK
    c.starttls(s)
    assert c.cmd("USER " + USER).startswith(b"+OK")
    assert c.cmd("PASS " + PASSWORD) == LOGGED_IN
    assert c.cmd("QUIT") == LOGGING_OUT


def test_require_tls_off(make_server):
    s = make_server(extra={"pop3": {"require_tls_for_auth": "no"}})
    try:
        c = Line(s, source="127.0.0.9")
    except OSError as e:
        pytest.skip("cannot bind 127.0.0.9: %s" % e)
    assert c.cmd("USER " + USER).startswith(b"+OK")
    assert c.cmd("PASS " + PASSWORD) == LOGGED_IN
    assert c.cmd("QUIT") == LOGGING_OUT
