"""Real mail clients over TLS against the real binary: swaks and msmtp
submit (STARTTLS on the submission port, implicit TLS on smtps), fetchmail,
mpop and getmail6 retrieve (STLS on the POP3 port, implicit TLS on pop3s).

Every client verifies the server's certificate against the self-signed
certificate the server made at first start (its data_dir's
selfsigned-cert.pem, for the hostname mx.test), as the README tells users
to: the GnuTLS clients (msmtp, mpop) and fetchmail and getmail6 check the
name mx.test too (each has its own way to name the host they expect:
tls_host_override, sslcommonname, ssl_cert_hostname). swaks 20201014
checks the chain only (its name check came later).

Every server here listens on 127.0.0.2 while the clients connect from
127.0.0.1, so no client is "a tool on the server's own address": with
require_tls_for_auth = yes for SMTP and POP3 (conftest turns POP3's off)
the server neither offers nor takes a password before TLS. Each test
then checks in the log that every login came in a session whose TLS
handshake had finished before it, and that no login failed.

What arrives is compared byte for byte: a submitted message is the
stored message after the trace fields pillarbox adds (Return-Path, and a
Received field saying ESMTPSA, the TLS in use and the user); a retrieved
message is the stored one, read over pop3s by Python first, with CRLF
line ends turned into LF, which is what each of these clients documents
doing when it hands a message to a program.

The last test gives each client the wrong trust anchor (another
self-signed certificate for mx.test): each must stop at the handshake,
before any password is sent, and nothing is logged in."""
import os
import poplib
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time

import pytest

from pop3util import BOB, TRICKY, USER, body, deliver
from test_fetchmail import MDA

HOST = "mx.test"  # the certificate's name (conftest's hostname)
SRV = "127.0.0.2"  # the server's address; clients come from 127.0.0.1
PASSWORD = "secret"

# What each client says when the certificate does not verify.
REFUSED = {"swaks": "certificate verify failed",
           "msmtp": "TLS certificate verification failed",
           "fetchmail": "certificate verify failed",
           "mpop": "TLS certificate verification failed",
           "getmail": "CERTIFICATE_VERIFY_FAILED"}
# What its transcript would show had it sent a user name or password
# (getmail6 shows none: the server's log has to tell).
SENT_CREDENTIALS = {"swaks": r"~> AUTH", "msmtp": r"--> AUTH",
                    "fetchmail": r"POP3> (USER|PASS|AUTH)",
                    "mpop": r"--> (USER|PASS|AUTH)", "getmail": r"\A\Z."}


def listeners_elsewhere():
    """Every listener on SRV, TLS required for passwords everywhere."""
    a = SRV + ":0"
    return {"smtp": {"listen": a, "submission": a, "smtps": a,
                     "require_tls_for_auth": "yes"},
            "pop3": {"listen": a, "pop3s": a,
                     "require_tls_for_auth": "yes"},
            "web": {"listen": ""}}


def need(tool, package):
    if shutil.which(tool) is None:
        pytest.skip("%s is not on PATH (Debian package %s)" % (tool, package))


@pytest.fixture
def srv(make_server):
    try:
        s = socket.socket()
        s.bind((SRV, 0))
        s.close()
    except OSError as e:
        pytest.skip("cannot bind %s: %s" % (SRV, e))
    return make_server(extra=listeners_elsewhere())


def cert(server):
    return os.path.join(server.data, "selfsigned-cert.pem")


@pytest.fixture
def wrong_ca(tmp_path):
    """A self-signed certificate for mx.test that the server does not
    use: same name, another key."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                    "wrong.key", "-out", "wrong.pem", "-subj", "/CN=" + HOST,
                    "-days", "2", "-addext", "subjectAltName=DNS:" + HOST],
                   cwd=str(tmp_path), check=True, capture_output=True,
                   timeout=60)
    return str(tmp_path / "wrong.pem")


def port(server, proto):
    host, p = server.addr(proto)
    assert host == SRV
    return p


def run(cmd, env=None, stdin=None):
    r = subprocess.run(cmd, input=stdin, env=env, capture_output=True,
                       timeout=60)
    r.log = (r.stdout + r.stderr).decode("utf-8", "replace")
    return r


def home(tmp_path, name):
    """A private HOME for one client (its rc files, state, output)."""
    d = tmp_path / name
    d.mkdir(mode=0o700)
    (d / "out").mkdir()
    with open(d / "mda.py", "w") as f:
        f.write(MDA)
    return d


def write_rc(path, text):
    path.write_text(text)
    os.chmod(path, 0o600)  # msmtp, mpop and fetchmail insist
    return str(path)


def delivered(d):
    """The files the MDA wrote into d/out, in delivery order."""
    out = d / "out"
    return [(out / n).read_bytes() for n in sorted(os.listdir(out))]


# --- what the server says ------------------------------------------------------

def logins_inside_tls(server):
    """Checks that every login in the log (POP3 event=login, SMTP
    event=auth) is in a session whose handshake finished before it
    (event=tls, same sid), and that none failed; returns the count."""
    tls, n = set(), 0
    for line in server.log_text().splitlines():
        m = re.search(r" sid=(\S+) event=(\S+)", line)
        if m is None:
            continue
        sid, ev = m.groups()
        assert ev != "auth-failed", line
        if ev == "tls":
            tls.add(sid)
        elif ev in ("login", "auth"):
            assert sid in tls, "login outside TLS: " + line
            n += 1
    return n


def wait_log_re(server, offset, pattern, timeout=10):
    """Waits until pattern appears in the log past offset."""
    deadline = time.time() + timeout
    while not re.search(pattern, server.log_text()[offset:]):
        assert time.time() < deadline, server.log_text()[offset:]
        time.sleep(0.02)


class POP3S(poplib.POP3_SSL):
    """POP3_SSL to an address, checking the certificate for HOST."""

    def _create_socket(self, timeout):
        s = socket.create_connection((self.host, self.port), timeout)
        return self.context.wrap_socket(s, server_hostname=HOST)


def stored(server, user=USER):
    """A mailbox's messages as exact bytes, read over pop3s (verified),
    nothing deleted."""
    p = POP3S(SRV, port(server, "pop3s"), timeout=30,
              context=ssl.create_default_context(cafile=cert(server)))
    try:
        p.user(user)
        p.pass_(PASSWORD)
        msgs = []
        for i in range(1, p.stat()[0] + 1):
            resp, lines, octets = p.retr(i)
            data = b"".join(l + b"\r\n" for l in lines)
            assert resp == b"+OK %d octets" % len(data), resp
            msgs.append(data)
        return msgs
    finally:
        p.quit()


# A submitted message as stored: the trace fields, then the bytes sent.
SUBMITTED_RE = re.compile(
    rb"\AReturn-Path: <bob@localhost>\r\n"
    rb"Received: from (?P<helo>\S+) \(\[127\.0\.0\.1\]\)\r\n"
    rb"\t\(using TLSv1\.2 ECDHE-ECDSA-[A-Z0-9-]+\)\r\n"
    rb"\t\(authenticated as bob@localhost\)\r\n"
    rb"\tby mx\.test \(pillarbox\) with ESMTPSA id [0-9a-f]+\r\n"
    rb"\tfor <alice@localhost>; [^\r\n]+\r\n(?P<rest>.*)\Z", re.S)


def assert_submitted(server, sent, helo):
    """alice's one message is exactly `sent` under our trace fields."""
    (msg,) = stored(server)
    m = SUBMITTED_RE.match(msg)
    assert m, msg[:600]
    assert m.group("helo") == helo.encode()
    assert m.group("rest") == sent
    assert logins_inside_tls(server) == 2  # the client's and stored()'s


# A message made to be hard on every layer: dots at line starts (SMTP and
# POP3 stuffing), 8-bit octets, a 998-octet line, lines that are just "."
# (from pop3util), and one of 300 KiB that spans many TLS records and
# RETR pieces.
BIG = b"".join(b".%06d " % i + b"z" * 66 + b"\r\n" for i in range(4200))
RETRIEVE = [body("tls-plain"), body("tls-tricky", TRICKY),
            body("tls-big", BIG)]


def fill(server):
    """Delivers RETRIEVE to alice over the MX port, one recipient each,
    and returns what the store holds for her. (With one recipient every
    line of our Received: field stays under 78 octets; getmail6 re-folds
    longer header lines, as Python's email generator does.)"""
    for m in RETRIEVE:
        deliver(server, [USER], m)
    want = stored(server)
    assert len(want) == len(RETRIEVE)
    return want


def assert_retrieved(server, d, want):
    """The client handed on every message intact (LF line ends) and
    deleted them (DELE, and QUIT's commit, over TLS)."""
    assert delivered(d) == [m.replace(b"\r\n", b"\n") for m in want]
    assert stored(server) == []
    assert logins_inside_tls(server) == 3  # fill's, the client's, ours


# --- swaks -------------------------------------------------------------------

def swaks(server, tmp_path, trust, message=b""):
    """swaks --tls: STARTTLS on the submission port, then AUTH PLAIN."""
    f = tmp_path / "swaks-msg"
    # swaks ends the data with CRLF "." CRLF itself: a file ending in a
    # newline would gain an empty line.
    f.write_bytes(message.rstrip(b"\n"))
    return run(["swaks", "--server", SRV, "--port",
                str(port(server, "submission")), "--tls", "--tls-verify",
                "--tls-ca-path", trust, "--helo", "laptop.test",
                "--auth", "PLAIN", "--auth-user", BOB,
                "--auth-password", PASSWORD, "--from", BOB, "--to", USER,
                "--data", str(f)])


def test_swaks_starttls_then_auth(srv, tmp_path):
    need("swaks", "swaks")
    msg = (b"From: <bob@localhost>\nTo: <alice@localhost>\n"
           b"Subject: swaks over STARTTLS\n\n.one dot\n..two\n"
           b"\xc3\xa4 8-bit\nend\n")
    r = swaks(srv, tmp_path, cert(srv), msg)
    assert r.returncode == 0, r.log
    # In clear ("<-") no AUTH is offered; inside TLS ("<~") it is.
    assert "<-  250-AUTH" not in r.log and "<-  250 AUTH" not in r.log
    assert "<~  250-AUTH PLAIN LOGIN" in r.log, r.log
    assert "<~  235 2.7.0 Authentication successful" in r.log, r.log
    assert re.search(SENT_CREDENTIALS["swaks"], r.log)
    assert_submitted(srv, msg.replace(b"\n", b"\r\n"), "laptop.test")


# --- msmtp -------------------------------------------------------------------

def msmtp(server, d, how, trust, message):
    """msmtp with TLS: `smtps` (tls_starttls off, implicit TLS) or
    `starttls` (the submission port)."""
    rc = write_rc(d / "msmtprc", (
        "account default\nhost %s\nport %d\nfrom %s\n"
        "auth plain\nuser %s\npassword %s\n"
        "tls on\ntls_starttls %s\ntls_trust_file %s\n"
        "tls_host_override %s\nlogfile -\n"
        % (SRV, port(server, "smtps" if how == "smtps" else "submission"),
           BOB, BOB, PASSWORD, "off" if how == "smtps" else "on", trust,
           HOST)))
    return run(["msmtp", "-v", "-C", rc, USER], stdin=message)


@pytest.mark.parametrize("how", ["smtps", "starttls"])
def test_msmtp(srv, tmp_path, how):
    need("msmtp", "msmtp")
    # msmtp adds Date:, Message-ID: and From: when missing: give them.
    msg = (b"From: <bob@localhost>\nTo: <alice@localhost>\n"
           b"Date: Tue, 01 Dec 2026 05:10:51 +0000\n"
           b"Message-ID: <msmtp-%s@laptop.test>\nSubject: msmtp %s\n\n"
           b".\n.. dots\n\xe2\x82\xac\n" % (how.encode(), how.encode())
           + b"x" * 990 + b"\n")
    r = msmtp(srv, home(tmp_path, "msmtp"), how, cert(srv), msg)
    assert r.returncode == 0, r.log
    assert "smtpstatus=250" in r.log and "tls=on" in r.log, r.log
    assert re.search(SENT_CREDENTIALS["msmtp"], r.log)
    if how == "starttls":
        assert "--> STARTTLS" in r.log, r.log
    else:
        assert "STARTTLS" not in r.log, r.log
    assert_submitted(srv, msg.replace(b"\n", b"\r\n"), "localhost")


# --- fetchmail -------------------------------------------------------------------

def fetchmail(server, d, how, trust):
    """fetchmail with sslproto TLS1.2+: `pop3s` (--ssl, implicit TLS) or
    `stls` (STLS on the POP3 port); the certificate checked (sslcertck)
    against trust, for the name mx.test (the poll name; `via` says where
    the server is, and sslcommonname which name to expect, since fetchmail
    would check the `via` address)."""
    rc = write_rc(d / "fetchmailrc", (
        # no Received: header of fetchmail's own (fetchmail(1), invisible)
        "set invisible\n"
        "poll %s via %s service %d protocol pop3 timeout 30\n"
        '    user "%s" password "%s"\n'
        "    %s sslproto TLS1.2+ sslcertck sslcertfile \"%s\" "
        "sslcommonname \"%s\"\n"
        "    no rewrite fetchall no keep\n"
        '    mda "%s %s %s"\n'
        % (HOST, SRV, port(server, "pop3s" if how == "pop3s" else "pop3"),
           USER, PASSWORD, "ssl" if how == "pop3s" else "", trust, HOST,
           sys.executable, d / "mda.py", d / "out")))
    env = dict(os.environ, HOME=str(d), FETCHMAILHOME=str(d), LC_ALL="C")
    return run(["fetchmail", "--nosyslog", "-v", "-f", rc], env=env)


@pytest.mark.parametrize("how", ["pop3s", "stls"])
def test_fetchmail(srv, tmp_path, how):
    need("fetchmail", "fetchmail")
    want = fill(srv)
    d = home(tmp_path, "fetchmail")
    r = fetchmail(srv, d, how, cert(srv))
    assert r.returncode == 0, r.log
    assert "SSL/TLS: using protocol TLSv1.2" in r.log, r.log
    assert re.search(SENT_CREDENTIALS["fetchmail"], r.log)
    if how == "stls":
        # STLS first; USER offered and sent only inside TLS
        assert r.log.index("POP3> STLS") < r.log.index("POP3> USER"), r.log
    # fetchmail strips CR from line ends when it delivers to an MDA
    # ("stripcr ... defaults to 'on' when there is an MDA declared").
    assert_retrieved(srv, d, want)


# --- mpop --------------------------------------------------------------------

def mpop(server, d, how, trust):
    """mpop with `tls on`: `stls` (tls_starttls on, the POP3 port) or
    `pop3s` (tls_starttls off)."""
    rc = write_rc(d / "mpoprc", (
        "account default\nhost %s\nport %d\nuser %s\npassword %s\n"
        "tls on\ntls_starttls %s\ntls_trust_file %s\n"
        "tls_host_override %s\n"
        "received_header off\n"  # mpop adds none of its own then
        "uidls_file %s\n"
        "delivery mda \"%s %s %s\"\n"
        % (SRV, port(server, "pop3s" if how == "pop3s" else "pop3"),
           USER, PASSWORD, "off" if how == "pop3s" else "on", trust, HOST,
           d / "uidls", sys.executable, d / "mda.py", d / "out")))
    env = dict(os.environ, HOME=str(d), LC_ALL="C")
    return run(["mpop", "-C", rc, "--all-accounts", "--debug"], env=env)


@pytest.mark.parametrize("how", ["stls", "pop3s"])
def test_mpop(srv, tmp_path, how):
    need("mpop", "mpop")
    want = fill(srv)
    d = home(tmp_path, "mpop")
    r = mpop(srv, d, how, cert(srv))
    assert r.returncode == 0, r.log
    assert "(TLS1.2)-(ECDHE-" in r.log, r.log
    assert re.search(SENT_CREDENTIALS["mpop"], r.log), r.log
    if how == "stls":
        assert "--> STLS" in r.log, r.log
    # mpop hands an MDA the mail with LF line ends (as it is on disk).
    assert_retrieved(srv, d, want)


# --- getmail6 ----------------------------------------------------------------

def getmail(server, d, trust):
    """getmail6's SimplePOP3SSLRetriever on pop3s, the certificate checked
    against ca_certs for ssl_cert_hostname; the messages handed to the
    MDA (allow_root_commands: the tests may run as root, as CI does)."""
    write_rc(d / "getmailrc", (
        "[retriever]\ntype = SimplePOP3SSLRetriever\nserver = %s\n"
        "port = %d\nusername = %s\npassword = %s\n"
        "ca_certs = %s\nssl_cert_hostname = %s\n\n"
        "[destination]\ntype = MDA_external\npath = %s\n"
        "arguments = (\"%s\", \"%s\")\nallow_root_commands = true\n\n"
        "[options]\nread_all = true\ndelete = true\n"
        # no Delivered-To:, Received: of getmail's own
        "delivered_to = false\nreceived = false\n"
        % (SRV, port(server, "pop3s"), USER, PASSWORD, trust, HOST,
           sys.executable, d / "mda.py", d / "out")))
    env = dict(os.environ, HOME=str(d), LC_ALL="C")
    return run(["getmail", "--getmaildir", str(d), "--rcfile", "getmailrc"],
               env=env)


def test_getmail_pop3s(srv, tmp_path):
    need("getmail", "getmail6")
    want = fill(srv)
    d = home(tmp_path, "getmail")
    r = getmail(srv, d, cert(srv))
    assert r.returncode == 0, r.log
    assert "%d messages" % len(want) in r.log and "error" not in r.log, \
        r.log
    assert_retrieved(srv, d, want)


# --- the wrong certificate ----------------------------------------------------

@pytest.mark.parametrize("client", ["swaks", "msmtp-smtps", "msmtp-starttls",
                                    "fetchmail-pop3s", "fetchmail-stls",
                                    "mpop-stls", "mpop-pop3s", "getmail"])
def test_wrong_ca_sends_no_password(srv, tmp_path, wrong_ca, client):
    """A client that trusts another certificate for mx.test (the same
    configuration as above but for the trust file) stops once it sees the
    server's: the right password is never sent (it would have logged in),
    nothing is sent or fetched. OpenSSL clients refuse inside the
    handshake (an alert), GnuTLS ones just after it."""
    name, _, how = client.partition("-")
    need(name, {"getmail": "getmail6"}.get(name, name))
    want = fill(srv)
    before = srv.log_text()
    d = home(tmp_path, name)
    msg = b"From: <bob@localhost>\nSubject: never\n\nnever\n"
    r = {"swaks": lambda: swaks(srv, tmp_path, wrong_ca, msg),
         "msmtp": lambda: msmtp(srv, d, how, wrong_ca, msg),
         "fetchmail": lambda: fetchmail(srv, d, how, wrong_ca),
         "mpop": lambda: mpop(srv, d, how, wrong_ca),
         "getmail": lambda: getmail(srv, d, wrong_ca)}[name]()
    assert REFUSED[name] in r.log, r.log
    assert r.returncode != 0, r.log
    assert not re.search(SENT_CREDENTIALS[name], r.log), r.log
    # The client got as far as the server's certificate, and no further
    # (the server may log it a moment after the client has gone).
    wait_log_re(srv, len(before), r" event=(tls-error error=alert-received-"
                r"\d+ handshake=failed|tls version=TLSv1\.2 )")
    assert delivered(d) == []
    assert stored(srv) == want
    assert logins_inside_tls(srv) == 2  # fill()'s and stored()'s, over pop3s
