"""The web console over HTTPS ([web] tls_listen, the [tls] certificate):
the same console, and the session cookie is marked Secure there only."""
import http.client
import json
import os
import socket
import ssl

HOST = "mx.test"


def login(conn, password="secret"):
    conn.request("POST", "/api/login",
                 body=json.dumps({"user": "admin@localhost",
                                  "password": password}),
                 headers={"Content-Type": "application/json",
                          "Host": HOST})
    r = conn.getresponse()
    r.read()
    return r.status, r.getheader("Set-Cookie") or ""


def test_console_over_https(make_server):
    s = make_server(extra={"web": {"tls_listen": "127.0.0.1:0"}})
    s.cli("user", "add", "--admin", "admin@localhost", stdin="secret\n")
    ctx = ssl.create_default_context(
        cafile=os.path.join(s.data, "selfsigned-cert.pem"))
    host, port = s.addr("webs")
    raw = socket.create_connection((host, port), timeout=10)
    tls = ctx.wrap_socket(raw, server_hostname=HOST)
    assert tls.version() == "TLSv1.2"
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.sock = tls
    conn.request("GET", "/healthz", headers={"Host": HOST})
    r = conn.getresponse()
    assert r.status == 200, r.status
    r.read()
    status, cookie = login(conn)
    assert status == 200, status
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
    assert "; Secure" in cookie, cookie
    conn.close()
    # The plaintext listener's cookie is not Secure (it could not be
    # sent back over http).
    plain = http.client.HTTPConnection(*s.addr("web"), timeout=10)
    status, cookie = login(plain)
    assert status == 200 and "Secure" not in cookie, (status, cookie)
    plain.close()
