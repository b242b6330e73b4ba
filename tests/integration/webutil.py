"""A small client for the web console's JSON API: http.client on one
keep-alive connection, the session cookie and the CSRF token kept as a
browser keeps them. Standard library only."""
import http.client
import json

TIMEOUT = 10


class Web:
    def __init__(self, server):
        self.server = server
        self.host, self.port = server.addr("web")
        self.conn = None
        self.cookie = None
        self.csrf = None

    def _conn(self):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port,
                                                   timeout=TIMEOUT)
        return self.conn

    def raw(self, method, path, body=None, headers=None):
        """One request; returns (status, headers dict lower-cased, bytes).
        The connection is reopened when the server closed it."""
        h = {"Host": "%s:%d" % (self.host, self.port)}
        if self.cookie:
            h["Cookie"] = "pb_session=" + self.cookie
        h.update(headers or {})
        h = {k: v for k, v in h.items() if v is not None}
        for attempt in (0, 1):
            c = self._conn()
            try:
                c.request(method, path, body=body, headers=h)
                r = c.getresponse()
                data = r.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError,
                    BrokenPipeError):
                self.close()
                if attempt:
                    raise
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        if r.getheader("Connection", "").lower() == "close":
            self.close()
        return r.status, hdrs, data

    def call(self, method, path, obj=None, csrf=True, headers=None):
        """A JSON call: (status, decoded body or None)."""
        h = dict(headers or {})
        body = None
        if obj is not None:
            body = obj if isinstance(obj, (bytes, str)) else json.dumps(obj)
            h.setdefault("Content-Type", "application/json")
        if csrf and self.csrf and method not in ("GET", "HEAD"):
            h.setdefault("X-CSRF-Token", self.csrf)
        status, hdrs, data = self.raw(method, path, body, h)
        if data and hdrs.get("content-type", "").startswith(
                "application/json"):
            return status, json.loads(data)
        return status, None

    def login(self, user="admin@localhost", password="secret"):
        status, hdrs, data = self.raw(
            "POST", "/api/login",
            json.dumps({"user": user, "password": password}),
            {"Content-Type": "application/json"})
        if status == 200:
            cookie = hdrs["set-cookie"]
            self.cookie = cookie.split(";")[0].split("=", 1)[1]
            self.csrf = json.loads(data)["csrf"]
        return status, hdrs, json.loads(data) if data else None

    def get(self, path):
        return self.call("GET", path)

    def post(self, path, obj=None, **kw):
        return self.call("POST", path, obj, **kw)

    def delete(self, path, **kw):
        return self.call("DELETE", path, **kw)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None
