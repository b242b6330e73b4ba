"""The console's queue actions and the delivery counters, end to end: the
real server relays to test exchangers found through a test DNS server
(mxutil), and the console (webutil) retries, deletes and bounces what
waits in the queue. What each action did is checked where it shows: the
exchanger (what it received), the store (`queue list`), the sender's
mailbox (POP3), /metrics and the dashboard's figures.

A message waits because its exchanger answers 451 to RCPT (greylisting)
and the retry schedule is an hour: within a test only "retry now" (or a
flush) sends it again."""
import asyncio
import re
import threading

import pytest

from helpers import pop3_messages
from mxutil import MX, wait_for
from test_delivery import delivery_server, dns, mx_port, mxs  # noqa: F401
from test_delivery import queue, submit
from webutil import Web

ADMIN = "admin@localhost"
GREYLISTED = "451 4.7.1 greylisted, come back later"


def admin_of(server):
    server.cli("user", "add", "--admin", ADMIN, stdin="secret\n")
    w = Web(server)
    assert w.login()[0] == 200
    return w


def gated_mx(dns, mx_port, mxs, ip="127.0.0.2", domain="remote.test"):
    """An exchanger for domain that answers every RCPT with 451 while
    its gate is closed (gate["closed"]), and takes mail once it is open."""
    dns.mx(domain, (10, "mx1." + domain))
    dns.a("mx1." + domain, ip)
    m = MX(ip, mx_port)
    gate = {"closed": True}
    m.rec.rcpt_reply = lambda a: GREYLISTED if gate["closed"] else None
    mxs.append(m)
    return m, gate


def waiting_ids(server, n):
    """The message ids of the queue once it holds n entries, each tried
    and deferred once."""
    lines = wait_for(lambda: (lambda q: q if len(q) == n and all(
        " attempts=1 " in l and "greylisted" in l for l in q) else None)(
        queue(server)), what="%d deferred entries" % n)
    return sorted({l.split()[0] for l in lines})


def metrics(web):
    status, _, body = web.raw("GET", "/metrics")
    assert status == 200
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r"(?m)^(pillarbox_\w+(?:\{[^}]*\})?) (\S+)$", body.decode())}


def nothing_else_sent(server, m, gate, tag="marker"):
    """Opens the gate, flushes the whole queue and sends a marker
    message: once the marker is in, anything still queued would have
    gone before or with it. Returns what the exchanger received."""
    gate["closed"] = False
    server.cli("queue", "flush")
    submit(server, ["marker@remote.test"], tag=tag)
    wait_for(lambda: any(b"hello " + tag.encode() in c
                         for (_, _, _, c, _) in m.rec.messages),
             what="the marker")
    wait_for(lambda: queue(server) == [], what="an empty queue")
    return m.rec.messages


# ----------------------------------------------------------- the actions

def test_retry_now_sends_a_deferred_message(make_server, dns, mx_port, mxs):
    m, gate = gated_mx(dns, mx_port, mxs)
    s = delivery_server(make_server, dns, mx_port, retry_schedule="1h")
    w = admin_of(s)
    submit(s, ["bob@remote.test"], tag="retry")
    qid, = waiting_ids(s, 1)
    assert m.rec.messages == []
    gate["closed"] = False
    assert w.post("/api/queue/%s/retry" % qid) == (
        200, {"id": qid, "action": "retry", "recipients": 1})
    (_, frm, to, content, _), = m.rec.wait(1)
    assert (frm, to) == ("alice@localhost", ["bob@remote.test"])
    assert b"hello retry" in content
    wait_for(lambda: queue(s) == [], what="an empty queue")
    assert w.post("/api/queue/%s/retry" % qid)[0] == 404
    assert pop3_messages(s, "alice@localhost") == []
    log = s.log_text()
    assert re.search(r"web info sid=\w+ event=queue-retry by=admin@localhost "
                     r"name=%s result=ok" % qid, log), log[-2000:]


def test_delete_drops_every_recipient(make_server, dns, mx_port, mxs):
    m, gate = gated_mx(dns, mx_port, mxs)
    s = delivery_server(make_server, dns, mx_port, retry_schedule="1h")
    w = admin_of(s)
    submit(s, ["bob@remote.test", "carol@remote.test"], tag="del")
    submit(s, ["dave@remote.test"], tag="keep")
    ids = waiting_ids(s, 3)
    by_id = {e["id"]: e for e in w.get("/api/queue")[1]["queue"]}
    qid = next(i for i in ids if by_id[i]["recipient"] != "dave@remote.test")
    other = next(i for i in ids if i != qid)
    assert w.delete("/api/queue/" + qid) == (
        200, {"id": qid, "action": "delete", "recipients": 2})
    assert [l.split()[:3] for l in queue(s)] == [
        [other, "<alice@localhost>", "<dave@remote.test>"]]
    assert [e["recipient"] for e in w.get("/api/queue")[1]["queue"]] == [
        "dave@remote.test"]
    assert w.delete("/api/queue/" + qid)[0] == 404
    got = nothing_else_sent(s, m, gate)
    assert sorted(to[0] for (_, _, to, _, _) in got) == [
        "dave@remote.test", "marker@remote.test"]
    assert not any(b"hello del" in c for (_, _, _, c, _) in got)
    assert pop3_messages(s, "alice@localhost") == []  # no bounce
    assert metrics(w)["pillarbox_messages_bounced_total"] == 0


def test_bounce_returns_it_to_a_local_sender(make_server, dns, mx_port, mxs):
    m, gate = gated_mx(dns, mx_port, mxs)
    s = delivery_server(make_server, dns, mx_port, retry_schedule="1h")
    w = admin_of(s)
    submit(s, ["bob@remote.test", "carol@remote.test"], tag="back")
    qid, = waiting_ids(s, 2)
    assert w.post("/api/queue/%s/bounce" % qid) == (
        200, {"id": qid, "action": "bounce", "recipients": 2})
    assert queue(s) == []
    msgs = pop3_messages(s, "alice@localhost")
    assert len(msgs) == 1
    dsn = msgs[0]
    assert dsn.startswith(b"Return-Path: <>\r\n")
    assert b"Content-Type: multipart/report; report-type=delivery-status" \
        in dsn
    for rcpt in (b"bob@remote.test", b"carol@remote.test"):
        assert b"Final-Recipient: rfc822; " + rcpt in dsn
    assert b"550 5.0.0 returned by the postmaster" in dsn
    assert b"Subject: back" in dsn
    assert w.post("/api/queue/%s/bounce" % qid)[0] == 404
    assert len(pop3_messages(s, "alice@localhost")) == 1
    # Per recipient, as Postfix logs status=bounced.
    wait_for(lambda: metrics(w)["pillarbox_messages_bounced_total"] == 2,
             what="bounced_total 2")
    assert w.get("/api/status")[1]["totals"]["bounced"] == 2
    got = nothing_else_sent(s, m, gate)
    assert [to for (_, _, to, _, _) in got] == [["marker@remote.test"]]


def test_bounce_for_a_remote_sender_goes_at_once(make_server, dns, mx_port,
                                                 mxs):
    """The bounce is queued from <> for the sender's exchanger, and the
    runner is woken for it: it does not wait for the queue's next look
    (a minute away: the only other entry is due in an hour)."""
    gated_mx(dns, mx_port, mxs)
    back, _ = gated_mx(dns, mx_port, mxs, ip="127.0.0.3",
                       domain="sender.test")
    back.rec.rcpt_reply = lambda a: None
    s = delivery_server(make_server, dns, mx_port, retry_schedule="1h")
    w = admin_of(s)
    submit(s, ["bob@remote.test"], sender="someone@sender.test", tag="far")
    qid, = waiting_ids(s, 1)
    assert w.post("/api/queue/%s/bounce" % qid) == (
        200, {"id": qid, "action": "bounce", "recipients": 1})
    (_, frm, to, content, _), = back.rec.wait(1, timeout=20)
    assert frm in ("", "<>") and to == ["someone@sender.test"]
    assert b"Final-Recipient: rfc822; bob@remote.test" in content
    assert b"550 5.0.0 returned by the postmaster" in content
    wait_for(lambda: queue(s) == [], what="an empty queue")


def test_actions_refused_change_nothing(make_server, dns, mx_port, mxs):
    """Refusals on a real queued message: a plain user, no CSRF token, a
    bad id or action, an id not queued. The entry stays as it was."""
    gated_mx(dns, mx_port, mxs)
    s = delivery_server(make_server, dns, mx_port, retry_schedule="1h")
    w = admin_of(s)
    submit(s, ["bob@remote.test"], tag="stay")
    qid, = waiting_ids(s, 1)
    before = queue(s)
    user = Web(s)
    assert user.login("alice@localhost", "secret")[0] == 200
    actions = [("POST", "/api/queue/%s/retry" % qid),
               ("POST", "/api/queue/%s/bounce" % qid),
               ("DELETE", "/api/queue/" + qid)]
    for method, path in actions:
        assert user.call(method, path) == (
            403, {"error": "not allowed for this account"})
        assert w.call(method, path, csrf=False) == (
            403, {"error": "missing or wrong CSRF token"})
    for bad in ("xyz", "1" * 17, "0", "-1", "0x10"):
        for method, path in (("POST", "/api/queue/%s/retry" % bad),
                             ("POST", "/api/queue/%s/bounce" % bad),
                             ("DELETE", "/api/queue/" + bad)):
            assert w.call(method, path) == (
                400, {"error": "queue id: want 1 to 16 hex digits, not 0"}), \
                path
    for action in ("hold", "delete", "retry%20now"):
        status, reply = w.post("/api/queue/%s/%s" % (qid, action))
        assert status == 400, (action, status, reply)
        assert reply["error"].startswith("no such action"), reply
    for method, path in (("POST", "/api/queue/%016x/retry" % 0xfeed),
                         ("POST", "/api/queue/feed/bounce"),
                         ("DELETE", "/api/queue/FEED")):
        assert w.call(method, path) == (
            404, {"error": "no such message in the queue"})
    assert queue(s) == before
    assert pop3_messages(s, "alice@localhost") == []
    user.close()


# ------------------------------------- while the runner is delivering it

@pytest.mark.parametrize("via,action,reply,local", [
    ("web", "delete", "451 4.3.0 try later", False),
    ("web", "delete", "250", False),
    ("web", "bounce", "550 5.1.1 no such user", True),
    ("cli", "bounce", "550 5.1.1 no such user", True),
    ("cli", "delete", "550 5.1.1 no such user", False),
])
def test_action_while_it_is_being_delivered(make_server, dns, mx_port, mxs,
                                            via, action, reply, local):
    """The exchanger has the whole message and holds its reply to the
    data while the message is deleted or bounced (from the console, or
    from the CLI in its own process); then it answers. The runner records
    that outcome for entries that are gone: nothing comes back into the
    queue, no second bounce is made, and the store takes the commit."""
    dns.mx("remote.test", (10, "mx1.remote.test"))
    dns.a("mx1.remote.test", "127.0.0.2")
    m = MX("127.0.0.2", mx_port)
    mxs.append(m)
    entered, release = threading.Event(), threading.Event()
    real = m.rec.handle_DATA

    async def held(server, session, envelope):
        entered.set()
        await asyncio.get_running_loop().run_in_executor(None, release.wait)
        if reply == "250":
            return await real(server, session, envelope)
        return reply
    m.rec.handle_DATA = held
    s = delivery_server(make_server, dns, mx_port, retry_schedule="1h",
                        command_timeout="60")
    w = admin_of(s)
    rcpts = ["x@remote.test"] + (["bob@localhost"] if local else [])
    try:
        submit(s, rcpts, tag="busy")
        assert entered.wait(15), "the exchanger never got the data"
        (line,) = queue(s)
        qid = line.split()[0]
        if via == "web":
            path = "/api/queue/" + qid + ("/bounce" if action == "bounce"
                                          else "")
            assert w.call("POST" if action == "bounce" else "DELETE",
                          path) == (200, {"id": qid, "action": action,
                                          "recipients": 1})
        else:
            s.cli("queue", action, qid)
        assert queue(s) == []
    finally:
        release.set()
    pat = r"pillarbox deliver \w+ event=\w+ id=%s .*\n" % qid
    outcome = re.search(pat, wait_for(
        lambda: (lambda t: t if re.search(pat, t) else None)(s.log_text()),
        what="the runner's outcome")).group(0)
    assert "commit-error" not in outcome, outcome
    if reply == "250":
        assert "event=delivered" in outcome, outcome
        assert len(m.rec.messages) == 1
        wait_for(lambda: metrics(w)["pillarbox_messages_delivered_total"]
                 == 1, what="delivered_total 1")
    else:
        assert "event=removed" in outcome, outcome
    assert queue(s) == []
    dsns = pop3_messages(s, "alice@localhost")
    assert len(dsns) == (1 if action == "bounce" else 0), dsns
    if action == "bounce":
        assert b"550 5.0.0 returned by the postmaster" in dsns[0]
        assert b"no such user" not in dsns[0]
    if local:
        assert len(pop3_messages(s, "bob@localhost")) == 1
    if via == "web":
        assert metrics(w)["pillarbox_messages_bounced_total"] == (
            1 if action == "bounce" else 0)
    assert metrics(w)["pillarbox_messages_deferred_total"] == 0
    # Nothing is left to send: a flush finds nothing, the store is clean.
    s.cli("queue", "flush")
    assert queue(s) == []


# ------------------------------------------------------------ counters

def test_delivery_counters(make_server, dns, mx_port, mxs):
    """Per recipient: one delivered, one bounced by the exchanger's 550,
    one deferred by its 451; /metrics, the dashboard's totals and its
    hourly series agree."""
    dns.mx("remote.test", (10, "mx1.remote.test"))
    dns.a("mx1.remote.test", "127.0.0.2")
    m = MX("127.0.0.2", mx_port)
    m.rec.rcpt_reply = lambda a: (
        "550 5.1.1 no such user" if a.startswith("nobody") else
        GREYLISTED if a.startswith("later") else None)
    mxs.append(m)
    s = delivery_server(make_server, dns, mx_port, retry_schedule="1h")
    w = admin_of(s)
    before = metrics(w)
    for name in ("delivered", "bounced", "deferred"):
        assert before["pillarbox_messages_%s_total" % name] == 0
    submit(s, ["bob@remote.test"], tag="one")
    m.rec.wait(1)
    wait_for(lambda: metrics(w)["pillarbox_messages_delivered_total"] == 1,
             what="delivered_total 1")
    st = w.get("/api/status")[1]
    assert st["totals"]["delivered"] == 1
    assert sum(st["hourly"]["delivered"]) == 1
    submit(s, ["nobody@remote.test"], tag="two")
    wait_for(lambda: pop3_messages(s, "alice@localhost"), what="a bounce")
    wait_for(lambda: metrics(w)["pillarbox_messages_bounced_total"] == 1,
             what="bounced_total 1")
    submit(s, ["later@remote.test"], tag="three")
    waiting_ids(s, 1)
    wait_for(lambda: metrics(w)["pillarbox_messages_deferred_total"] == 1,
             what="deferred_total 1")
    after = metrics(w)
    assert after["pillarbox_messages_delivered_total"] == 1
    assert after["pillarbox_messages_bounced_total"] == 1
    st = w.get("/api/status")[1]
    assert (st["totals"]["delivered"], st["totals"]["bounced"]) == (1, 1)
    assert sum(st["hourly"]["delivered"]) == 1
    status, _, body = w.raw("GET", "/metrics")
    text = body.decode()
    for name in ("delivered", "bounced", "deferred"):
        assert re.search(r"(?m)^# HELP pillarbox_messages_%s_total .*"
                         r"per recipient" % name, text), text
    # The stop line counts the same.
    assert s.stop() == 0
    assert re.search(r"event=stats .* delivered=1 bounced=1 deferred=1",
                     s.log_text())
