"""TLS against the real binary: implicit TLS on [smtp] smtps and [pop3] pop3s
with Python's ssl module (and swaks), the self-signed certificate made at
first start, configured RSA and EC certificates, SIGHUP reloading, bad
certificate configs, and what must be refused (plaintext on a TLS port, TLS
on a plaintext port, TLS 1.1, CBC-only clients).

Clients check the certificate against the file the server uses and the
configured hostname mx.test (connecting to 127.0.0.1 with server_hostname
set). Test certificates are made with the openssl command in tmp_path."""
import os
import poplib
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from conftest import BIN
from mxutil import wait_for

HOST = "mx.test"
TLS_ON = {"smtp": {"smtps": "127.0.0.1:0"}, "pop3": {"pop3s": "127.0.0.1:0"}}
MSG = b"From: <bob@localhost>\r\nSubject: over TLS\r\n\r\nsecret body\r\n"


def context(cafile):
    """A client context that trusts cafile only and checks the name."""
    ctx = ssl.create_default_context(cafile=cafile)
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    return ctx


def tls_socket(addr, ctx, name=HOST, timeout=10):
    s = socket.create_connection(addr, timeout=timeout)
    try:
        return ctx.wrap_socket(s, server_hostname=name)
    except BaseException:
        s.close()
        raise


class POP3S(poplib.POP3_SSL):
    """POP3_SSL connecting to an address but checking HOST."""

    def _create_socket(self, timeout):
        return tls_socket((self.host, self.port), self.context,
                          timeout=timeout)


class SMTPS(smtplib.SMTP_SSL):
    """SMTP_SSL connecting to an address but checking HOST."""

    def _get_socket(self, host, port, timeout):
        return tls_socket((host, port), self.context, timeout=timeout)


def selfsigned(server):
    return os.path.join(server.data, "selfsigned-cert.pem")


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True,
                   capture_output=True, timeout=60)


def make_cert(d, name, kind):
    """A self-signed certificate for HOST in d: name.pem, name.key; kind is
    "rsa" (2048 bits) or "ec" (P-384, to differ from the built-in P-256)."""
    key = ["-newkey", "rsa:2048"] if kind == "rsa" else \
        ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"]
    openssl("req", "-x509", *key, "-nodes", "-keyout", name + ".key",
            "-out", name + ".pem", "-subj", "/CN=" + HOST, "-days", "2",
            "-addext", "subjectAltName=DNS:" + HOST, cwd=d)
    return os.path.join(d, name + ".pem"), os.path.join(d, name + ".key")


def der(pem_file):
    with open(pem_file) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def wait_log(server, text, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in server.log_text():
            return
        time.sleep(0.02)
    raise AssertionError("no %r in log:\n%s" % (text, server.log_text()))


# --- implicit TLS with the self-signed certificate ---------------------------

def test_smtps_send_pop3s_retrieve(make_server):
    s = make_server(extra=TLS_ON)
    ctx = context(selfsigned(s))
    with SMTPS(*s.addr("smtps"), context=ctx) as c:
        assert c.sock.version() == "TLSv1.2"  # BearSSL has no TLS 1.3
        c.ehlo("client.test")
        # 465 is submission (RFC 8314): log in, send as yourself.
        assert "STARTTLS" not in c.esmtp_features
        c.login("bob@localhost", "secret")
        c.sendmail("bob@localhost", ["alice@localhost"], MSG)
    p = POP3S(*s.addr("pop3s"), context=ctx)
    assert p.sock.version() == "TLSv1.2"
    assert "ECDHE-ECDSA" in p.sock.cipher()[0]
    p.user("alice@localhost")
    p.pass_("secret")
    assert p.stat()[0] == 1
    lines = p.retr(1)[1]
    assert b"secret body" in lines
    assert p.quit().startswith(b"+OK")
    assert "event=tls version=TLSv1.2 cipher=ECDHE-ECDSA-" in s.log_text()


def test_selfsigned_made_once_and_parsed_by_openssl(make_server):
    s = make_server(extra=TLS_ON)
    cert = selfsigned(s)
    key = os.path.join(s.data, "selfsigned-key.pem")
    assert "event=tls-selfsigned cert=%s key=%s" % (cert, key) in \
        s.log_text()
    assert os.stat(key).st_mode & 0o777 == 0o600
    r = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-text"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for want in ("Subject: CN = mx.test", "Issuer: CN = mx.test",
                 "DNS:mx.test", "CA:FALSE", "ecdsa-with-SHA256",
                 "NIST CURVE: P-256"):
        assert want in r.stdout, r.stdout
    # Verified as its own trust anchor, for the server's name.
    r = subprocess.run(["openssl", "verify", "-CAfile", cert,
                        "-verify_hostname", HOST, cert],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    # A restart reuses the pair.
    with open(cert) as f:
        before = f.read()
    s.stop()
    s.start()
    with open(cert) as f:
        assert f.read() == before
    assert s.log_text().count("event=tls-selfsigned") == 1
    tls_socket(s.addr("pop3s"), context(cert)).close()


def test_swaks_implicit_tls(make_server):
    s = make_server(extra=TLS_ON)
    host, port = s.addr("smtps")
    r = subprocess.run(["swaks", "--to", "alice@localhost", "--from",
                        "bob@localhost", "--server", host, "--port",
                        str(port), "--tlsc", "--helo", "client.test",
                        "--auth", "PLAIN", "--auth-user", "bob@localhost",
                        "--auth-password", "secret"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "TLS started" in r.stdout, r.stdout
    p = POP3S(*s.addr("pop3s"), context=context(selfsigned(s)))
    p.user("alice@localhost")
    p.pass_("secret")
    assert p.stat()[0] == 1
    p.quit()


# --- what is refused ------------------------------------------------------------

def test_plaintext_on_tls_port_closed(make_server):
    """A plaintext client on a TLS port: one that speaks is dropped at once,
    one that waits for a greeting after the (short) idle timeout; TLS
    clients on the same port go on meanwhile."""
    s = make_server(extra={"smtp": {"smtps": "127.0.0.1:0", "timeout": "2"},
                           "pop3": {"pop3s": "127.0.0.1:0"}})
    talker = socket.create_connection(s.addr("smtps"), timeout=10)
    talker.sendall(b"EHLO client.test\r\n")
    assert talker.recv(100) == b""
    # dropped for what it said, not for its silence
    wait_for(lambda: "error=unsupported-version" in s.log_text(),
             what="the talker's log line")
    assert "error=timeout" not in s.log_text()
    waiter = socket.create_connection(s.addr("smtps"), timeout=10)
    # Meanwhile a TLS session on the same port goes on.
    with SMTPS(*s.addr("smtps"), context=context(selfsigned(s))) as c:
        assert c.noop()[0] == 250
    assert waiter.recv(100) == b""  # no greeting in clear, ever
    talker.close()
    waiter.close()
    # The server writes its log once per loop turn: the line may follow
    # the close the client saw.
    wait_for(lambda: "error=timeout handshake=failed" in s.log_text(),
             what="the waiter's timeout line")
    assert s.log_text().count("handshake=failed") == 2


def test_tls_on_plaintext_port_fails_fast(make_server):
    s = make_server(extra=TLS_ON)
    t0 = time.time()
    with pytest.raises((ssl.SSLError, OSError)):
        tls_socket(s.addr("smtp"), context(selfsigned(s)))
    assert time.time() - t0 < 5
    with smtplib.SMTP(*s.addr("smtp")) as c:  # others unaffected
        assert c.noop()[0] == 250


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("how", ["tls1.1", "cbc-only", "rsa-only"])
def test_refused_clients(make_server, how):
    """TLS 1.1, CBC suites, RSA key exchange: no handshake; a default
    client gets TLS 1.2 (never 1.3, which BearSSL lacks)."""
    s = make_server(extra=TLS_ON)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if how == "tls1.1":
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    else:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA"
                        if how == "cbc-only" else
                        "AES128-GCM-SHA256:AES256-GCM-SHA384")
    with pytest.raises((ssl.SSLError, OSError)):
        tls_socket(s.addr("pop3s"), ctx)
    wait_log(s, "event=tls-error")
    ok = tls_socket(s.addr("pop3s"), context(selfsigned(s)))
    assert ok.version() == "TLSv1.2"
    ok.close()


def test_server_preference_wins(make_server):
    """The client lists AES-256 first; the server's order gives AES-128."""
    s = make_server(extra=TLS_ON)
    ctx = context(selfsigned(s))
    ctx.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384:"
                    "ECDHE-ECDSA-AES128-GCM-SHA256")
    c = tls_socket(s.addr("pop3s"), ctx)
    assert c.cipher()[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"
    c.close()


# --- configured certificates -------------------------------------------------

@pytest.mark.parametrize("kind,suite", [("rsa", "ECDHE-RSA-"),
                                        ("ec", "ECDHE-ECDSA-")])
def test_configured_cert_served(make_server, tmp_path, kind, suite):
    cert, key = make_cert(str(tmp_path), kind, kind)
    extra = dict(TLS_ON, tls={"cert": cert, "key": key})
    s = make_server(extra=extra)
    assert not os.path.exists(selfsigned(s))
    c = tls_socket(s.addr("smtps"), context(cert))
    assert c.getpeercert(binary_form=True) == der(cert)
    assert c.cipher()[0].startswith(suite), c.cipher()
    assert c.recv(100).startswith(b"220 mx.test")
    c.close()


def test_configured_chain_served(make_server, tmp_path):
    """A certificate signed by a CA, the file holding the chain: a client
    that trusts only the CA verifies it."""
    d = str(tmp_path)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
            "-out", "ca.pem", "-subj", "/CN=Test CA", "-days", "2",
            "-addext", "basicConstraints=critical,CA:TRUE", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key",
            "-out", "srv.csr", "-subj", "/CN=" + HOST, cwd=d)
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:%s\n" % HOST)
    openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey",
            "ca.key", "-CAcreateserial", "-days", "2", "-extfile",
            "ext.cnf", "-out", "srv.pem", cwd=d)
    with open(os.path.join(d, "chain.pem"), "w") as f:
        for n in ("srv.pem", "ca.pem"):
            f.write(open(os.path.join(d, n)).read())
    s = make_server(extra=dict(TLS_ON, tls={
        "cert": os.path.join(d, "chain.pem"),
        "key": os.path.join(d, "srv.key")}))
    p = POP3S(*s.addr("pop3s"), context=context(os.path.join(d, "ca.pem")))
    p.user("alice@localhost")
    p.pass_("secret")
    p.quit()
    assert "key_type=rsa chain=2" in s.log_text()


def test_sighup_reloads_certificate(make_server, tmp_path):
    d = str(tmp_path)
    a_cert, a_key = make_cert(d, "a", "ec")
    b_cert, b_key = make_cert(d, "b", "rsa")
    cur_cert, cur_key = os.path.join(d, "cur.pem"), os.path.join(d, "cur.key")

    def install(cert, key):
        for src, dst in ((cert, cur_cert), (key, cur_key)):
            with open(src, "rb") as f, open(dst + ".new", "wb") as g:
                g.write(f.read())
            os.rename(dst + ".new", dst)

    install(a_cert, a_key)
    s = make_server(extra=dict(TLS_ON, tls={"cert": cur_cert,
                                            "key": cur_key}))
    old = POP3S(*s.addr("pop3s"), context=context(a_cert))
    old.user("alice@localhost")
    old.pass_("secret")

    install(b_cert, b_key)
    s.proc.send_signal(signal.SIGHUP)
    wait_log(s, "event=tls-reload cert=%s key_type=rsa" % cur_cert)
    c = tls_socket(s.addr("pop3s"), context(b_cert))
    assert c.getpeercert(binary_form=True) == der(b_cert)
    c.close()
    assert old.stat() == (0, 0)  # the session begun before goes on

    # A broken pair is logged and the current one kept.
    with open(cur_cert, "w") as f:
        f.write("garbage\n")
    s.proc.send_signal(signal.SIGHUP)
    wait_log(s, "event=tls-reload-failed")
    c = tls_socket(s.addr("smtps"), context(b_cert))
    assert c.getpeercert(binary_form=True) == der(b_cert)
    c.close()
    assert old.quit().startswith(b"+OK")


# --- bad certificate configs -------------------------------------------------

def key_line(conf, key):
    with open(conf) as f:
        for i, line in enumerate(f, 1):
            if re.match(r"%s\s*=" % key, line):
                return i
    raise AssertionError(key)


@pytest.mark.parametrize("case", ["missing-cert", "missing-key", "mismatch",
                                  "junk-cert", "cert-only"])
def test_bad_cert_config_exits_2(make_server, tmp_path, case):
    d = str(tmp_path)
    cert, key = make_cert(d, "ec", "ec")
    other_cert, other_key = make_cert(d, "rsa", "rsa")
    junk = os.path.join(d, "junk.pem")
    with open(junk, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nAAAA\n")
    tls, bad_key, named = {
        "missing-cert": ({"cert": d + "/none.pem", "key": key}, "cert",
                         d + "/none.pem"),
        "missing-key": ({"cert": cert, "key": d + "/none.key"}, "key",
                        d + "/none.key"),
        "mismatch": ({"cert": cert, "key": other_key}, "key", other_key),
        "junk-cert": ({"cert": junk, "key": key}, "cert", junk),
        "cert-only": ({"cert": cert}, "cert", "[tls] cert and key"),
    }[case]
    s = make_server(extra=dict(TLS_ON, tls=tls), start=False)
    r = subprocess.run([BIN, "serve", "-c", s.conf], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2, r
    err = [l for l in r.stderr.splitlines() if " pillarbox " not in l]
    assert len(err) == 1, r.stderr
    prefix = "%s:%d: " % (s.conf, key_line(s.conf, bad_key))
    assert err[0].startswith(prefix), (prefix, err)
    assert named in err[0]
    assert "event=listening" not in r.stderr


def test_min_version_only_1_2(make_server):
    s = make_server(extra=dict(TLS_ON, tls={"min_version": "1.2"}))
    assert "pop3s" in s.ports
    s2 = make_server(extra=dict(TLS_ON, tls={"min_version": "1.3"}),
                     users=(), start=False)
    r = subprocess.run([BIN, "serve", "-c", s2.conf], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.startswith("%s:%d: bad value for min_version: '1.3'"
                               % (s2.conf, key_line(s2.conf,
                                                    "min_version")))


def test_large_message_both_ways(make_server):
    """3 MiB in through SMTPS (DATA, many records per read) and out
    through POP3S (RETR streamed under backpressure), byte for byte."""
    s = make_server(extra=TLS_ON)
    ctx = context(selfsigned(s))
    body = b"".join(b"line %06d %s\r\n" % (i, b"x" * 60)
                    for i in range(3 * 1024 * 1024 // 74))
    with SMTPS(*s.addr("smtps"), context=ctx) as c:
        c.login("bob@localhost", "secret")
        c.sendmail("bob@localhost", ["alice@localhost"],
                   b"From: bob@localhost\r\nSubject: big\r\n\r\n" + body)
    p = POP3S(*s.addr("pop3s"), context=ctx)
    p.user("alice@localhost")
    p.pass_("secret")
    got = b"\r\n".join(p.retr(1)[1]) + b"\r\n"
    assert got.endswith(b"From: bob@localhost\r\nSubject: big\r\n\r\n" + body)
    p.quit()


# --- session resumption ------------------------------------------------------

def resume(addr, ctx, session):
    """A TLS connection to addr offering session (checked for HOST)."""
    s = socket.create_connection(addr, timeout=10)
    try:
        return ctx.wrap_socket(s, server_hostname=HOST, session=session)
    except BaseException:
        s.close()
        raise


def test_session_resumed(make_server):
    """A client that offers its last session's ID gets it back (no ECDHE,
    no certificate), on either implicit-TLS port: one cache for every
    listener. A SIGHUP reload forgets them all: the next handshake is a
    full one, with the certificate."""
    s = make_server(extra=TLS_ON)
    ctx = context(selfsigned(s))
    first = tls_socket(s.addr("pop3s"), ctx)
    assert not first.session_reused
    assert first.recv(100) == b"+OK pillarbox ready.\r\n"
    session = first.session
    assert session is not None and session.id != b""
    first.close()

    again = resume(s.addr("pop3s"), ctx, session)
    assert again.session_reused
    assert again.session.id == session.id
    # the session is a working one: log in and out over it
    again.sendall(b"USER alice@localhost\r\nPASS secret\r\nQUIT\r\n")
    got = b""
    while got.count(b"\r\n") < 4:
        chunk = again.recv(1000)
        assert chunk, got
        got += chunk
    assert got == (b"+OK pillarbox ready.\r\n+OK\r\n+OK Logged in.\r\n"
                   b"+OK Logging out.\r\n"), got
    again.close()

    other = resume(s.addr("smtps"), ctx, session)
    assert other.session_reused
    assert other.recv(100).startswith(b"220 mx.test ESMTP")
    other.close()

    s.proc.send_signal(signal.SIGHUP)
    wait_log(s, "event=tls-reload cert=")
    after = resume(s.addr("pop3s"), ctx, session)
    assert not after.session_reused
    assert after.session.id != session.id
    assert after.getpeercert(binary_form=True) == der(selfsigned(s))
    after.close()
