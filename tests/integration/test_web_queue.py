"""Outbound delivery's counters, end to end: the real server relays to a
test exchanger found through a test DNS server (mxutil); /metrics, the
dashboard's figures (webutil) and the stop line count what it did; a
message deleted or bounced while it is being delivered stays gone."""
import asyncio
import re
import threading

import pytest

from mxutil import MX, wait_for
from test_delivery import delivery_server, dns, mx_port, mxs  # noqa: F401
from test_delivery import queue, submit
from helpers import pop3_messages
from webutil import Web

ADMIN = "admin@localhost"
GREYLISTED = "451 4.7.1 greylisted, come back later"


def admin_of(server):
    server.cli("user", "add", "--admin", ADMIN, stdin="secret\n")
    w = Web(server)
    assert w.login()[0] == 200
    return w


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


# ------------------------------------- while the runner is delivering it

@pytest.mark.parametrize("via,action,reply,local", [
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
