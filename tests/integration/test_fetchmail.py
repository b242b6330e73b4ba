"""A real POP3 client: fetchmail (Debian package) downloads alice's mail
through pillarbox and hands each message to an MDA that writes it to a file;
every file must be the stored message byte for byte, modulo only what
fetchmail documents doing to a message it delivers to an MDA."""
import os
import pwd
import re
import shutil
import subprocess
import sys

import pytest

from pop3util import _server_dirs  # noqa: F401 (autouse fixture)
from pop3util import (BOB, PASSWORD, TRICKY, USER, assert_stored,
                      body, deliver, deliver_many, login)

FETCHMAIL = shutil.which("fetchmail")
pytestmark = pytest.mark.skipif(
    FETCHMAIL is None, reason="fetchmail is not on PATH "
    "(install the Debian package fetchmail)")

# MDA: one new file per message, numbered in delivery order.
MDA = r'''import os, sys
d = sys.argv[1]
data = sys.stdin.buffer.read()
i = 0
while True:
    try:
        fd = os.open(os.path.join(d, "msg.%04d" % i),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        break
    except FileExistsError:
        i += 1
with os.fdopen(fd, "wb") as f:
    f.write(data)
'''

# fetchmail adds its own trace header ("Received: from HOST [IP] by ...
# with POP3 (fetchmail-VERSION) ...", folded over several lines) unless
# `invisible` is set; see "The --invisible option" in fetchmail(1). It puts
# it at the top of the header, after a leading Return-Path line if any.
FETCHMAIL_RECEIVED = re.compile(
    rb"^Received: from [^\n]*\n(?:[ \t][^\n]*\n)*", re.M)


def strip_fetchmail_received(data):
    """Removes the one Received header fetchmail wrote (the first Received
    header of the message, which must name fetchmail)."""
    head = data[:data.find(b"\n\n") + 1]
    m = FETCHMAIL_RECEIVED.search(head)
    assert m and b"(fetchmail-" in m.group(0), head[:500]
    return data[:m.start()] + data[m.end():]


def run_fetchmail(server, home, maildir):
    mda = os.path.join(home, "mda.py")
    with open(mda, "w") as f:
        f.write(MDA)
    rc = os.path.join(home, "fetchmailrc")
    host, port = server.addr("pop3")
    with open(rc, "w") as f:
        f.write(
            'poll %s service %d protocol pop3 timeout 30\n'
            '    user "%s" password "%s"\n'
            # no TLS: the server offers no STLS; sslproto '' stops fetchmail
            # from trying STARTTLS at all (fetchmail(1), --sslproto)
            "    sslproto '' no sslcertck\n"
            # keep headers as they are (no @host appended to addresses)
            '    no rewrite\n'
            '    fetchall\n'
            '    no keep\n'
            '    mda "%s %s %s"\n'
            % (host, port, USER, PASSWORD, sys.executable, mda, maildir))
    os.chmod(rc, 0o600)
    env = dict(os.environ, HOME=home, FETCHMAILHOME=home, LC_ALL="C",
               FETCHMAILUSER=pwd.getpwuid(os.getuid()).pw_name)
    return subprocess.run(
        [FETCHMAIL, "--nosyslog", "--fetchall", "-v", "-f", rc],
        env=env, capture_output=True, timeout=60)


def test_fetchmail_downloads_exact_messages(server, tmp_path):
    msgs = [
        body("fm-plain"),
        body("fm-dots", TRICKY),
        body("fm-8bit", b"\xc3\xa4\xc3\xb6\xc3\xbc \xe2\x82\xac\r\n"
                        b"\xe4\xf6\xfc raw latin-1\r\n"),
        body("fm-big", b"".join(b".%05d " % i + b"y" * 70 + b"\r\n"
                                for i in range(3000))),
        # a body that starts with a '.'-only line and ends with one
        body("fm-edge").replace(b"\r\n\r\nHello", b"\r\n\r\n.\r\nHello")
        + b".\r\n",
    ]
    deliver_many(server, USER, msgs)
    shared = body("fm-shared", b"..for two\r\n")
    deliver(server, [USER, BOB], shared)
    msgs.append(shared)

    # what the store holds, read over POP3 without deleting
    c = login(server)
    stored = [c.retr(i) for i in range(1, len(msgs) + 1)]
    c.quit()
    for d, m in zip(stored, msgs):
        assert_stored(d, m, [USER] if m is not shared else [USER, BOB])

    home = str(tmp_path / "fmhome")
    maildir = str(tmp_path / "delivered")
    os.makedirs(home, mode=0o700)
    os.makedirs(maildir)
    r = run_fetchmail(server, home, maildir)
    log = (r.stdout + r.stderr).decode("utf-8", "replace")
    assert r.returncode == 0, "fetchmail exit %d\n%s" % (r.returncode, log)

    files = sorted(os.listdir(maildir))
    assert len(files) == len(msgs), (files, log)
    got = []
    for name in files:
        with open(os.path.join(maildir, name), "rb") as f:
            got.append(strip_fetchmail_received(f.read()))
    # fetchmail strips CR from line ends when it delivers to an MDA
    # ("stripcr ... defaults to 'on' when there is an MDA declared",
    # fetchmail(1)); that and the Received header above are the only
    # normalisations.
    want = [d.replace(b"\r\n", b"\n") for d in stored]
    assert sorted(got) == sorted(want), log[-4000:]

    # fetchmail deleted what it retrieved (no keep) ...
    c = login(server)
    assert c.stat() == (0, 0)
    c.quit()
    # ... but the copy shared with bob is still his
    c = login(server, BOB)
    assert c.stat()[0] == 1
    assert_stored(c.retr(1), shared, [USER, BOB])
    c.quit()
    # a second poll finds nothing (fetchmail exit 1 = no mail)
    r = run_fetchmail(server, home, maildir)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert len(os.listdir(maildir)) == len(msgs)
