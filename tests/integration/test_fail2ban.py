"""The fail2ban filter (contrib/fail2ban/pillarbox.conf) against a real
server log: it must find the real failed POP3 logins and SMTP AUTH
failures (MX and submission listeners), with the client's address, and
nothing a client wrote into a value of another line.

Runs Debian's fail2ban-regex (package fail2ban, in build.sh's DEBS)."""
import base64
import os
import poplib
import re
import shutil
import subprocess

import pytest

from helpers import (TIMEOUT, SMTPConn, expect,  # noqa: F401
                     precreate_server_dirs, make_body, pop3_messages,
                     stored_body)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
FILTER = os.path.join(ROOT, "contrib", "fail2ban", "pillarbox.conf")
FORGED = "event=auth-failed ip=6.6.6.6"

pytestmark = pytest.mark.skipif(shutil.which("fail2ban-regex") is None,
                                reason="no fail2ban-regex (Debian fail2ban)")


def failed_login(server, user, password="wrong"):
    p = poplib.POP3(*server.addr("pop3"), timeout=TIMEOUT)
    try:
        p.user(user)
        with pytest.raises(poplib.error_proto) as e:
            p.pass_(password)
        assert b"[AUTH]" in e.value.args[0], e.value
        p.quit()
    finally:
        p.close()


def failed_smtp_auth(server, proto, user, source=None):
    """One failed SMTP AUTH PLAIN (from source, when given)."""
    with SMTPConn(server, proto=proto, source=source) as c:
        c.ehlo()
        resp = base64.b64encode(("\0%s\0wrong" % user).encode()).decode()
        expect(c.cmd("AUTH PLAIN " + resp), "535",
               "535 5.7.8 Authentication credentials invalid")


def fail2ban_ips(log):
    """The address of every line the filter matches, in order."""
    r = subprocess.run(["fail2ban-regex", "-o", "ip", log, FILTER],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return [l.strip() for l in r.stdout.splitlines() if l.strip()]


def test_filter_matches_real_failures_only(server):
    # three real failures: two wrong passwords, one unknown user
    failed_login(server, "alice@localhost")
    failed_login(server, "bob@localhost")
    failed_login(server, "nobody@localhost")
    # a client that writes the failure line into every value it controls
    body = make_body("forged")
    with SMTPConn(server) as c:
        expect(c.cmd('EHLO x"%s"' % FORGED.replace(" ", "")), "250")
        sender = '"x %s"@example.org' % FORGED
        expect(c.cmd("MAIL FROM:<%s>" % sender), "250 2.1.0")
        expect(c.cmd('RCPT TO:<"y %s"@localhost>' % FORGED), "550 5.1.1")
        expect(c.cmd("RCPT TO:<alice@localhost>"), "250 2.1.5")
        r = c.data(body)
        assert r.code == 250, r
    # and a POP3 user name holding it (POP3 logs user= of a failure)
    failed_login(server, "u %s" % FORGED)
    # SMTP AUTH failures on both listeners, one with the forged text as
    # its user name
    failed_smtp_auth(server, "smtp", "alice@localhost")
    failed_smtp_auth(server, "submission", "u %s" % FORGED)
    (msg,) = pop3_messages(server)
    assert stored_body(msg) == body
    rc = server.stop()
    assert rc == 0
    text = server.log_text()
    assert "ERROR: AddressSanitizer" not in text
    # the log does hold the forged text, encoded
    assert "6.6.6.6" in text
    real = re.findall(r" pop3 warn sid=\S+ event=auth-failed ip=(\S+) ", text)
    assert real == ["127.0.0.1"] * 4, text
    real = re.findall(r" (smtp|submission) warn sid=\S+ event=auth-failed "
                      r"ip=(\S+) ", text)
    assert real == [("smtp", "127.0.0.1"), ("submission", "127.0.0.1")], text
    ips = fail2ban_ips(server.log)
    assert ips == ["127.0.0.1"] * 6, ips
    assert "6.6.6.6" not in ips


def test_filter_finds_smtp_auth_guessers(make_server):
    """SMTP AUTH failures from several addresses: each is found with its
    own address (the address fail2ban bans)."""
    s = make_server(extra={"smtp": {"require_tls_for_auth": "no"}})
    for src in ("127.0.0.21", "127.0.0.22", "127.0.0.21"):
        failed_smtp_auth(s, "submission", "alice@localhost", source=src)
    failed_smtp_auth(s, "smtp", "nobody@localhost", source="127.0.0.23")
    assert s.stop() == 0
    assert fail2ban_ips(s.log) == ["127.0.0.21", "127.0.0.22", "127.0.0.21",
                                   "127.0.0.23"]
