"""The world outbound delivery talks to, on loopback: a DNS server that
answers MX, A and AAAA from a table (dnslib), mail exchangers on
127.0.0.x addresses that all listen on one port (aiosmtpd), and a
pillarbox configured to use them (relay_networks 127.0.0.0/8, so a test
submits relayed mail with plain smtplib).

Debian packages: python3-dnslib, python3-aiosmtpd."""
import socket
import threading
import time

from dnslib import AAAA, A, MX as MXRecord, QTYPE, RCODE, RR
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult


# ---------------------------------------------------------------- DNS

class TableResolver(BaseResolver):
    """Answers from self.records: {(name, "MX"|"A"|"AAAA"): [values]}.
    MX values are (preference, exchanger). Names in self.nxdomain get
    NXDOMAIN, names in self.servfail SERVFAIL; any other question an empty
    NOERROR answer (no such record)."""

    def __init__(self):
        self.records = {}
        self.nxdomain = set()
        self.servfail = set()
        self.queries = []

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        self.queries.append((name, qtype))
        if name in self.servfail:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        if name in self.nxdomain:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for value in self.records.get((name, qtype), []):
            if qtype == "MX":
                rdata = MXRecord(value[1], value[0])
            elif qtype == "A":
                rdata = A(value)
            else:
                rdata = AAAA(value)
            reply.add_answer(RR(request.q.qname, request.q.qtype, rdata=rdata,
                                ttl=60))
        return reply


class LoopbackDNS:
    """A UDP DNS server on 127.0.0.1, port chosen by the system, answering
    with resolver (a dnslib BaseResolver); log: dnslib's DNSLogger list."""

    def __init__(self, resolver,
                 log="-request,-reply,-truncated,-recv,-send,-data"):
        self.resolver = resolver
        self.server = DNSServer(resolver, address="127.0.0.1", port=0,
                                logger=DNSLogger(log=log, prefix=False))
        self.server.start_thread()
        self.port = self.server.server.server_address[1]

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def stop(self):
        self.server.stop()
        self.server.server.server_close()


class DNSTable(LoopbackDNS):
    """Records from a table. Only errors are printed: the queries are in
    resolver.queries."""

    def __init__(self):
        super().__init__(TableResolver())

    def mx(self, domain, *hosts):
        """hosts: (preference, name) pairs."""
        self.resolver.records[(domain, "MX")] = list(hosts)

    def a(self, name, *addrs):
        self.resolver.records[(name, "A")] = list(addrs)

    def aaaa(self, name, *addrs):
        self.resolver.records[(name, "AAAA")] = list(addrs)


# ------------------------------------------------------- mail exchangers

class Recorder:
    """aiosmtpd handler: keeps every accepted message; rcpt_reply(addr)
    and data_reply may refuse (return a reply line) instead."""

    def __init__(self):
        self.messages = []     # (session id, mail_from, rcpt_tos, content)
        self.sessions = set()
        self.rcpt_reply = lambda addr: None
        self.data_reply = None
        self.lock = threading.Lock()
        self.event = threading.Event()

    async def handle_RCPT(self, server, session, envelope, address, options):
        r = self.rcpt_reply(address)
        if r is not None:
            return r
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_reply is not None:
            return self.data_reply
        with self.lock:
            self.sessions.add(id(session))
            self.messages.append((id(session), envelope.mail_from,
                                  list(envelope.rcpt_tos), envelope.content,
                                  list(envelope.mail_options)))
        self.event.set()
        return "250 2.0.0 queued"

    def wait(self, count=1, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.02)
        raise AssertionError("MX got %d messages, wanted %d"
                             % (len(self.messages), count))


class MXController(Controller):
    """A Controller whose SMTP takes the extra options (auth, SMTPUTF8)."""

    def __init__(self, handler, hostname, port, **smtp_kw):
        self.smtp_kw = smtp_kw
        super().__init__(handler, hostname=hostname, port=port)

    def factory(self):
        return SMTP(self.handler, hostname="mx.test", **self.smtp_kw)


def free_port(addrs):
    """A TCP port free on every address of addrs."""
    for _ in range(100):
        s = socket.socket()
        s.bind((addrs[0], 0))
        port = s.getsockname()[1]
        s.close()
        ok = True
        for a in addrs[1:]:
            t = socket.socket()
            try:
                t.bind((a, port))
            except OSError:
                ok = False
            finally:
                t.close()
        if ok:
            return port
    raise AssertionError("no common free port")


class MX:
    """One exchanger at ip:port with its own Recorder."""

    def __init__(self, ip, port, **smtp_kw):
        self.ip = ip
        self.port = port
        self.rec = Recorder()
        self.ctl = MXController(self.rec, ip, port, **smtp_kw)
        self.ctl.start()

    def stop(self):
        self.ctl.stop()


def plain_auth(user, password):
    """An aiosmtpd authenticator accepting one user (any mechanism)."""
    def check(server, session, envelope, mechanism, auth_data):
        ok = (auth_data.login.decode() == user and
              auth_data.password.decode() == password)
        return AuthResult(success=ok, handled=False)
    return check


def wait_for(pred, timeout=15, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


# ------------------------------------------------------------------ TLS

def make_ca(directory, server_name):
    """A test CA and a certificate for server_name signed by it (EC
    P-256, openssl). Returns (ca_pem, cert_pem, key_pem) paths."""
    import subprocess
    d = str(directory)
    ca_key, ca = d + "/ca-key.pem", d + "/ca.pem"
    key, csr, cert = d + "/key.pem", d + "/srv.csr", d + "/cert.pem"
    ext = d + "/ext.cnf"
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)
    run("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout",
        "-out", ca_key)
    run("openssl", "req", "-x509", "-new", "-key", ca_key, "-days", "2",
        "-subj", "/CN=pillarbox test CA", "-out", ca,
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout",
        "-out", key)
    run("openssl", "req", "-new", "-key", key, "-subj",
        "/CN=" + server_name, "-out", csr)
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:%s\nbasicConstraints=CA:FALSE\n"
                "extendedKeyUsage=serverAuth\n" % server_name)
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
        "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", cert)
    return ca, cert, key


def server_tls_context(cert, key):
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


# ------------------------------------------------- a hand-written exchanger

class ScriptedMX:
    """An SMTP server written out by hand, to see exactly what the client
    sends: every reply goes out one octet per send(), multi-line replies
    included, and the commands are recorded as they arrive. ehlo: the
    EHLO reply's lines after the first (None: EHLO is refused with 500, so
    the client must fall back to HELO). The recorded transaction bodies
    are un-dot-stuffed."""

    def __init__(self, ip, port, ehlo=("PIPELINING", "8BITMIME", "SIZE")):
        self.ehlo = ehlo
        self.commands = []    # every command line, in order
        self.batches = []     # command lines that arrived together
        self.bodies = []      # (raw data as sent, un-stuffed body)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, port))
        self.sock.listen(8)
        self.stopped = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _send(self, c, text):
        for b in text.encode():
            c.sendall(bytes([b]))

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,),
                             daemon=True).start()

    def _serve(self, c):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        try:
            self._send(c, "220 scripted.test ESMTP\r\n")
            while True:
                while b"\r\n" not in buf:
                    time.sleep(0.05)  # let a pipelined batch arrive whole
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                batch = buf.count(b"\r\n")
                self.batches.append(batch)
                while b"\r\n" in buf:
                    line, buf = buf.split(b"\r\n", 1)
                    cmd = line.decode("utf-8", "replace")
                    self.commands.append(cmd)
                    verb = cmd.split(" ")[0].upper()
                    if verb == "EHLO":
                        if self.ehlo is None:
                            self._send(c, "500 5.5.1 no EHLO here\r\n")
                        else:
                            lines = ["scripted.test"] + list(self.ehlo)
                            self._send(c, "".join(
                                "250%s%s\r\n" % (
                                    " " if i == len(lines) - 1 else "-", l)
                                for i, l in enumerate(lines)))
                    elif verb == "DATA":
                        self._send(c, "354 go ahead\r\n")
                        while b"\r\n.\r\n" not in buf:
                            chunk = c.recv(65536)
                            if not chunk:
                                return
                            buf += chunk
                        raw, buf = buf.split(b"\r\n.\r\n", 1)
                        raw += b"\r\n"
                        body = b"".join(
                            l[1:] if l.startswith(b".") else l
                            for l in raw.splitlines(keepends=True))
                        self.bodies.append((raw, body))
                        self._send(c, "250-2.0.0 accepted\r\n"
                                      "250 2.0.0 as many lines\r\n")
                    elif verb == "QUIT":
                        self._send(c, "221 bye\r\n")
                        return
                    else:
                        self._send(c, "250 2.0.0 ok\r\n")
        finally:
            c.close()

    def stop(self):
        self.stopped = True
        self.sock.close()
