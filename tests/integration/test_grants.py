"""POP-before-SMTP grants as the running server holds them, seen through
the control socket with `pillarbox grants`; the control socket itself (mode,
one server per data_dir, a silent client holds nothing); and the config
keys of the relay rules, refused as FILE:LINE.

POP3 logins come from other loopback addresses (127.0.0.3, ...) so that
each test's clients are told apart, as real ones would be."""
import calendar
import os
import poplib
import re
import socket
import stat
import subprocess
import time

import pytest

from conftest import BIN, Server

GRANT_RE = re.compile(r"^(\S+) (\S+) (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) (\d+)$")
NOT_RUNNING = "pillarbox: the server is not running (no control socket in %s)\n"


class SourcePOP3(poplib.POP3):
    """poplib.POP3 from a chosen local address."""

    def __init__(self, host, port, source):
        self.source = source
        super().__init__(host, port, timeout=10)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.source, 0))


def pop_login(server, source, user="alice@localhost", password="secret"):
    """Logs in over POP3 from source; True if the password was taken."""
    p = SourcePOP3(*server.addr("pop3"), source)
    try:
        p.user(user)
        p.pass_(password)
        return True
    except poplib.error_proto:
        return False
    finally:
        p.quit()


def grants(server):
    """`pillarbox grants` as {address: (user, expires, left)}."""
    r = server.cli("grants")
    assert r.stderr == ""
    out = {}
    for line in r.stdout.splitlines():
        m = GRANT_RE.match(line)
        assert m, line
        when = calendar.timegm(time.strptime(m.group(3),
                                             "%Y-%m-%dT%H:%M:%SZ"))
        out[m.group(1)] = (m.group(2), when, int(m.group(4)))
    return out


def control_raw(server, data, wait=True):
    """Sends data on the control socket; returns the whole answer."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(os.path.join(server.data, "control.sock"))
    s.sendall(data)
    buf = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    s.close()
    return buf


def test_pop3_login_grants_its_address(make_server):
    s = make_server()
    assert grants(s) == {}
    assert pop_login(s, "127.0.0.3")
    assert not pop_login(s, "127.0.0.4", password="wrong")
    g = grants(s)
    assert list(g) == ["127.0.0.3"]  # a failed login grants nothing
    user, expires, left = g["127.0.0.3"]
    assert user == "alice@localhost"
    assert 1790 <= left <= 1800  # pop_before_smtp's default
    assert abs(expires - (time.time() + left)) <= 2
    assert re.search(r"relay info event=relay-grant ip=127\.0\.0\.3 "
                     r"user=alice@localhost seconds=1800", s.log_text())

    # another login refreshes the grant; bob's takes it over
    assert pop_login(s, "127.0.0.3", user="bob@localhost")
    assert pop_login(s, "127.0.0.5")
    g = grants(s)
    assert list(g) == ["127.0.0.3", "127.0.0.5"]  # soonest to end first
    assert g["127.0.0.3"][0] == "bob@localhost"
    assert g["127.0.0.5"][0] == "alice@localhost"


def test_grant_expires(make_server):
    s = make_server(extra={"smtp": {"pop_before_smtp": "2"}})
    assert pop_login(s, "127.0.0.6")
    g = grants(s)
    assert "127.0.0.6" in g and 1 <= g["127.0.0.6"][2] <= 2
    deadline = time.time() + 30
    while "127.0.0.6" in grants(s):
        assert time.time() < deadline, "grant outlived its window"
        time.sleep(0.2)
    assert grants(s) == {}


def test_pop_before_smtp_off(make_server):
    s = make_server(extra={"smtp": {"pop_before_smtp": "0"}})
    assert pop_login(s, "127.0.0.3")
    assert grants(s) == {}


def test_grants_without_a_server(make_server):
    s = make_server(start=False)
    r = s.cli("grants", check=False)
    assert r.returncode == 1
    assert r.stderr == NOT_RUNNING % s.data and r.stdout == ""
    # after a graceful stop the socket is gone
    s.start()
    sock = os.path.join(s.data, "control.sock")
    assert os.path.exists(sock)
    assert s.stop() == 0
    assert not os.path.exists(sock)
    assert s.cli("grants", check=False).stderr == NOT_RUNNING % s.data
    # a killed server leaves its socket behind: nobody answers on it, and
    # the next server replaces it
    s.start()
    s.kill9()
    assert os.path.exists(sock)
    r = s.cli("grants", check=False)
    assert r.returncode == 1 and r.stderr == NOT_RUNNING % s.data
    s.start()
    assert grants(s) == {}


def test_control_socket_is_private(server):
    st = os.stat(os.path.join(server.data, "control.sock"))
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600


def test_one_server_per_data_dir(server):
    """A second server on the same data_dir refuses to start (and leaves
    the first one's socket alone)."""
    r = subprocess.run([BIN, "serve", "-c", server.conf],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "event=control-error" in r.stderr
    assert "another-server-is-running" in r.stderr
    assert "event=ready" not in r.stderr
    assert grants(server) == {}


def test_control_protocol(server):
    assert control_raw(server, b"GRANTS\n") == b"OK\n.\n"
    assert control_raw(server, b"grants\r\n") == b"OK\n.\n"
    assert control_raw(server, b"FROB\n") == b"ERR unknown command\n"
    assert control_raw(server, b"GRANTS all\n") == b"ERR too many arguments\n"
    assert control_raw(server, b"G" * 600) == b"ERR line too long\n"


def test_silent_control_client_holds_nothing(server):
    """A client that connects and never sends does not stop anyone else,
    and is dropped after the control idle time (5 s)."""
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(os.path.join(server.data, "control.sock"))
    t0 = time.time()
    assert grants(server) == {}
    assert time.time() - t0 < 3
    silent.settimeout(30)
    assert silent.recv(100) == b""  # closed by the server
    assert time.time() - t0 >= 4
    silent.close()
    assert "event=timeout" in server.log_text()


def test_grants_in_help():
    r = subprocess.run([BIN, "--help"], capture_output=True, text=True)
    assert "grants" in r.stdout and "EXPIRES" in r.stdout


@pytest.mark.parametrize("text,line,what", [
    ("[smtp]\nrelay_networks = 10.0.0.1/8\n", 2,
     "bad value for relay_networks: '10.0.0.1/8'"),
    ("[smtp]\nrelay_networks = 127.0.0.0/8, 10.0.0.0/33\n", 2,
     "bad value for relay_networks: '10.0.0.0/33'"),
    ("[smtp]\nrelay_networks = ::1/129\n", 2,
     "bad value for relay_networks: '::1/129'"),
    ("# nets\n[smtp]\nrelay_networks = 192.168.1.0/24 garbage\n", 3,
     "bad value for relay_networks: 'garbage'"),
    ("[smtp]\nrelay_networks = 2001:db8::1/64\n", 2,
     "bad value for relay_networks: '2001:db8::1/64'"),
    ("[smtp]\nrelay_networks =\n" + "".join("  10.0.%d.0/24,\n" % i
                                              for i in range(65)), 67,
     "too many relay_networks (at most 64)"),
    ("[smtp]\nrelay_networks = 127.0.0.0/8,\n  192.168.1.0/24 10.1.0.0/8\n",
     3, "bad value for relay_networks: '10.1.0.0/8'"),
    ("[smtp]\npop_before_smtp = soon\n", 2,
     "bad value for pop_before_smtp: 'soon'"),
    ("[smtp]\nsender_check = loose\n", 2,
     "bad value for sender_check: 'loose'"),
    ("[smtp]\nrequire_tls_for_auth = maybe\n", 2,
     "bad value for require_tls_for_auth: 'maybe'"),
    ("[smtp]\nsubmission = 127.0.0.1\n", 2, "bad value for submission"),
])
def test_relay_config_errors(tmp_path, text, line, what):
    conf = tmp_path / "bad.conf"
    conf.write_text(text)
    for args in (["serve", "-c", str(conf)], ["-c", str(conf), "grants"]):
        r = subprocess.run([BIN, *args], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path)
        assert r.returncode == 2, r
        assert r.stderr.startswith("%s:%d: %s" % (conf, line, what)), r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "pillarbox-data").exists()


def test_relay_config_accepted(make_server):
    """The relay keys with good values: the server starts (the networks
    are IPv4 and IPv6, comma and/or space separated)."""
    s = make_server(extra={"smtp": {
        "relay_networks": "127.0.0.0/8, 192.168.1.0/24 ::1/128,\n"
                          "  10.0.0.0/8",
        "pop_before_smtp": "1800", "sender_check": "off",
        "require_tls_for_auth": "no", "submission": ""}})
    assert grants(s) == {}
