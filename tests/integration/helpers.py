"""Helpers for the SMTP integration tests: a raw SMTP client that reads
replies exactly as they come, POP3 mailbox readers (poplib), parsing of the
trace headers pillarbox prepends, and a restart helper for a killed server.

Standard library only."""
import email.utils
import os
import poplib
import re
import socket
import time

TIMEOUT = 10  # generous network timeout for every blocking read
SENDER = "sender@example.org"
HELO_NAME = "client.test"


# --------------------------------------------------------------- replies

class Reply:
    """One SMTP reply: code (int) and its lines (str, CRLF stripped)."""

    def __init__(self, lines):
        self.lines = lines
        self.code = int(lines[-1][:3])

    @property
    def last(self):
        return self.lines[-1]

    @property
    def text(self):
        return "\n".join(self.lines)

    def startswith(self, prefix):
        """True if the last line starts with prefix followed by a space or
        the end of the line, and every line carries the same code."""
        last = self.last
        if not last.startswith(prefix):
            return False
        if len(last) > len(prefix) and last[len(prefix)] != " " \
                and not prefix.endswith(" "):
            return False
        return all(l[:3] == last[:3] for l in self.lines)

    def __repr__(self):
        return "Reply(%r)" % (self.lines,)


def expect(reply, prefix, exact=None):
    """Asserts that reply starts with prefix (e.g. "550 5.1.1") and, when
    exact is given, that its last line is exactly that text."""
    assert reply.startswith(prefix), "expected %r, got %r" % (prefix, reply)
    if exact is not None:
        assert reply.last == exact, "expected %r, got %r" % (exact, reply)


class SMTPConn:
    """A raw SMTP connection over a socket: send exactly the bytes given and
    read replies one by one, so that ordering and counts can be checked."""

    def __init__(self, server, timeout=TIMEOUT, greet=True):
        self.sock = socket.create_connection(server.addr("smtp"),
                                             timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.greeting = None
        if greet:
            self.greeting = self.reply()
            expect(self.greeting, "220", "220 mx.test ESMTP pillarbox")

    # -- low level
    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def _readline(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed; pending %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        assert line.endswith(b"\r"), "reply line without CRLF: %r" % line
        return line[:-1].decode("utf-8", "replace")

    def reply(self):
        """Reads one complete (possibly multi-line) reply."""
        lines = []
        while True:
            line = self._readline()
            assert re.match(r"^[2-5]\d\d([ -]|$)", line), \
                "malformed reply line %r" % line
            lines.append(line)
            if len(line) == 3 or line[3] == " ":
                return Reply(lines)

    def replies(self, n):
        return [self.reply() for _ in range(n)]

    def cmd(self, line):
        """Sends line + CRLF and returns its reply."""
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + b"\r\n")
        return self.reply()

    # -- higher level
    def ehlo(self, name=HELO_NAME):
        r = self.cmd("EHLO " + name)
        expect(r, "250")
        return r

    def begin(self, rcpts, sender=SENDER, ehlo=True, mail_params=""):
        """EHLO (optional), MAIL FROM and every RCPT TO, each must get 250."""
        if ehlo:
            self.ehlo()
        expect(self.cmd("MAIL FROM:<%s>%s" % (sender, mail_params)),
               "250 2.1.0")
        for r in rcpts:
            expect(self.cmd("RCPT TO:<%s>" % r), "250 2.1.5")

    def data(self, body, raw=False):
        """DATA (expects 354), then the body (dot-stuffed unless raw; raw
        bodies must carry their own terminator) and returns the final
        reply."""
        r = self.cmd("DATA")
        expect(r, "354", "354 End data with <CR><LF>.<CR><LF>")
        if raw:
            self.send(body)
        else:
            self.send(dot_stuff(body) + b".\r\n")
        return self.reply()

    def deliver(self, rcpts, body, **kw):
        """Whole transaction (without EHLO unless ehlo=True given);
        returns the final reply."""
        kw.setdefault("ehlo", False)
        self.begin(rcpts, **kw)
        return self.data(body)

    def eof(self, timeout=TIMEOUT):
        """True when the peer closes (or resets) within timeout; any data
        still arriving is collected into self.buf."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.time()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not chunk:
                return True
            self.buf += chunk
        return False

    def no_pending(self, wait=0.3):
        """True if no further reply bytes arrive within wait seconds (a
        close counts as nothing more)."""
        if self.buf:
            return False
        self.sock.settimeout(wait)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        finally:
            self.sock.settimeout(TIMEOUT)
        self.buf += chunk
        return not chunk

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def dot_stuff(body):
    """Dot-stuffs a CRLF body (RFC 5321 4.5.2) and makes sure it ends in
    CRLF (the DATA terminator needs it)."""
    assert isinstance(body, bytes)
    out = re.sub(rb"(?m)^\.", b"..", body)
    if not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out


def make_body(tag, lines=5, extra=b""):
    """A small CRLF message with a unique Message-Id/Subject."""
    head = ("Message-Id: <%s@client.test>\r\nSubject: %s\r\n"
            "From: sender@example.org\r\n\r\n" % (tag, tag)).encode()
    text = b"".join(b"line %d of %s\r\n" % (i, tag.encode())
                    for i in range(lines))
    return head + text + extra


# ------------------------------------------------------------------- POP3

def pop3_open(server, user="alice@localhost", password="secret"):
    p = poplib.POP3(*server.addr("pop3"), timeout=TIMEOUT)
    p.user(user)
    p.pass_(password)
    return p


def pop3_messages(server, user="alice@localhost", password="secret"):
    """All messages of a mailbox as exact bytes (CRLF line ends), in
    order. The session ends with QUIT (nothing is deleted)."""
    p = pop3_open(server, user, password)
    try:
        count, _ = p.stat()
        msgs = []
        for i in range(1, count + 1):
            _, lines, octets = p.retr(i)
            data = b"".join(l + b"\r\n" for l in lines)
            assert len(data) == octets
            msgs.append(data)
        return msgs
    finally:
        try:
            p.quit()
        except (poplib.error_proto, OSError):
            p.close()


def pop3_stat(server, user="alice@localhost", password="secret"):
    """(count, octets) of a mailbox."""
    p = pop3_open(server, user, password)
    try:
        return p.stat()
    finally:
        try:
            p.quit()
        except (poplib.error_proto, OSError):
            p.close()


# ------------------------------------------------------- trace headers

RECEIVED_RE = re.compile(
    r"^Received: from (?P<helo>\S+) \(\[(?P<ip>[^\]]+)\]\) "
    r"(?:\(authenticated as (?P<auth>[^)]+)\) )?"
    r"by (?P<by>\S+) \(pillarbox\) with (?P<proto>\S+) id (?P<id>[^\s;]+)"
    r"(?: for <(?P<for>[^>]*)>)?\s*;?\s*(?P<date>.+)$")


def split_trace(msg):
    """Splits a stored message into (return_path, received, rest):
    return_path is the address inside Return-Path's <>, received is a dict
    of the Received fields (unfolded), rest the bytes after both headers.
    Asserts that Return-Path comes first and Received second, and that
    Received has the PROTOCOL.md layout."""
    assert msg.startswith(b"Return-Path: <"), msg[:200]
    first, rest = msg.split(b"\r\n", 1)
    m = re.match(rb"^Return-Path: <(.*)>$", first)
    assert m, first
    return_path = m.group(1).decode("utf-8")
    assert rest.startswith(b"Received: "), rest[:300]
    # The Received field: first line plus continuation lines (WSP first).
    pos = rest.index(b"\r\n") + 2
    while rest[pos:pos + 1] in (b" ", b"\t"):
        pos = rest.index(b"\r\n", pos) + 2
    field = rest[:pos - 2]
    unfolded = re.sub(rb"\r\n[ \t]+", b" ", field).decode("utf-8")
    m = RECEIVED_RE.match(unfolded)
    assert m, "Received header does not match PROTOCOL.md: %r" % field
    rec = m.groupdict()
    rec["raw"] = field
    rec["unfolded"] = unfolded
    # the DATE must be an RFC 5322 date-time
    try:
        email.utils.parsedate_to_datetime(rec["date"].strip())
    except (TypeError, ValueError):
        raise AssertionError("Received date is not RFC 5322: %r" % unfolded)
    return return_path, rec, rest[pos:]


def stored_body(msg):
    """The bytes of a stored message after the trace headers."""
    return split_trace(msg)[2]


# --------------------------------------------------------------- restart

LISTEN_RE = re.compile(r"event=listening proto=(\w+) addr=(\S+)")


def restart(server, timeout=30):
    """Starts a stopped Server again on the same data_dir. conftest's
    start() appends to the same log and may see the previous run's
    event=ready, so wait here for the new run's ready line and take the
    ports from the new part of the log only."""
    assert server.proc is None
    offset = os.path.getsize(server.log)
    server.start()
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(server.log, "rb") as f:
            f.seek(offset)
            new = f.read().decode("utf-8", "replace")
        if "event=ready" in new:
            server.ports = {p: a for p, a in LISTEN_RE.findall(new)}
            assert "smtp" in server.ports and "pop3" in server.ports, new
            return server
        if server.proc.poll() is not None:
            raise AssertionError("restarted server exited:\n" + new)
        time.sleep(0.02)
    raise AssertionError("restarted server not ready")


# ------------------------------------------------------------ workaround

try:
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

if pytest is not None:
    @pytest.fixture(autouse=True)
    def precreate_server_dirs(tmp_path):
        """conftest's Server() writes its config file before make() creates
        the server directory; create the directories make_server will use
        (tmp_path/s0, s1, ...) beforehand. Harmless once conftest is
        fixed."""
        for i in range(4):
            (tmp_path / ("s%d" % i)).mkdir(exist_ok=True)
