"""The web console in a real browser: tests/e2e/console.test.js (Debian's
chromium driven by playwright-core) against the real server. Screenshots go
to build/e2e-shots/. Skipped, saying why, only where chromium or the
pinned playwright-core (npm ci in tests/e2e) is not installed."""
import os
import shutil
import subprocess

import pytest

from conftest import ROOT
from zoneutil import ZoneServer

E2E = os.path.join(ROOT, "tests", "e2e")
SHOTS = os.path.join(ROOT, "build", "e2e-shots")


def test_console_in_chromium(make_server):
    if not os.access("/usr/bin/chromium", os.X_OK):
        pytest.skip("Debian's chromium is not installed "
                    "(apt-get install chromium)")
    if shutil.which("node") is None:
        pytest.skip("node is not installed (apt-get install npm)")
    if not os.path.isdir(os.path.join(E2E, "node_modules",
                                      "playwright-core")):
        pytest.skip("playwright-core is not installed (npm ci in tests/e2e)")
    # The DNS page asks this: example.org's MX as published, its SPF
    # record changed, nothing else. Relayed mail waits in a held queue
    # (max_concurrent 0) for the queue page.
    zone = ZoneServer()
    zone.zone("example.org. 60 IN MX 10 mx.test.\n"
              "example.org. 60 IN TXT \"v=spf1 a mx -all\"")
    s = make_server(users=(), extra={
        "smtp": {"relay_networks": "127.0.0.0/8"},
        "delivery": {"resolver": zone.address, "max_concurrent": "0"}})
    s.cli("user", "add", "--admin", "admin@localhost", stdin="secret\n")
    host, port = s.addr("web")
    env = dict(os.environ,
               PB_URL="http://%s:%d/" % (host, port),
               PB_SMTP="%s:%d" % s.addr("smtp"),
               PB_ADMIN="admin@localhost", PB_PASSWORD="secret",
               PB_SHOTS=SHOTS)
    try:
        r = subprocess.run(["node", "--test", "console.test.js"], cwd=E2E,
                           env=env, capture_output=True, text=True,
                           timeout=300)
    finally:
        zone.stop()
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
