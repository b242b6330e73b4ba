"""Helpers for the isolation tests (test_isolation.py): clients that
misbehave on purpose (stop reading, pipeline without reading, trickle bytes)
and fast readers for the megabytes they leave behind.

Standard library only; builds on pop3util and helpers."""
import re
import select
import shutil
import socket
import subprocess
import threading
import time

from helpers import SMTPConn, dot_stuff, expect
from pop3util import CRLF, LOGGED_IN, Pop3

TIMEOUT = 10  # every blocking read or send of a well-behaved client


# --- clients that stop reading ------------------------------------------------

class SmallWindowPop3(Pop3):
    """A POP3 client whose receive buffer is set small (SO_RCVBUF before
    connect, so the TCP window stays small): once it stops reading, the
    server's replies back up after a few kilobytes."""

    def __init__(self, addr, rcvbuf=4096, timeout=TIMEOUT):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect(addr)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.buf = b""
        self.greeting = self.line()


def read_exact(conn, n, timeout=TIMEOUT):
    """Reads n bytes from a Pop3 connection (its buffer first). Returns
    fewer when the server sends nothing more for `timeout` seconds or
    closes, so a caller can show what came instead."""
    out = bytearray(conn.buf[:n])
    conn.buf = conn.buf[n:]
    conn.sock.settimeout(timeout)
    try:
        while len(out) < n:
            chunk = conn.sock.recv(min(1 << 20, n - len(out)))
            if not chunk:
                break
            out += chunk
    except socket.timeout:
        pass
    return bytes(out)


def read_multi_fast(conn):
    """The body of a multi-line reply, un-stuffed (RFC 1939 3), for replies
    of megabytes: pop3util's line-by-line reader copies its buffer per
    line."""
    raw = bytearray(conn.buf)
    conn.buf = b""
    start = 0
    while True:
        if raw.startswith(b".\r\n"):
            end = 0
            break
        end = raw.find(b"\r\n.\r\n", max(0, start - 4))
        if end >= 0:
            end += 2
            break
        start = len(raw)
        chunk = conn.sock.recv(1 << 20)
        if not chunk:
            raise EOFError("closed inside a multi-line reply after %d "
                           "octets" % len(raw))
        raw += chunk
    conn.buf = bytes(raw[end + 3:])
    return unstuff_fast(bytes(raw[:end]))


def unstuff_fast(wire):
    """Undoes byte-stuffing of a whole multi-line body at once."""
    body = wire.replace(b"\r\n..", b"\r\n.")
    return body[1:] if body.startswith(b"..") else body


def stuff(data):
    """Byte-stuffs a message for the wire (RFC 1939 3)."""
    out = data.replace(b"\r\n.", b"\r\n..")
    return b"." + out if out.startswith(b".") else out


def retr_fast(conn, n):
    """RETR n on a logged-in Pop3; checks `+OK <size> octets` against the
    bytes received and returns them."""
    r = conn.cmd("RETR %d" % n)
    data = read_multi_fast(conn)
    assert r == b"+OK %d octets" % len(data), (r[:100], len(data))
    return data


# --- messages -----------------------------------------------------------------

def big_message(tag, size=10 << 20):
    """A message of at least `size` octets: headers, then 100-octet CRLF
    lines (well under RFC 5321's 998), each numbered, a few starting with
    '.' so that SMTP dot-stuffing and POP3 byte-stuffing both run."""
    head = ("From: sender@example.org\r\nTo: someone@localhost\r\n"
            "Subject: big %s\r\nMessage-ID: <%s@client.test>\r\n\r\n"
            % (tag, tag)).encode()
    parts, total, i = [head], len(head), 0
    while total < size:
        line = (b"." if i % 1000 == 0 else b"L") + b" %s %08d " % (
            tag.encode(), i)
        line = (line + b"abcdefghij" * 10)[:98] + CRLF
        parts.append(line)
        total += len(line)
        i += 1
    return b"".join(parts)


# --- SMTP ---------------------------------------------------------------------

class Delivery(threading.Thread):
    """One SMTP transaction in a thread, with the client's socket timeout of
    TIMEOUT seconds for every reply. `sent` is set once the whole message
    and its terminator are on the wire (the server commits from then on),
    or once the transaction failed before that; result() gives the reply
    to the end of data or fails the test with what went wrong."""

    def __init__(self, server, rcpt, msg):
        super().__init__(daemon=True)
        self.server, self.rcpt, self.msg = server, rcpt, msg
        self.sent = threading.Event()
        self.reply = self.error = None
        self.body_sent = False

    def run(self):
        try:
            with SMTPConn(self.server, timeout=TIMEOUT) as c:
                c.begin([self.rcpt])
                expect(c.cmd("DATA"), "354")
                c.send(dot_stuff(self.msg) + b".\r\n")
                self.body_sent = True
                self.sent.set()
                self.reply = c.reply()
                c.cmd("QUIT")
        except Exception as e:  # reported by the test
            self.error = e
        finally:
            self.sent.set()

    def result(self):
        """Waits for the transaction; returns the reply (helpers.Reply) to
        the end of data."""
        self.join(3 * TIMEOUT)
        assert not self.is_alive(), "SMTP client still running"
        if isinstance(self.error, socket.timeout):
            raise AssertionError(
                "delivery to %s: no reply %s within the client's %d s "
                "timeout" % (self.rcpt, "to the end of data" if self.body_sent
                             else "before the end of data", TIMEOUT))
        assert self.error is None, \
            "delivery to %s failed: %r" % (self.rcpt, self.error)
        return self.reply


def rcpt_reply(server, rcpt):
    """The reply to RCPT TO:<rcpt> in a fresh session (then QUIT)."""
    with SMTPConn(server, timeout=TIMEOUT) as c:
        c.ehlo()
        expect(c.cmd("MAIL FROM:<sender@example.org>"), "250 2.1.0")
        r = c.cmd("RCPT TO:<%s>" % rcpt)
        c.cmd("RSET")
        c.cmd("QUIT")
        return r


def pop3_login_reply(addr, user, password="secret"):
    """The reply to PASS in a fresh POP3 session; QUITs when logged in."""
    c = Pop3(addr, timeout=TIMEOUT)
    try:
        r = c.cmd("USER " + user)
        assert r.startswith(b"+OK"), r
        r = c.cmd("PASS " + password)
        if r == LOGGED_IN:
            c.quit()
        return r
    finally:
        c.close()


# --- the store ----------------------------------------------------------------

MAP_RESIZE_RE = re.compile(r"event=map_resize size=")


def map_resizes(server):
    """How many times the server's log says the LMDB map was resized."""
    return len(MAP_RESIZE_RE.findall(server.log_text()))


def reader_slots(server):
    """LMDB reader-table slots held by the server process, from
    `mdb_stat -rr` (lmdb-utils; the second listing, after stale entries are
    cleared), or None when mdb_stat is not installed."""
    if shutil.which("mdb_stat") is None:
        return None
    out = subprocess.run(["mdb_stat", "-rr", server.data],
                         capture_output=True, text=True, timeout=30)
    # (its exit status is 1 even then: it returns fputs's last result)
    assert "Reader Table Status" in out.stdout, (out.stdout, out.stderr)
    listing = out.stdout.split("stale readers cleared.")[-1]
    pid = str(server.proc.pid)
    return sum(1 for ln in listing.splitlines() if ln.split()[:1] == [pid])


# --- slow senders -----------------------------------------------------------

def trickle(sock, pattern, limit, every=0.3):
    """Sends `pattern` one byte every `every` seconds (faster than an idle
    timeout of 1 s), reading whatever comes back, until the server closes
    or `limit` seconds pass. Returns (received bytes, closed, seconds)."""
    got = b""
    t0 = time.monotonic()
    i = 0
    closed = False
    while not closed and time.monotonic() - t0 < limit:
        try:
            sock.send(pattern[i % len(pattern):i % len(pattern) + 1])
            i += 1
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        end = time.monotonic() + every
        while not closed and time.monotonic() < end:
            r, _, _ = select.select([sock], [], [],
                                    max(0, end - time.monotonic()))
            if not r:
                break
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                closed = True
            got += chunk
    return got, closed, time.monotonic() - t0


# --- listeners ----------------------------------------------------------------

def listen_port(server, proto):
    """The port of a listener from the event=listening line (the host part
    may be bracketed, e.g. [::ffff:127.0.0.1])."""
    return int(server.ports[proto].rsplit(":", 1)[1])


def can_bind(ip):
    try:
        s = socket.socket()
        s.bind((ip, 0))
        s.close()
        return True
    except OSError:
        return False


def dual_stack_ok():
    """True when an IPv6 socket can bind the v4-mapped loopback address
    (IPV6_V6ONLY off) and take IPv4 clients on it."""
    if not socket.has_ipv6:
        return False
    try:
        s = socket.socket(socket.AF_INET6)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::ffff:127.0.0.1", 0))
        s.listen()
        c = socket.create_connection(("127.0.0.1", s.getsockname()[1]), 5)
        c.close()
        s.close()
        return True
    except OSError:
        return False

