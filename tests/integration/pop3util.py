"""Helpers for the POP3 integration tests (test_pop3.py, test_fetchmail.py).

Raw-socket POP3 client that keeps the exact bytes on the wire, SMTP delivery
through smtplib, expected stored-message layout from tests/PROTOCOL.md, and
restart helpers around conftest's Server.  Standard library only."""
import os
import re
import smtplib
import socket
import struct
import time

CRLF = b"\r\n"
USER = "alice@localhost"
BOB = "bob@localhost"
PASSWORD = "secret"
SENDER = "sender@example.org"
HELO = "client.test"

# Exact texts from tests/PROTOCOL.md ("POP3 replies").
GREETING = b"+OK pillarbox ready."
LOGGED_IN = b"+OK Logged in."
AUTH_FAILED = b"-ERR [AUTH] Authentication failed."
AUTH_CANCELLED = b"-ERR Authentication cancelled."
BAD_BASE64 = b"-ERR Invalid base64."
IN_USE = b"-ERR [IN-USE] Mailbox is locked by another session."
CAPA_HEAD = b"+OK Capability list follows"
MARKED = b"+OK Marked to be deleted."
LOGGING_OUT = b"+OK Logging out."
UNKNOWN = b"-ERR Unknown command."
BAD_STATE = b"-ERR Command not valid in this state."
MISSING_ARG = b"-ERR Missing argument."
INVALID_NUM = b"-ERR Invalid message number."
NO_SUCH = b"-ERR No such message."
IS_DELETED = b"-ERR Message is deleted."
TOO_LONG = b"-ERR Line too long."
INACTIVITY = b"-ERR Disconnected for inactivity."
TOO_MANY_CONN = b"-ERR [SYS/TEMP] Too many connections from your address."
TOO_MANY_FAILS = b"-ERR [SYS/TEMP] Too many failed logins, try later."
TOO_MANY_ERRORS = b"-ERR Too many errors."

# Lines that must survive SMTP dot-stuffing, storage and POP3 byte-stuffing:
# a lone ".", "..", "...", leading dots, an 8-bit/control-byte line, a
# 998-octet line (the SMTP maximum), an empty line, and a final "." line.
TRICKY = (b".\r\n"
          b"..\r\n"
          b"...\r\n"
          b".leading dot\r\n"
          b"..two leading dots\r\n"
          b" .space then dot\r\n"
          b"\r\n"
          b"8bit: \xc3\xa4\xc3\xb6\xc3\xbc \xe2\x82\xac \xff\xfe\x80\x81 "
          b"ctl \x01\x07\x1b\x7f\ttab\r\n"
          + b"L" * 998 + b"\r\n"
          b"trailing .\r\n"
          b".\r\n")


OK_RE = re.compile(rb"^\+OK( .*)?$", re.S)


def capabilities(login_delay=0, stls=True):
    """The CAPA list PROTOCOL.md fixes, as a sorted list of lines: STLS in
    the AUTHORIZATION state of a plaintext session (RFC 2595 4)."""
    return sorted([b"TOP", b"UIDL", b"USER", b"SASL PLAIN", b"RESP-CODES",
                   b"AUTH-RESP-CODE", b"PIPELINING", b"EXPIRE NEVER",
                   b"LOGIN-DELAY %d" % login_delay,
                   b"IMPLEMENTATION pillarbox"] + ([b"STLS"] if stls else []))


def is_ok(line):
    return OK_RE.match(line) is not None


def plain(user=USER, password=PASSWORD, authzid=""):
    """base64 SASL PLAIN response (RFC 4616) as a str."""
    import base64
    raw = ("%s\0%s\0%s" % (authzid, user, password)).encode()
    return base64.b64encode(raw).decode()


class Pop3:
    """A POP3 connection that reads replies as exact byte lines.

    line() returns one reply line without its CRLF and fails if the server
    ends a line with anything but CRLF; multi() returns the raw (still
    dot-stuffed) lines of a multi-line body up to the terminating '.'."""

    def __init__(self, addr, timeout=10, source=None, greet=True):
        self.sock = socket.create_connection(
            addr, timeout=timeout,
            source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.greeting = self.line() if greet else None

    # --- raw I/O ----------------------------------------------------------
    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("server closed the connection; unread: %r"
                           % self.buf[:200])
        self.buf += chunk

    def line(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[:i + 1], self.buf[i + 1:]
                assert line.endswith(CRLF), "reply line without CRLF: %r" % line
                body = line[:-2]
                assert b"\r" not in body, "bare CR in reply line: %r" % line
                return body
            self._fill()

    def multi(self):
        """Raw lines of a multi-line response body (dot-stuffing kept)."""
        lines = []
        while True:
            ln = self.line()
            if ln == b".":
                return lines
            lines.append(ln)

    def cmd(self, text):
        """Sends one command line (CRLF appended) and returns the reply."""
        if isinstance(text, str):
            text = text.encode()
        self.send(text + CRLF)
        return self.line()

    def expect_eof(self, timeout=10):
        """Asserts the server closes the connection (no more bytes)."""
        self.sock.settimeout(timeout)
        try:
            extra = self.buf
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                extra += chunk
        except ConnectionResetError:
            extra = self.buf
        except socket.timeout:
            raise AssertionError("connection still open after %ss; buffered %r"
                                 % (timeout, self.buf[:200]))
        assert extra == b"", "unexpected bytes before EOF: %r" % extra[:200]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self):
        """Closes with RST (SO_LINGER 0) instead of FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             struct.pack("ii", 1, 0))
        self.sock.close()

    # --- commands ---------------------------------------------------------
    def login(self, user=USER, password=PASSWORD):
        r = self.cmd("USER " + user)
        assert is_ok(r), r
        r = self.cmd("PASS " + password)
        assert r == LOGGED_IN, r
        return self

    def capa(self):
        r = self.cmd("CAPA")
        assert r == CAPA_HEAD, r
        return self.multi()

    def stat(self):
        r = self.cmd("STAT")
        m = re.match(rb"^\+OK (\d+) (\d+)$", r)
        assert m, "STAT reply %r" % r
        return int(m.group(1)), int(m.group(2))

    def list(self):
        """LIST -> (header, [(n, size), ...])."""
        r = self.cmd("LIST")
        assert r.startswith(b"+OK"), r
        out = []
        for ln in self.multi():
            m = re.match(rb"^(\d+) (\d+)$", ln)
            assert m, "LIST line %r" % ln
            out.append((int(m.group(1)), int(m.group(2))))
        return r, out

    def uidl(self):
        """UIDL -> [(n, uid_bytes), ...]; uids must be decimal."""
        r = self.cmd("UIDL")
        assert r.startswith(b"+OK"), r
        out = []
        for ln in self.multi():
            m = re.match(rb"^(\d+) (\d+)$", ln)
            assert m, "UIDL line %r (uids are decimal)" % ln
            out.append((int(m.group(1)), m.group(2)))
        return out

    def retr(self, n):
        """RETR n -> exact message bytes; checks the '+OK <size> octets'
        line against the bytes received."""
        r = self.cmd("RETR %d" % n)
        data = unstuff(self.multi())
        assert r == b"+OK %d octets" % len(data), (r, len(data))
        return data

    def top(self, n, k):
        r = self.cmd("TOP %d %d" % (n, k))
        assert r.startswith(b"+OK"), r
        return unstuff(self.multi())

    def snapshot(self):
        """Everything observable about the maildrop (TRANSACTION state)."""
        st = self.stat()
        _, lst = self.list()
        return st, lst, self.uidl()

    def quit(self):
        r = self.cmd("QUIT")
        assert r == LOGGING_OUT, r
        self.expect_eof()
        self.close()


def unstuff(lines):
    """Undoes RFC 1939 byte-stuffing of a multi-line body and returns the
    octets it stands for (lines joined with CRLF, final CRLF included).
    A non-terminator line starting with a single '.' is a server bug."""
    out = []
    for ln in lines:
        if ln.startswith(b"."):
            assert ln.startswith(b".."), "line not dot-stuffed: %r" % ln
            ln = ln[1:]
        out.append(ln + CRLF)
    return b"".join(out)


def connect(server, **kw):
    c = Pop3(server.addr("pop3"), **kw)
    assert c.greeting == GREETING, c.greeting
    return c


def login(server, user=USER, password=PASSWORD):
    return connect(server).login(user, password)


def login_retry(server, user=USER, password=PASSWORD, deadline=5.0):
    """Logs in, retrying while the answer is [IN-USE] (the server may need a
    moment to notice a dropped peer). Fails after `deadline` seconds."""
    end = time.time() + deadline
    while True:
        c = connect(server)
        assert is_ok(c.cmd("USER " + user))
        r = c.cmd("PASS " + password)
        if r == LOGGED_IN:
            return c
        assert r == IN_USE, r
        c.close()
        assert time.time() < end, "mailbox still locked after %ss" % deadline
        time.sleep(0.05)


def assert_alive(server, user=BOB):
    """Another client still gets full service: greeting, login, STAT, QUIT."""
    c = login(server, user)
    c.stat()
    c.quit()


# --- SMTP side -------------------------------------------------------------

def body(tag, extra=b""):
    """A message (headers + body, CRLF line ends, final CRLF) whose Subject
    carries `tag` so copies can be matched later."""
    if isinstance(tag, str):
        tag = tag.encode()
    return (b"From: Sender <" + SENDER.encode() + b">\r\n"
            b"To: Alice <alice@localhost>\r\n"
            b"Subject: test " + tag + b"\r\n"
            b"Message-ID: <" + tag + b"@client.test>\r\n"
            b"\r\n"
            b"Hello " + tag + b".\r\n" + extra)


def _opts(msg):
    return ["BODY=8BITMIME"] if any(b >= 0x80 for b in msg) else []


def deliver(server, rcpts, msg, sender=SENDER):
    """One SMTP transaction; msg is bytes with CRLF line ends ending in CRLF
    (smtplib sends bytes as-is apart from dot-stuffing). Returns the reply
    text of end-of-DATA."""
    return deliver_many(server, rcpts, [msg], sender)[0]


def deliver_many(server, rcpts, msgs, sender=SENDER):
    """One SMTP session, one transaction per message, in order."""
    if isinstance(rcpts, str):
        rcpts = [rcpts]
    host, port = server.addr("smtp")
    replies = []
    with smtplib.SMTP(host, port, local_hostname=HELO, timeout=30) as s:
        for m in msgs:
            assert m.endswith(CRLF)
            s.ehlo_or_helo_if_needed()
            s.mail(sender, _opts(m))
            for r in rcpts:
                code, text = s.rcpt(r)
                assert code == 250, (r, code, text)
            code, text = s.data(m)
            assert code == 250, (code, text)
            assert text.startswith(b"2.0.0 Ok: stored as "), text
            replies.append(text)
    return replies


def stored_re(msg, rcpts, sender=SENDER, helo=HELO):
    """Regex for the exact stored message: Return-Path + Received (format from
    PROTOCOL.md, `for` clause only with exactly one recipient) + msg."""
    if isinstance(rcpts, str):
        rcpts = [rcpts]
    if len(rcpts) == 1:
        tail = (b"\r\n\tfor <" + re.escape(rcpts[0].encode()) +
                b">; [^\r\n]+\r\n")
    else:
        # No `for` clause: "id X;" and the date on a line of its own.
        tail = b";\r\n\t[^\r\n;]+\r\n"
    return re.compile(
        b"\\AReturn-Path: <" + re.escape(sender.encode()) + b">\r\n"
        b"Received: from " + re.escape(helo.encode()) +
        b" \\(\\[127\\.0\\.0\\.1\\]\\)\r\n"
        # the id's exact form is the SMTP tests' business (PROTOCOL.md
        # says HEX; the server writes e.g. "c10a23316dc4.0")
        b"\tby mx\\.test \\(pillarbox\\) with ESMTP id [0-9A-Fa-f][0-9A-Fa-f.]*"
        + tail + re.escape(msg) + b"\\Z", re.S)


def assert_stored(data, msg, rcpts, sender=SENDER):
    assert stored_re(msg, rcpts, sender).match(data), (
        "retrieved message differs from Return-Path+Received+sent bytes:\n"
        "got  %r\nsent %r" % (data[:600], msg[:400]))


def header_end(data):
    """Index just past the blank line ending the header section."""
    i = data.find(b"\r\n\r\n")
    assert i >= 0
    return i + 4


def expected_top(data, k):
    """RFC 1939 TOP: header, blank line, then the first k body lines."""
    h = header_end(data)
    lines = data[h:].split(CRLF)[:-1]
    return data[:h] + b"".join(ln + CRLF for ln in lines[:k])


# --- server restart ----------------------------------------------------------

_restarts = [0]


def restart(server, kill=False):
    """Stops the server (SIGTERM, or SIGKILL if kill) and starts it again on
    the same data dir. conftest's start() looks for event=ready in the log,
    so the old log is moved aside first (kept for debugging)."""
    if kill:
        server.kill9()
    else:
        rc = server.stop()
        assert rc == 0, "graceful stop exit %s\n%s" % (rc, server.log_text()[-3000:])
        text = server.log_text()
        for bad in ("ERROR: AddressSanitizer", "runtime error:",
                    "LeakSanitizer"):
            assert bad not in text, text[-3000:]
    _restarts[0] += 1
    os.rename(server.log, "%s.%d" % (server.log, _restarts[0]))
    server.start()
    return server


# --- conftest work-around ------------------------------------------------------

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _server_dirs(tmp_path):
    """conftest's Server.__init__ writes pillarbox.conf into tmp_path/sN
    before make() creates that directory; pre-create the first few so the
    fixtures work either way (harmless once conftest creates it first)."""
    for i in range(8):
        (tmp_path / ("s%d" % i)).mkdir(exist_ok=True)
