"""Shared fixtures: start the real pillarbox binary on loopback ports chosen
at run time, manage accounts through its CLI, and stop it at the end.

PILLARBOX_BIN selects the binary (build/pillarbox by default; build.sh test
also runs the suite against build/asan/pillarbox)."""
import os
import re
import signal
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.abspath(os.environ.get("PILLARBOX_BIN",
                                     os.path.join(ROOT, "build", "pillarbox")))
LISTEN_RE = re.compile(r"event=listening proto=(\w+) addr=(\S+)")


class Server:
    """One pillarbox process with its own data_dir and config file."""

    def __init__(self, tmpdir, extra=None, domains="localhost, example.org"):
        self.dir = str(tmpdir)
        self.data = os.path.join(self.dir, "data")
        self.conf = os.path.join(self.dir, "pillarbox.conf")
        self.log = os.path.join(self.dir, "server.log")
        self.proc = None
        self.ports = {}
        os.makedirs(self.dir, exist_ok=True)
        sections = {
            "server": {"hostname": "mx.test", "data_dir": self.data,
                       "domains": domains},
            # submission on a port of its own too: parallel servers
            # never collide on the default 2587; the implicit-TLS
            # listeners off unless a test turns them on
            "smtp": {"listen": "127.0.0.1:0", "submission": "127.0.0.1:0",
                     "smtps": ""},
            "pop3": {"listen": "127.0.0.1:0", "pop3s": "",
                     "require_tls_for_auth": "no",
                     "login_delay": "0"},
            "web": {"listen": "127.0.0.1:0"},
        }
        for sec, keys in (extra or {}).items():
            sections.setdefault(sec, {}).update(keys)
        with open(self.conf, "w") as f:
            for sec, keys in sections.items():
                f.write("[%s]\n" % sec)
                for k, v in keys.items():
                    f.write("%s = %s\n" % (k, v))

    def cli(self, *args, stdin=None, check=True):
        """Runs `pillarbox -c CONF ARGS...`; returns CompletedProcess."""
        r = subprocess.run([BIN, "-c", self.conf, *args], input=stdin,
                           capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError("pillarbox %s failed: %s" % (args, r.stderr))
        return r

    def add_user(self, addr, password="secret"):
        self.cli("user", "add", addr, stdin=password + "\n")

    def start(self):
        """Starts the server (again, after stop() or kill9(), on the same
        data_dir) and waits for this run's event=ready; ports are new."""
        offset = os.path.getsize(self.log) if os.path.exists(self.log) else 0
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen([BIN, "serve", "-c", self.conf],
                                     stdout=self.logf, stderr=self.logf)
        deadline = time.time() + 30
        while time.time() < deadline:
            text = self.log_text()[offset:]
            self.ports = {p: a for p, a in LISTEN_RE.findall(text)}
            if "event=ready" in text:
                return self
            if self.proc.poll() is not None:
                raise AssertionError("server exited:\n" + text)
            time.sleep(0.02)
        raise AssertionError("server not ready:\n" + self.log_text())

    def addr(self, proto):
        host, port = self.ports[proto].rsplit(":", 1)
        return host.strip("[]"), int(port)

    def log_text(self):
        with open(self.log, "rb") as f:
            return f.read().decode("latin-1")

    def stop(self, sig=signal.SIGTERM):
        """Stops the server; a graceful stop must exit 0 with no sanitizer
        report in the log."""
        if self.proc is None:
            return None
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        self.logf.close()
        return rc

    def kill9(self):
        self.stop(signal.SIGKILL)


@pytest.fixture
def make_server(tmp_path):
    """Factory: make_server(extra={...}) -> started Server with users
    alice@localhost and bob@localhost (password "secret")."""
    made = []

    def make(extra=None, users=("alice@localhost", "bob@localhost"),
             start=True, **kw):
        s = Server(tmp_path / ("s%d" % len(made)), extra, **kw)
        os.makedirs(s.dir, exist_ok=True)
        made.append(s)
        for u in users:
            s.add_user(u)
        return s.start() if start else s

    yield make
    for s in made:
        if s.proc is not None:
            rc = s.stop()
            text = s.log_text()
            assert "ERROR: AddressSanitizer" not in text, text
            assert "runtime error:" not in text, text
            assert "LeakSanitizer" not in text, text
            assert rc == 0, "server exit %s\n%s" % (rc, text[-3000:])


@pytest.fixture
def server(make_server):
    return make_server()
