"""The command line and the config file: every verb, exit codes, errors
reported as FILE:LINE, and the CLI working while the server runs."""
import os
import poplib
import smtplib
import socket
import subprocess
import time

import pytest

from conftest import BIN, Server


def run(*args, stdin=None, cwd=None):
    return subprocess.run([BIN, *args], input=stdin, capture_output=True,
                          text=True, timeout=60, cwd=cwd)


def test_version_and_help():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("pillarbox ")
    r = run("--help")
    assert r.returncode == 0
    for verb in ("serve", "user add", "alias add", "domain add", "queue list"):
        assert verb in r.stdout


def test_usage_errors_exit_2(tmp_path):
    for args in ([], ["frobnicate"], ["user"], ["user", "add"],
                 ["alias", "add", "x@localhost"], ["--bogus"]):
        r = run(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert "usage:" in r.stderr


@pytest.mark.parametrize("text,line,what", [
    ("[server]\nbogus = 1\n", 2, "unknown key 'bogus' in [server]"),
    ("[nosuch]\nx = 1\n", 2, "unknown section [nosuch]"),
    ("# comment\n[smtp]\nmax_recipients = abc\n", 3,
     "bad value for max_recipients: 'abc'"),
    ("[smtp]\nlisten = 127.0.0.1\n", 2, "bad value for listen"),
    ("[pop3]\nlisten = [::1\n", 2, "bad value for listen"),
    ("[smtp]\ntimeout = 0\n", 2, "bad value for timeout: '0'"),
    ("[smtp]\nmax_message_size = 10X\n", 2, "bad value for max_message_size"),
    ("[server]\nhostname = two words\n", 2, "bad value for hostname"),
    ("just garbage\n", 1, "syntax error"),
])
def test_config_errors(tmp_path, text, line, what):
    conf = tmp_path / "bad.conf"
    conf.write_text(text)
    for args in (["serve", "-c", str(conf)], ["-c", str(conf), "user", "list"],
                 ["user", "list", "-c", str(conf)]):
        r = run(*args, cwd=tmp_path)
        assert r.returncode == 2, r
        assert r.stderr.startswith("%s:%d: %s" % (conf, line, what)), r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    # Nothing was started or created (the default data_dir is ./).
    assert not (tmp_path / "pillarbox-data").exists()


def test_unreadable_config(tmp_path):
    r = run("-c", str(tmp_path / "missing.conf"), "user", "list")
    assert r.returncode == 2
    assert r.stderr.startswith(str(tmp_path / "missing.conf") + ":0: ")


def test_defaults_without_config(tmp_path):
    """Without -c the CLI uses the built-in defaults: ./pillarbox-data and
    the domain localhost."""
    r = run("user", "add", "alice@localhost", stdin="pw\n", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "pillarbox-data").is_dir()
    assert run("user", "list", cwd=tmp_path).stdout == \
        "alice@localhost messages=0 used=0 quota=none\n"
    assert run("domain", "list", cwd=tmp_path).stdout == "localhost\n"
    assert run("queue", "list", cwd=tmp_path).stdout == ""


def test_user_alias_domain_verbs(make_server):
    s = make_server(users=(), start=False)
    cli = s.cli
    cli("user", "add", "Carol@Example.ORG", stdin="pw1\n")
    assert cli("user", "list").stdout == \
        "carol@example.org messages=0 used=0 quota=none\n"
    r = cli("user", "add", "carol@example.org", stdin="x\n", check=False)
    assert r.returncode == 1 and "already exists" in r.stderr
    r = cli("user", "add", "dave@nowhere.test", stdin="x\n", check=False)
    assert r.returncode == 1 and "not local" in r.stderr
    for bad in ("nobody", "a@b@c", "a b@localhost", "@localhost"):
        r = cli("user", "add", bad, stdin="x\n", check=False)
        assert r.returncode == 1, bad
    r = cli("user", "add", "eve@localhost", stdin="", check=False)
    assert r.returncode == 1 and "password" in r.stderr

    cli("domain", "add", "nowhere.test")
    assert "nowhere.test" in cli("domain", "list").stdout.split()
    cli("user", "add", "dave@nowhere.test", stdin="x\n")
    r = cli("domain", "del", "localhost", check=False)  # from the config
    assert r.returncode == 1 and "config" in r.stderr

    cli("user", "add", "bob@localhost", stdin="pw\n")
    cli("alias", "add", "team@localhost", "carol@example.org,bob@localhost")
    assert cli("alias", "list").stdout == \
        "team@localhost carol@example.org,bob@localhost\n"
    r = cli("alias", "add", "x@localhost", "ghost@localhost", check=False)
    assert r.returncode == 1
    r = cli("alias", "add", "bob@localhost", "carol@example.org", check=False)
    assert r.returncode == 1 and "already exists" in r.stderr
    cli("alias", "del", "team@localhost")
    assert cli("alias", "list").stdout == ""
    r = cli("alias", "del", "team@localhost", check=False)
    assert r.returncode == 1 and "no such entry" in r.stderr

    cli("user", "del", "dave@nowhere.test")
    cli("domain", "del", "nowhere.test")
    assert "nowhere.test" not in cli("domain", "list").stdout
    r = cli("user", "del", "dave@nowhere.test", check=False)
    assert r.returncode == 1


def test_user_quota_set_and_show(make_server):
    """`user quota ADDRESS SIZE` sets it (k, M, G binary; 0 = none), `user
    quota ADDRESS` shows the user's `user list` line; a bad size changes
    nothing. (What the usage counts: test_quota.py.)"""
    s = make_server(start=False)
    assert s.cli("user", "list").stdout == (
        "alice@localhost messages=0 used=0 quota=none\n"
        "bob@localhost messages=0 used=0 quota=none\n")
    for size, octets in (("100M", 100 << 20), ("2G", 2 << 30),
                         ("512k", 512 << 10), ("12345", 12345)):
        s.cli("user", "quota", "Alice@localhost", size)
        assert s.cli("user", "quota", "alice@localhost").stdout == \
            "alice@localhost messages=0 used=0 quota=%d\n" % octets
    s.cli("user", "admin", "bob@localhost", "on")
    assert s.cli("user", "list").stdout == (
        "alice@localhost messages=0 used=0 quota=12345\n"
        "bob@localhost messages=0 used=0 quota=none admin\n")
    s.cli("user", "quota", "alice@localhost", "0")
    assert s.cli("user", "quota", "alice@localhost").stdout == \
        "alice@localhost messages=0 used=0 quota=none\n"
    for bad in ("10X", "-1", "1.5G", "", "M", "99999999999999999999"):
        r = s.cli("user", "quota", "alice@localhost", bad, check=False)
        assert r.returncode == 1 and "bad size" in r.stderr, (bad, r)
    assert s.cli("user", "quota", "alice@localhost").stdout == \
        "alice@localhost messages=0 used=0 quota=none\n"
    r = s.cli("user", "quota", "nobody@localhost", "1M", check=False)
    assert r.returncode == 1 and "no such entry" in r.stderr
    r = s.cli("user", "quota", "nobody@localhost", check=False)
    assert r.returncode == 1 and "no such entry" in r.stderr
    r = s.cli("user", "quota", check=False)
    assert r.returncode == 2 and "usage:" in r.stderr


def test_cli_while_server_runs(server):
    """LMDB lets the CLI write while the server runs: a user added now
    receives mail at once, a new password works at once."""
    server.add_user("zoe@localhost", "first")
    host, port = server.addr("smtp")
    with smtplib.SMTP(host, port) as c:
        c.sendmail("a@example.com", ["zoe@localhost"],
                   b"Subject: hi\r\n\r\nhello\r\n")
    server.cli("user", "passwd", "zoe@localhost", stdin="second\n")
    p = poplib.POP3(*server.addr("pop3"))
    p.user("zoe@localhost")
    with pytest.raises(poplib.error_proto):
        p.pass_("first")
    p.quit()
    p = poplib.POP3(*server.addr("pop3"))
    p.user("zoe@localhost")
    p.pass_("second")
    assert p.stat()[0] == 1
    p.quit()
    server.cli("user", "del", "zoe@localhost")
    with smtplib.SMTP(host, port) as c:
        c.ehlo()
        assert c.mail("a@example.com")[0] == 250
        assert c.rcpt("zoe@localhost")[0] == 550


def test_ipv6_listeners(make_server):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 on this machine")
    s = make_server(extra={"smtp": {"listen": "[::1]:0"},
                           "pop3": {"listen": "[::1]:0"}})
    assert s.ports["smtp"].startswith("[::1]:")
    host, port = s.addr("smtp")
    with smtplib.SMTP(host, port) as c:
        assert c.ehlo()[0] == 250
        c.sendmail("a@example.com", ["alice@localhost"], b"\r\nv6\r\n")
    p = poplib.POP3(*s.addr("pop3"))
    p.user("alice@localhost")
    p.pass_("secret")
    assert p.stat()[0] == 1
    p.quit()


def test_listener_off(make_server):
    """An empty listen key turns that listener off."""
    s = make_server(extra={"pop3": {"listen": ""}})
    assert "smtp" in s.ports and "pop3" not in s.ports


def test_listen_conflict_exits(make_server):
    """A port that cannot be bound: a clear error, exit 1, nothing left."""
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    s = make_server(extra={"smtp": {"listen": "127.0.0.1:%d" % port}},
                    start=False)
    r = subprocess.run([BIN, "serve", "-c", s.conf], capture_output=True,
                       text=True, timeout=60)
    blocker.close()
    assert r.returncode == 1
    assert "listen-error" in r.stderr and "address already in use" in r.stderr


def test_stats_line_counts_logins_and_messages(make_server):
    """POP3 logins reach core as events (core counts them; the relay rules
    will use them); the stats line at a graceful stop shows the figures."""
    s = make_server()
    host, port = s.addr("smtp")
    with smtplib.SMTP(host, port) as c:
        c.sendmail("a@example.com", ["alice@localhost", "bob@localhost"],
                   b"\r\none\r\n")
    for user, pw in (("alice@localhost", "secret"), ("bob@localhost", "bad"),
                     ("bob@localhost", "secret")):
        p = poplib.POP3(*s.addr("pop3"))
        p.user(user)
        try:
            p.pass_(pw)
        except poplib.error_proto:
            pass
        p.quit()
    assert s.stop() == 0
    assert "event=stats commits=1 jobs=1 accepted=1 logins=2" in s.log_text()


def _wait_store_open(proc, data_dir, timeout=10):
    """Waits until process proc has the LMDB environment in data_dir open
    (its data.mdb among its file descriptors), then a little longer, so it
    has gone on to whatever it does next (here: wait on stdin)."""
    data = os.path.realpath(os.path.join(data_dir, "data.mdb"))
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            fds = os.listdir("/proc/%d/fd" % proc.pid)
            if any(os.path.realpath("/proc/%d/fd/%s" % (proc.pid, fd)) == data
                   for fd in fds):
                time.sleep(0.5)
                return
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    raise AssertionError("the CLI never opened %s" % data)


def test_cli_password_wait_holds_no_write_lock(server):
    """`user add` reads and hashes its password before it takes the store's
    write transaction: while the CLI sits on an open, empty stdin (an admin
    at a terminal who has not typed yet), the running server still commits
    (an SMTP DATA gets its 250 within the client's 10 s timeout) and POP3
    logins work. Then the password line arrives: the CLI exits 0 and the
    new account logs in and receives mail."""
    proc = subprocess.Popen([BIN, "-c", server.conf, "user", "add",
                             "carol@localhost"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_store_open(proc, server.data)
        host, port = server.addr("smtp")
        msg = b"Subject: while the CLI waits\r\n\r\nhello\r\n"
        with smtplib.SMTP(host, port, local_hostname="client.test",
                          timeout=10) as c:
            c.ehlo()
            assert c.mail("a@example.com")[0] == 250
            assert c.rcpt("alice@localhost")[0] == 250
            try:
                code, text = c.data(msg)
            except (OSError, smtplib.SMTPException) as e:
                pytest.fail("DATA got no reply within 10 s while `user add` "
                            "waited for its password: %r" % (e,))
            assert code == 250 and text.startswith(b"2.0.0 Ok: stored as "), \
                (code, text)
        p = poplib.POP3(host, server.addr("pop3")[1], timeout=10)
        p.user("alice@localhost")
        assert p.pass_("secret") == b"+OK Logged in."
        count, _ = p.stat()
        assert count == 1
        _, lines, _ = p.retr(1)
        assert lines[-1] == b"hello"
        p.quit()
        assert proc.poll() is None, "the CLI did not wait for its password"
        out, err = proc.communicate(b"carol-pw\n", timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:       # EOF on stdin: the CLI gives up
            proc.stdin.close()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert "carol@localhost" in server.cli("user", "list").stdout.split()
    with smtplib.SMTP(host, port, timeout=10) as c:
        c.sendmail("a@example.com", ["carol@localhost"],
                   b"Subject: for carol\r\n\r\nhi carol\r\n")
    p = poplib.POP3(host, server.addr("pop3")[1], timeout=10)
    p.user("carol@localhost")
    assert p.pass_("carol-pw") == b"+OK Logged in."
    assert p.stat()[0] == 1
    p.quit()
