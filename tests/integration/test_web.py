"""The web console's HTTP side and JSON API against the real server: every
route refuses a caller without a login (401), state-changing ones a request
without the CSRF token (403); admin routes refuse a plain user (403); bad
JSON, wrong types, unknown fields and oversized requests get 400/413/431
and change nothing. Then what each route does, checked against the store
(CLI) and the mail protocols (smtplib, poplib)."""
import json
import poplib
import re
import smtplib
import socket
import time
import xml.etree.ElementTree as ET

import pytest

from helpers import restart
from webutil import Web

ADMIN = "admin@localhost"

# Every API route: (method, path, body). Paths name existing things so
# that only the check under test can refuse them.
ROUTES = [
    ("GET", "/api/session", None),
    ("POST", "/api/logout", None),
    ("GET", "/api/status", None),
    ("GET", "/api/users", None),
    ("POST", "/api/users", {"address": "new@localhost", "password": "pw"}),
    ("DELETE", "/api/users/bob@localhost", None),
    ("POST", "/api/users/bob@localhost/password", {"password": "pw2"}),
    ("POST", "/api/users/bob@localhost/rename", {"address": "rob@localhost"}),
    ("POST", "/api/users/bob@localhost/quota", {"quota": 1000}),
    ("POST", "/api/users/bob@localhost/admin", {"admin": True}),
    ("GET", "/api/aliases", None),
    ("POST", "/api/aliases", {"alias": "team@localhost",
                              "targets": ["alice@localhost"]}),
    ("DELETE", "/api/aliases/team@localhost", None),
    ("GET", "/api/domains", None),
    ("POST", "/api/domains", {"domain": "new.test"}),
    ("DELETE", "/api/domains/new.test", None),
    ("GET", "/api/grants", None),
    ("GET", "/api/queue", None),
    ("POST", "/api/queue/00000000000000ab/retry", None),
    ("POST", "/api/queue/00000000000000ab/bounce", None),
    ("DELETE", "/api/queue/00000000000000ab", None),
    ("POST", "/api/queue/00000000000000ab/hold", None),
    ("GET", "/api/log", None),
    ("GET", "/api/dns", None),
    ("GET", "/api/dns/check?domain=example.org", None),
]
CHANGING = [r for r in ROUTES if r[0] != "GET"]
# Routes a plain user may not call (all but their own session, logout
# and their own password).
ADMIN_ONLY = [r for r in ROUTES
              if r[1] not in ("/api/session", "/api/logout")]


@pytest.fixture
def web_server(make_server):
    s = make_server()
    s.cli("user", "add", "--admin", ADMIN, stdin="secret\n")
    return s


@pytest.fixture
def admin(web_server):
    w = Web(web_server)
    status, _, body = w.login()
    assert status == 200 and body["admin"] is True, body
    yield w
    w.close()


def store_users(server):
    return server.cli("user", "list").stdout


def wait_log(server, pattern, timeout=10):
    """The server's log once it matches pattern (a regex): the loop writes
    its log lines once per turn, so a reply may arrive before them."""
    deadline = time.time() + timeout
    while True:
        text = server.log_text()
        if re.search(pattern, text) or time.time() > deadline:
            return text
        time.sleep(0.02)


# ------------------------------------------------------- authorisation

@pytest.mark.parametrize("method,path,body", ROUTES)
def test_login_required(web_server, method, path, body):
    before = store_users(web_server)
    w = Web(web_server)
    status, reply = w.call(method, path, body)
    assert status == 401, (status, reply)
    assert reply == {"error": "login required"}
    assert store_users(web_server) == before
    w.close()


@pytest.mark.parametrize("method,path,body", CHANGING)
def test_csrf_required(admin, web_server, method, path, body):
    before = store_users(web_server)
    for token in (None, "0" * 64, admin.csrf[:-1] + "x"):
        status, reply = admin.call(method, path, body, csrf=False,
                                   headers={"X-CSRF-Token": token})
        assert status == 403, (status, reply)
        assert reply == {"error": "missing or wrong CSRF token"}
    assert store_users(web_server) == before
    # and the login is still there
    assert admin.get("/api/session")[0] == 200


@pytest.mark.parametrize("method,path,body", ADMIN_ONLY)
def test_admin_required(web_server, method, path, body):
    before = store_users(web_server)
    w = Web(web_server)
    status, _, me = w.login("alice@localhost", "secret")
    assert status == 200 and me == {"user": "alice@localhost",
                                    "admin": False, "csrf": w.csrf}
    status, reply = w.call(method, path, body)
    assert status == 403, (status, reply)
    assert reply == {"error": "not allowed for this account"}
    assert store_users(web_server) == before
    w.close()


def test_plain_user_changes_own_password_only(web_server):
    w = Web(web_server)
    assert w.login("alice@localhost", "secret")[0] == 200
    assert w.post("/api/users/bob@localhost/password",
                  {"password": "x"})[0] == 403
    assert w.post("/api/users/ALICE@localhost/password",
                  {"password": "new pass"}) == (200, {"ok": True})
    p = poplib.POP3(*web_server.addr("pop3"), timeout=10)
    p.user("alice@localhost")
    p.pass_("new pass")
    p.quit()
    # the login that changed it goes on
    assert w.get("/api/session")[0] == 200
    w.close()


def test_cross_origin_refused(admin, web_server):
    status, reply = admin.call(
        "POST", "/api/users", {"address": "x@localhost", "password": "p"},
        headers={"Origin": "http://evil.test"})
    assert status == 403 and reply["error"] == "cross-origin request refused"
    status, reply = admin.call(
        "POST", "/api/login", {"user": ADMIN, "password": "secret"},
        headers={"Origin": "http://evil.test"})
    assert status == 403
    assert "x@localhost" not in store_users(web_server)
    # the same origin is fine
    host, port = web_server.addr("web")
    status, _ = admin.call(
        "POST", "/api/users", {"address": "x@localhost", "password": "p"},
        headers={"Origin": "http://%s:%d" % (host, port)})
    assert status == 201


# ------------------------------------------------------------- login

def test_login_cookie_and_logout(web_server):
    w = Web(web_server)
    status, hdrs, body = w.login()
    assert status == 200
    cookie = hdrs["set-cookie"]
    assert re.match(r"^pb_session=[0-9a-f]{64}; Path=/; HttpOnly; "
                    r"SameSite=Strict$", cookie), cookie
    assert re.match(r"^[0-9a-f]{64}$", body["csrf"])
    assert hdrs["cache-control"] == "no-store"
    assert w.get("/api/session") == (200, body)
    # a second login is another session with other tokens
    w2 = Web(web_server)
    w2.login()
    assert w2.cookie != w.cookie and w2.csrf != w.csrf
    status, hdrs, _ = w.raw("POST", "/api/logout",
                            headers={"X-CSRF-Token": w.csrf})
    assert status == 204
    assert "Max-Age=0" in hdrs["set-cookie"]
    assert w.get("/api/session")[0] == 401
    assert w2.get("/api/session")[0] == 200
    log = wait_log(web_server, "event=logout")
    assert "event=login ip=127.0.0.1 user=admin@localhost admin=yes" in log
    assert "event=logout user=admin@localhost" in log
    assert "secret" not in log
    w.close()
    w2.close()


def test_login_failures_and_throttle(web_server):
    w = Web(web_server)
    for user, pw in (("admin@localhost", "wrong"), ("nobody@localhost", "x")):
        status, _, body = w.login(user, pw)
        assert status == 401 and body == {"error": "wrong user or password"}
    pat = (r"pillarbox web warn sid=[0-9a-f]+ event=auth-failed "
           r"ip=127\.0\.0\.1 user=nobody@localhost")
    assert re.search(pat, wait_log(web_server, pat))
    for _ in range(8):
        w.login("admin@localhost", "wrong")
    status, _, body = w.login()  # even the right password: throttled
    assert status == 429, body
    assert web_server.cli("user", "list").returncode == 0
    _, _, text = w.raw("GET", "/metrics")
    assert re.search(rb'pillarbox_auth_failures_total\{proto="web"\} 10\b',
                     text), text
    w.close()


@pytest.mark.parametrize("body,why", [
    (b"{", "bad JSON"),
    (b"[]", "bad request"),
    (b'{"user": "a@localhost"}', "bad request"),
    (b'{"user": 1, "password": "x"}', "bad request"),
    (b'{"user": "a@localhost", "password": "x", "extra": 1}',
     "bad request"),
    (b'{"user": "a@localhost", "user": "b@localhost", "password": "x"}',
     "bad JSON"),
])
def test_login_bad_bodies(web_server, body, why):
    w = Web(web_server)
    status, reply = w.call("POST", "/api/login", body)
    assert status == 400 and reply["error"].startswith(why), reply
    w.close()


def test_user_deleted_or_demoted_loses_rights(web_server, admin):
    web_server.cli("user", "add", "--admin", "boss@localhost",
                   stdin="pw\n")
    w = Web(web_server)
    assert w.login("boss@localhost", "pw")[0] == 200
    assert w.get("/api/users")[0] == 200
    web_server.cli("user", "admin", "boss@localhost", "off")
    assert w.get("/api/users")[0] == 403
    assert w.get("/api/session")[1]["admin"] is False
    web_server.cli("user", "admin", "boss@localhost", "on")
    assert w.get("/api/users")[0] == 200
    assert admin.delete("/api/users/boss@localhost") == (200, {"ok": True})
    assert w.get("/api/session")[0] == 401
    w.close()


# ------------------------------------------------------------ users

def test_users_lifecycle(admin, web_server):
    status, reply = admin.post("/api/users", {
        "address": "Carol@LOCALHOST", "password": "pw c",
        "quota": 1 << 20})
    assert (status, reply) == (201, {"ok": True})
    assert "carol@localhost messages=0 used=0 quota=1048576\n" in \
        store_users(web_server)
    # a message for her, retrievable with that password
    with smtplib.SMTP(*web_server.addr("smtp"), timeout=10) as s:
        s.sendmail("x@example.org", ["carol@localhost"],
                   b"Subject: hi\r\n\r\nhello\r\n")
    users = {u["address"]: u for u in admin.get("/api/users")[1]["users"]}
    assert set(users["carol@localhost"]) == {"address", "admin", "quota",
                                             "messages", "used"}
    assert users["carol@localhost"]["quota"] == 1 << 20
    assert users["carol@localhost"]["messages"] == 1
    # the store's running total: what POP3's STAT counts
    p = poplib.POP3(*web_server.addr("pop3"), timeout=10)
    p.user("carol@localhost")
    p.pass_("pw c")
    assert p.stat() == (1, users["carol@localhost"]["used"])
    p.quit()
    assert users["carol@localhost"]["used"] > 20
    assert users["carol@localhost"]["admin"] is False
    assert users[ADMIN]["admin"] is True
    # exists already (user or alias)
    assert admin.post("/api/users", {"address": "carol@localhost",
                                     "password": "x"})[0] == 409
    # not a local domain
    status, reply = admin.post("/api/users", {"address": "c@elsewhere.test",
                                              "password": "x"})
    assert status == 400 and "not local" in reply["error"]
    # quota and admin flag
    assert admin.post("/api/users/carol@localhost/quota",
                      {"quota": 0})[0] == 200
    assert admin.post("/api/users/carol@localhost/admin",
                      {"admin": True})[0] == 200
    assert re.search(r"^carol@localhost messages=1 used=\d+ quota=none "
                     r"admin$", store_users(web_server), re.M)
    # rename keeps the mailbox and the aliases pointing at her
    assert admin.post("/api/aliases", {"alias": "team@localhost",
                                       "targets": ["carol@localhost",
                                                   "bob@localhost"]})[0] == 201
    assert admin.post("/api/users/carol@localhost/rename",
                      {"address": "caro@example.org"}) == (200, {"ok": True})
    p = poplib.POP3(*web_server.addr("pop3"), timeout=10)
    p.user("caro@example.org")
    p.pass_("pw c")
    assert p.stat()[0] == 1
    p.quit()
    aliases = admin.get("/api/aliases")[1]["aliases"]
    assert aliases == [{"alias": "team@localhost",
                        "targets": ["caro@example.org", "bob@localhost"]}]
    assert admin.post("/api/users/nobody@localhost/quota",
                      {"quota": 5})[0] == 404
    # password reset
    assert admin.post("/api/users/caro@example.org/password",
                      {"password": "new"})[0] == 200
    p = poplib.POP3(*web_server.addr("pop3"), timeout=10)
    p.user("caro@example.org")
    with pytest.raises(poplib.error_proto):
        p.pass_("pw c")
    p.close()
    # delete
    assert admin.delete("/api/users/caro@example.org") == (200, {"ok": True})
    assert "caro" not in store_users(web_server)
    assert admin.delete("/api/users/caro@example.org")[0] == 404
    log = wait_log(web_server, "event=user-del ")
    assert "event=user-add by=admin@localhost name=Carol@LOCALHOST " \
        "result=ok" in log
    assert "pw c" not in log


def test_admin_cannot_lock_self_out(admin):
    assert admin.delete("/api/users/" + ADMIN)[0] == 409
    assert admin.post("/api/users/%s/admin" % ADMIN,
                      {"admin": False})[0] == 409
    assert admin.post("/api/users/%s/rename" % ADMIN,
                      {"address": "x@localhost"})[0] == 409
    assert admin.get("/api/users")[0] == 200


@pytest.mark.parametrize("path,body,why", [
    ("/api/users", {"address": "x@localhost"}, "bad request"),
    ("/api/users", {"address": "x@localhost", "password": 5}, "bad request"),
    ("/api/users", {"address": "x@localhost", "password": "p", "admin": 1},
     "bad request"),
    ("/api/users", {"address": "x@localhost", "password": "p", "quota": "1"},
     "bad request"),
    ("/api/users", {"address": "x@localhost", "password": "p",
                    "quota": -1}, "quota"),
    ("/api/users", {"address": "x@localhost", "password": "p", "q": 1},
     "bad request"),
    ("/api/users", {"address": "no-at-sign", "password": "p"}, "address"),
    ("/api/users", {"address": "a b@localhost", "password": "p"},
     "address"),
    ("/api/users", {"address": "x@localhost", "password": ""}, "password"),
    ("/api/users", {"address": "x@localhost", "password": "a\nb"},
     "password"),
    ("/api/users", {"address": "x@localhost", "password": "p" * 257},
     "password"),
    ("/api/users", [1], "bad request"),
    ("/api/users", "not json", "bad JSON"),
    ("/api/users/bob@localhost/quota", {"quota": 1.5}, "bad request"),
    ("/api/users/bob@localhost/admin", {"admin": "yes"}, "bad request"),
    ("/api/users/bob@localhost/rename", {"address": ""}, "address"),
    ("/api/users/bob@localhost/password", {}, "bad request"),
    ("/api/aliases", {"alias": "t@localhost", "targets": "bob@localhost"},
     "targets"),
    ("/api/aliases", {"alias": "t@localhost", "targets": []}, "targets"),
    ("/api/aliases", {"alias": "t@localhost", "targets": [3]}, "targets"),
    ("/api/aliases", {"alias": "t@localhost"}, "bad request"),
    ("/api/domains", {"domain": "bad domain"}, "domain"),
    ("/api/domains", {"domain": "x.test", "more": True}, "bad request"),
])
def test_validation_changes_nothing(admin, web_server, path, body, why):
    before = (store_users(web_server), web_server.cli("alias", "list").stdout,
              web_server.cli("domain", "list").stdout)
    status, reply = admin.post(path, body)
    assert status == 400, (status, reply)
    assert reply["error"].startswith(why), reply
    after = (store_users(web_server), web_server.cli("alias", "list").stdout,
             web_server.cli("domain", "list").stdout)
    assert after == before


def test_content_type_and_body_rules(admin):
    status, reply = admin.call("POST", "/api/users", json.dumps(
        {"address": "x@localhost", "password": "p"}),
        headers={"Content-Type": "text/plain"})
    assert status == 415
    status, reply = admin.call("POST", "/api/users", b"",
                               headers={"Content-Type": "application/json"})
    assert status == 400 and reply["error"] == "a JSON body is required"
    status, reply = admin.call("DELETE", "/api/users/bob@localhost",
                               {"x": 1})
    assert status == 400 and reply["error"] == "this request takes no body"
    status, reply = admin.call("PUT", "/api/users")
    assert status == 405
    status, reply = admin.get("/api/nothing")
    assert status == 404


# --------------------------------------------------- aliases, domains

def test_aliases(admin, web_server):
    assert admin.post("/api/aliases", {
        "alias": "Team@localhost",
        "targets": ["alice@localhost", "bob@localhost"]}) == (201,
                                                              {"ok": True})
    assert web_server.cli("alias", "list").stdout == \
        "team@localhost alice@localhost,bob@localhost\n"
    with smtplib.SMTP(*web_server.addr("smtp"), timeout=10) as s:
        s.sendmail("x@example.org", ["team@localhost"], b"\r\nhi\r\n")
    assert admin.post("/api/aliases", {"alias": "team@localhost",
                                       "targets": ["bob@localhost"]})[0] == 409
    status, reply = admin.post("/api/aliases", {
        "alias": "x@localhost", "targets": ["ghost@localhost"]})
    assert status == 400 and "existing user" in reply["error"]
    assert admin.delete("/api/aliases/team%40localhost") == (200,
                                                             {"ok": True})
    assert admin.get("/api/aliases") == (200, {"aliases": []})
    assert admin.delete("/api/aliases/team@localhost")[0] == 404


def test_domains(admin, web_server):
    assert admin.post("/api/domains", {"domain": "New.Test"})[0] == 201
    doms = admin.get("/api/domains")[1]["domains"]
    assert {"domain": "new.test", "configured": False} in doms
    assert {"domain": "localhost", "configured": True} in doms
    assert admin.post("/api/domains", {"domain": "new.test"})[0] == 409
    assert admin.post("/api/users", {"address": "u@new.test",
                                     "password": "p"})[0] == 201
    status, reply = admin.delete("/api/domains/new.test")
    assert status == 409 and "users" in reply["error"]
    assert admin.delete("/api/users/u@new.test")[0] == 200
    assert admin.delete("/api/domains/new.test")[0] == 200
    status, reply = admin.delete("/api/domains/localhost")
    assert status == 409 and "config file" in reply["error"]
    assert "new.test" not in web_server.cli("domain", "list").stdout


# ------------------------------------------- grants, queue, log, dns

def test_grants(admin, web_server):
    assert admin.get("/api/grants") == (200, {"grants": []})
    p = poplib.POP3(*web_server.addr("pop3"), timeout=10)
    p.user("alice@localhost")
    p.pass_("secret")
    p.quit()
    g = admin.get("/api/grants")[1]["grants"]
    assert len(g) == 1
    assert g[0]["client"] == "127.0.0.1" and g[0]["user"] == "alice@localhost"
    assert 0 < g[0]["seconds_left"] <= 1800
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", g[0]["expires"])


def test_queue(admin):
    """An empty queue; what the actions do is test_web_queue.py's."""
    assert admin.get("/api/queue") == (200, {"queue": []})
    for method, path in (("POST", "/api/queue/00ab/retry"),
                         ("POST", "/api/queue/00ab/bounce"),
                         ("DELETE", "/api/queue/00ab")):
        assert admin.call(method, path) == (
            404, {"error": "no such message in the queue"})
    assert admin.call("POST", "/api/queue/xyz/retry")[0] == 400
    assert admin.call("DELETE", "/api/queue/" + "1" * 17)[0] == 400
    assert admin.call("POST", "/api/queue/00ab/hold")[0] == 400
    assert admin.call("GET", "/api/queue/00ab/retry")[0] == 405


def test_log_filters(admin, web_server):
    with smtplib.SMTP(*web_server.addr("smtp"), timeout=10) as s:
        s.sendmail("x@example.org", ["bob@localhost"], b"\r\nhi\r\n")
    lines = admin.get("/api/log")[1]["lines"]
    stored = [l for l in lines if "event=stored" in l]
    assert stored, lines
    sid = re.search(r" sid=(\w+) ", stored[-1]).group(1)
    by_sid = admin.get("/api/log?sid=" + sid)[1]["lines"]
    assert by_sid and all(" sid=%s " % sid in l for l in by_sid)
    assert any("event=connect" in l for l in by_sid)
    by_addr = admin.get("/api/log?address=x%40example.org")[1]["lines"]
    assert by_addr and all("x@example.org" in l for l in by_addr)
    assert len(admin.get("/api/log?limit=2")[1]["lines"]) == 2
    assert admin.get("/api/log?limit=0")[0] == 400
    assert admin.get("/api/log?limit=x")[0] == 400
    assert admin.get("/api/log?sid=nothing-like-it")[1] == {"lines": []}


def test_dns(admin, web_server):
    d = admin.get("/api/dns")[1]
    assert set(d) == {"hostname", "domains"}  # the check: test_web_dns.py
    assert d["hostname"] == "mx.test"
    by = {x["domain"]: x["records"] for x in d["domains"]}
    assert set(by) == {"localhost", "example.org"}
    recs = {(r["type"], r["name"]): r["value"] for r in by["example.org"]}
    assert recs[("MX", "example.org.")] == "10 mx.test."
    assert recs[("TXT", "example.org.")] == "v=spf1 mx -all"
    assert recs[("TXT", "_dmarc.example.org.")].startswith("v=DMARC1;")
    assert recs[("CNAME", "autoconfig.example.org.")] == "mx.test."
    assert recs[("CNAME", "autodiscover.example.org.")] == "mx.test."
    pop3_port = web_server.addr("pop3")[1]
    assert recs[("SRV", "_pop3._tcp.example.org.")] == \
        "0 1 %d mx.test." % pop3_port
    smtp_port = web_server.addr("submission")[1]  # mail programs submit
    assert recs[("SRV", "_submission._tcp.example.org.")] == \
        "0 1 %d mx.test." % smtp_port


def test_status(admin, web_server):
    st = admin.get("/api/status")[1]
    protos = {l["proto"] for l in st["listeners"]}
    assert protos == {"smtp", "submission", "pop3", "web"}
    web = [l for l in st["listeners"] if l["proto"] == "web"][0]
    assert web["connections"] >= 1
    assert st["hostname"] == "mx.test"
    assert st["queue"] == 0 and st["disk_free"] > 0 and st["store_bytes"] > 0
    assert len(st["hourly"]["received"]) == 24
    before = st["hourly"]["received"][-1]
    with smtplib.SMTP(*web_server.addr("smtp"), timeout=10) as s:
        s.sendmail("x@example.org", ["bob@localhost"], b"\r\nhi\r\n")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            s.sendmail("x@example.org", ["ghost@localhost"], b"\r\nhi\r\n")
    st = admin.get("/api/status")[1]
    assert st["hourly"]["received"][-1] == before + 1
    assert st["totals"]["accepted"] == 1 and st["totals"]["rejected"] == 1


def test_chart_survives_a_restart(web_server):
    """The hourly series are kept in the store at a clean stop (and every
    few minutes): after a restart the dashboard's chart still shows the
    mail of the last day, while the totals (Prometheus counters) start
    again at 0."""
    with smtplib.SMTP(*web_server.addr("smtp"), timeout=10) as s:
        for _ in range(3):
            s.sendmail("x@example.org", ["bob@localhost"], b"\r\nhi\r\n")
    p = poplib.POP3(*web_server.addr("pop3"), timeout=10)
    p.user("bob@localhost")
    p.pass_("secret")
    p.retr(1)
    p.quit()
    w = Web(web_server)
    assert w.login()[0] == 200
    before = w.get("/api/status")[1]["hourly"]
    w.close()
    assert sum(before["received"]) == 3 and sum(before["retrieved"]) == 1
    web_server.stop()
    restart(web_server)
    w = Web(web_server)
    assert w.login()[0] == 200
    st = w.get("/api/status")[1]
    w.close()
    assert st["totals"]["accepted"] == 0
    after = st["hourly"]
    # the same hours (unless the clock passed an hour meanwhile: then
    # the series moved by one slot, and the sums are the same)
    assert sum(after["received"]) == 3 and sum(after["retrieved"]) == 1
    assert after["received"][-1] in (3, 0)


# ----------------------------------------- metrics, healthz, autoconfig

def test_metrics_and_healthz(web_server):
    w = Web(web_server)
    status, hdrs, body = w.raw("GET", "/healthz")
    assert (status, body) == (200, b"ok\n")
    with smtplib.SMTP(*web_server.addr("smtp"), timeout=10) as s:
        s.sendmail("x@example.org", ["bob@localhost"], b"\r\nhi\r\n")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            s.sendmail("x@example.org", ["x@other.test"], b"\r\nhi\r\n")
    status, hdrs, body = w.raw("GET", "/metrics")
    assert status == 200
    assert hdrs["content-type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) pillarbox_\w+ .+$", line), line
            continue
        m = re.match(r'^(pillarbox_\w+(?:\{[^}]*\})?) (\S+)$', line)
        assert m, line
        samples[m.group(1)] = float(m.group(2))
    assert samples["pillarbox_messages_accepted_total"] == 1
    assert samples['pillarbox_messages_rejected_total{reason="relay"}'] == 1
    assert samples['pillarbox_commit_seconds_bucket{le="+Inf"}'] >= 1
    assert samples["pillarbox_commit_seconds_count"] >= 1
    assert samples["pillarbox_queue_messages"] == 0
    assert samples["pillarbox_disk_free_bytes"] > 0
    assert any(k.startswith('pillarbox_connections{proto="web"')
               for k in samples)
    w.close()


@pytest.mark.parametrize("path", [
    "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=a%40example.org",
    "/mail/config-v1.1.xml?emailaddress=a@example.org",
])
def test_autoconfig(web_server, path):
    w = Web(web_server)
    status, hdrs, body = w.raw("GET", path)
    assert status == 200 and hdrs["content-type"].startswith(
        "application/xml")
    root = ET.fromstring(body)
    prov = root.find("emailProvider")
    assert prov.get("id") == "example.org"
    assert {d.text for d in prov.findall("domain")} == {"localhost",
                                                         "example.org"}
    inc = prov.find("incomingServer")
    assert inc.get("type") == "pop3"
    assert inc.find("hostname").text == "mx.test"
    assert int(inc.find("port").text) == web_server.addr("pop3")[1]
    assert inc.find("username").text == "%EMAILADDRESS%"
    out = prov.find("outgoingServer")
    assert int(out.find("port").text) == web_server.addr("submission")[1]
    w.close()


# ------------------------------------------------- HTTP and the pages

def test_pages_and_security_headers(web_server):
    w = Web(web_server)
    status, hdrs, body = w.raw("GET", "/")
    assert status == 200 and hdrs["content-type"].startswith("text/html")
    csp = hdrs["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    assert hdrs["x-content-type-options"] == "nosniff"
    html = body.decode()
    # no inline script or style, no handler attributes
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert "<style" not in html and not re.search(r"\son\w+=", html)
    assert not re.search(r"https?://", html)  # no CDN
    for src in re.findall(r'(?:src|href)="(/[^"]*)"', html):
        st, h, b = w.raw("GET", src)
        assert st == 200, src
    status, hdrs, body = w.raw("HEAD", "/")
    assert status == 200 and body == b""
    assert w.raw("GET", "/nothing-here")[0] == 404
    w.close()


def test_keep_alive_and_pipelining(web_server):
    host, port = web_server.addr("web")
    s = socket.create_connection((host, port), timeout=10)
    req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    s.sendall(req * 20)
    data = b""
    while data.count(b"ok\n") < 20:
        chunk = s.recv(65536)
        assert chunk
        data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 20
    # byte by byte
    for b in req:
        s.sendall(bytes([b]))
    data = b""
    while not data.endswith(b"ok\n"):
        data += s.recv(65536)
    assert data.startswith(b"HTTP/1.1 200 OK")
    # HTTP/1.0 asks for keep-alive and is told it is kept
    s.sendall(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    data = b""
    while not data.endswith(b"ok\n"):
        data += s.recv(65536)
    assert b"\r\nConnection: keep-alive\r\n" in data
    # Connection: close is honoured
    s.sendall(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    assert b"Connection: close" in data
    s.close()


def raw_exchange(server, payload):
    s = socket.create_connection(server.addr("web"), timeout=10)
    s.sendall(payload)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    s.close()
    return data


def test_request_limits(admin, web_server):
    big = json.dumps({"address": "x@localhost", "password": "p" * 70000})
    status, reply = admin.post("/api/users", big)
    assert status == 413
    data = raw_exchange(web_server, b"GET / HTTP/1.1\r\nCookie: " +
                        b"c" * 5000 + b"\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 431 ")
    data = raw_exchange(web_server, b"GET /" + b"u" * 3000 +
                        b" HTTP/1.1\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 414 ")
    data = raw_exchange(web_server, b"GARBAGE\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 ") and b"Connection: close" in data
    assert "x@localhost" not in store_users(web_server)
    assert Web(web_server).raw("GET", "/healthz")[0] == 200


def test_cli_admin_flag(make_server):
    s = make_server(users=())
    s.cli("user", "add", "--admin", "a@localhost", stdin="pw\n")
    s.cli("user", "add", "b@localhost", stdin="pw\n")
    empty = " messages=0 used=0 quota=none"
    assert store_users(s) == ("a@localhost" + empty + " admin\n"
                              "b@localhost" + empty + "\n")
    s.cli("user", "admin", "b@localhost", "on")
    s.cli("user", "admin", "a@localhost", "off")
    assert store_users(s) == ("a@localhost" + empty + "\n"
                              "b@localhost" + empty + " admin\n")
    r = s.cli("user", "admin", "b@localhost", "maybe", check=False)
    assert r.returncode == 2
    r = s.cli("user", "admin", "ghost@localhost", "on", check=False)
    assert r.returncode == 1


def test_web_listen_key_and_tls_key(make_server):
    s = make_server(extra={"web": {"listen": "",
                                   "tls_listen": "127.0.0.1:0",
                                   "session_timeout": "600"}})
    assert "web" not in s.ports
    assert "webs" in s.ports  # HTTPS alone (test_web_tls.py speaks it)
