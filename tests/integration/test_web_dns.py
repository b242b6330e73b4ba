"""The DNS page's live check, GET /api/dns/check?domain=D, against a DNS
server of our own (zoneutil: dnslib on loopback) set as `[delivery]
resolver`: each record to publish is "ok", "differs" (with what was
found), "missing" or "unknown" (with why), in the exact JSON the page
reads. A name that never answers costs the check its deadline and no
more; a client that leaves while its check runs, and a server that stops
meanwhile, harm nothing (the fixture checks the exit status and the
sanitizers' silence); checks at once are capped."""
import json
import socket
import time

import pytest

from webutil import Web
from zoneutil import ZoneServer

ADMIN = "admin@localhost"
EXTRA = ("a.test", "b.test", "c.test", "d.test")


@pytest.fixture
def zone():
    z = ZoneServer()
    yield z
    z.stop()


@pytest.fixture
def dns_server(make_server, zone):
    s = make_server(extra={"delivery": {"resolver": zone.address}},
                    domains="localhost, example.org, " + ", ".join(EXTRA))
    s.cli("user", "add", "--admin", ADMIN, stdin="secret\n")
    return s


@pytest.fixture
def admin(dns_server):
    w = Web(dns_server)
    assert w.login()[0] == 200
    yield w
    w.close()


def publish_all(zone, server, domain, but=()):
    """The records the page says to publish for domain, all of them, but
    those of the names in but."""
    sub = server.addr("submission")[1]
    pop3 = server.addr("pop3")[1]
    lines = [
        "{d}. 60 IN MX 10 mx.test.",
        "{d}. 60 IN TXT \"v=spf1 mx -all\"",
        "_dmarc.{d}. 60 IN TXT "
        "\"v=DMARC1; p=quarantine; rua=mailto:postmaster@{d}\"",
        "autoconfig.{d}. 60 IN CNAME mx.test.",
        "autodiscover.{d}. 60 IN CNAME mx.test.",
        "_submission._tcp.{d}. 60 IN SRV 0 1 %d mx.test." % sub,
        "_pop3._tcp.{d}. 60 IN SRV 0 1 %d mx.test." % pop3,
        "_imap._tcp.{d}. 60 IN SRV 0 0 0 .",
    ]
    zone.zone("\n".join(l.format(d=domain) for l in lines
                        if l.split(" ")[0].format(d=domain) not in but))


def rec(rtype, name, value, status, found=(), error=None):
    return {"type": rtype, "name": name, "value": value, "status": status,
            "found": list(found), "error": error}


def expected(server, domain, **status):
    """The check's answer for domain when every record is "ok", but those
    named in status (by their index) with the (status, found, error)
    given."""
    sub = server.addr("submission")[1]
    pop3 = server.addr("pop3")[1]
    d = domain
    want = [
        ("MX", d + ".", "10 mx.test."),
        ("TXT", d + ".", "v=spf1 mx -all"),
        ("TXT", "_dmarc.%s." % d,
         "v=DMARC1; p=quarantine; rua=mailto:postmaster@" + d),
        ("CNAME", "autoconfig.%s." % d, "mx.test."),
        ("CNAME", "autodiscover.%s." % d, "mx.test."),
        ("SRV", "_submission._tcp.%s." % d, "0 1 %d mx.test." % sub),
        ("SRV", "_pop3._tcp.%s." % d, "0 1 %d mx.test." % pop3),
        ("SRV", "_imap._tcp.%s." % d, "0 0 0 ."),
    ]
    out = []
    for i, (t, n, v) in enumerate(want):
        st, found, error = status.get("r%d" % i, ("ok", [v], None))
        out.append(rec(t, n, v, st, found, error))
    return out


def test_check_statuses(admin, dns_server, zone):
    d = "example.org"
    sub = dns_server.addr("submission")[1]
    publish_all(zone, dns_server, d, but=(
        "example.org.", "_dmarc.example.org.", "autoconfig.example.org.",
        "autodiscover.example.org.", "_pop3._tcp.example.org."))
    zone.zone("\n".join([
        # the MX, with the exchanger's name in capitals: still ours
        "example.org. 60 IN MX 10 MX.Test.",
        # an SPF record the admin changed, in two strings (joined), beside
        # a TXT record of another kind
        "example.org. 60 IN TXT \"google-site-verification=abc\"",
        "example.org. 60 IN TXT \"v=spf1 mx \" "
        "\"include:_spf.example.net -all\"",
        "autoconfig.example.org. 60 IN CNAME mx.test.",
        # an address where an alias should be: no CNAME there
        "autodiscover.example.org. 60 IN A 192.0.2.1",
    ]))
    zone.resolver.servfail.add("_pop3._tcp.example.org")
    # no _dmarc.example.org at all: NXDOMAIN

    # The records come at once, without the check.
    status, page = admin.get("/api/dns")
    assert status == 200 and set(page) == {"hostname", "domains"}
    assert [x["domain"] for x in page["domains"]] == \
        ["a.test", "b.test", "c.test", "d.test", "example.org", "localhost"]
    assert [(r["type"], r["name"], r["value"]) for r in
            page["domains"][4]["records"]] == \
        [(r["type"], r["name"], r["value"])
         for r in expected(dns_server, d)]

    status, check = admin.get("/api/dns/check?domain=example.org")
    assert status == 200, check
    assert check == {
        "domain": "example.org",
        "resolver": zone.address,
        "records": expected(
            dns_server, d,
            r1=("differs", ["v=spf1 mx include:_spf.example.net -all"], None),
            r2=("missing", [], "NXDOMAIN (no such name)"),
            r4=("missing", [], "no such record"),
            # c-ares 1.18 ends a query that every server SERVFAILs
            # as ECONNREFUSED
            r6=("unknown", [], "SERVFAIL or refused by every DNS server")),
    }
    # c-ares asked the server for exactly these
    asked = set(zone.resolver.queries)
    assert {("example.org", "MX"), ("example.org", "TXT"),
            ("_dmarc.example.org", "TXT"),
            ("autoconfig.example.org", "CNAME"),
            ("autodiscover.example.org", "CNAME"),
            ("_submission._tcp.example.org", "SRV"),
            ("_pop3._tcp.example.org", "SRV"),
            ("_imap._tcp.example.org", "SRV")} == asked

    # Fixed at the DNS provider, checked again: ok (nothing is cached).
    zone.drop("example.org", "TXT")
    zone.drop("autodiscover.example.org", "A")
    zone.resolver.servfail.clear()
    publish_all(zone, dns_server, d, but=(
        "example.org.", "autoconfig.example.org.",
        "_submission._tcp.example.org.", "_imap._tcp.example.org."))
    zone.zone("example.org. 60 IN TXT \"v=spf1 mx -all\"")
    status, check = admin.get("/api/dns/check?domain=Example.ORG")
    assert status == 200
    assert check == {"domain": "example.org", "resolver": zone.address,
                     "records": expected(dns_server, d)}
    assert sub == dns_server.addr("submission")[1]


def test_check_bad_requests(admin, dns_server, zone):
    assert admin.get("/api/dns/check") == \
        (400, {"error": "which domain? (domain=...)"})
    assert admin.get("/api/dns/check?domain=") == \
        (400, {"error": "which domain? (domain=...)"})
    assert admin.get("/api/dns/check?domain=elsewhere.test") == \
        (404, {"error": "no such domain here"})
    assert zone.resolver.queries == []
    w = Web(dns_server)
    assert w.get("/api/dns/check?domain=example.org") == \
        (401, {"error": "login required"})
    assert w.login("alice@localhost", "secret")[0] == 200
    assert w.get("/api/dns/check?domain=example.org") == \
        (403, {"error": "not allowed for this account"})
    w.close()
    assert zone.resolver.queries == []


def check_request(server, cookie, domain):
    """A check's request on a socket of its own, not read yet."""
    host, port = server.addr("web")
    s = socket.create_connection((host, port), timeout=15)
    s.sendall(("GET /api/dns/check?domain=%s HTTP/1.1\r\nHost: %s:%d\r\n"
               "Cookie: pb_session=%s\r\n\r\n"
               % (domain, host, port, cookie)).encode())
    return s


def read_reply(s):
    """(status, headers text, JSON body) of one response, read to its
    end."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk
        body += chunk
    return int(head.split(b" ")[1]), head.decode(), json.loads(body)


def test_check_deadline_and_client_gone(admin, dns_server, zone):
    """_pop3._tcp never answers: the check answers at its deadline with
    the rest. A second client that asked first and left without reading
    its answer changes nothing for anyone."""
    publish_all(zone, dns_server, "example.org")
    zone.resolver.silent.add("_pop3._tcp.example.org")
    gone = check_request(dns_server, admin.cookie, "example.org")
    zone.wait_asked("_pop3._tcp.example.org")
    gone.close()

    status, check = admin.get("/api/dns/check?domain=example.org")
    assert status == 200
    assert check == {
        "domain": "example.org", "resolver": zone.address,
        "records": expected(dns_server, "example.org",
                            r6=("unknown", [], "no answer within 5 s"))}
    # Both waited for _pop3._tcp to the end (the loop writes its log
    # lines once per turn: maybe after the reply).
    late = "event=dns-check-late domain=example.org waiting=1"
    deadline = time.time() + 10
    while dns_server.log_text().count(late) < 2 and time.time() < deadline:
        time.sleep(0.02)
    log = dns_server.log_text()
    assert log.count(late) == 2, log
    # Still serving, the same client and a new one.
    assert admin.get("/api/session")[0] == 200
    w = Web(dns_server)
    assert w.login()[0] == 200
    assert w.get("/api/dns")[0] == 200
    w.close()


def test_check_cap(admin, dns_server, zone):
    """Four checks at once, whoever asks; a fifth gets 503 with
    Retry-After and asks the resolver nothing. (The four are still
    waiting when the fixture stops the server.)"""
    waiting = []
    for d in EXTRA:
        publish_all(zone, dns_server, d)
        zone.resolver.silent.add("_pop3._tcp." + d)
        waiting.append(check_request(dns_server, admin.cookie, d))
        zone.wait_asked("_pop3._tcp." + d)
    status, hdrs, body = admin.raw("GET", "/api/dns/check?domain=example.org")
    assert status == 503
    assert hdrs["retry-after"] == "15"
    assert json.loads(body) == {
        "error": "too many DNS checks under way, try again in a few seconds"}
    assert [q for q in zone.resolver.queries if "example.org" in q[0]] == []
    for s in waiting:
        s.close()


def test_check_server_stops(admin, dns_server, zone):
    """The server stopping answers a waiting check at once (503, and the
    connection closes), and exits cleanly with its lookup still open."""
    publish_all(zone, dns_server, "example.org")
    zone.resolver.silent.add("_pop3._tcp.example.org")
    s = check_request(dns_server, admin.cookie, "example.org")
    zone.wait_asked("_pop3._tcp.example.org")
    rc = dns_server.stop()
    status, head, body = read_reply(s)
    assert status == 503, head
    assert "\r\nConnection: close\r\n" in head + "\r\n"
    assert body == {"error": "the server is stopping"}
    assert s.recv(1) == b""
    s.close()
    log = dns_server.log_text()
    assert rc == 0, log[-3000:]
    assert "dns-check-late" not in log
    assert "ERROR: AddressSanitizer" not in log
    assert "runtime error:" not in log
    assert "LeakSanitizer" not in log
