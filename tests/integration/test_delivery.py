"""Outbound delivery end to end: pillarbox takes relayed mail over SMTP,
queues it, finds the exchangers in a test DNS server and delivers to test
MX servers on 127.0.0.x - preference order, fallback, retries, bounces,
null MX, NXDOMAIN, a smarthost with AUTH, one connection for several
recipients, no loss across kill -9, and a real Postfix as the peer."""
import os
import re
import shutil
import smtplib
import subprocess
import tempfile
import time
import urllib.request

import pytest

from helpers import pop3_messages, restart
from mxutil import (MX, DNSTable, ScriptedMX, free_port, make_ca,
                    plain_auth, server_tls_context, wait_for)

MX_IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


@pytest.fixture
def dns():
    d = DNSTable()
    yield d
    d.stop()


@pytest.fixture
def mx_port():
    return free_port(MX_IPS + ["127.0.0.5"])


@pytest.fixture
def mxs():
    made = []
    yield made
    for m in made:
        m.stop()


def delivery_server(make_server, dns, port, **delivery):
    conf = {"resolver": dns.address, "mx_port": str(port),
            "retry_schedule": "1s, 2s", "connect_timeout": "2",
            "command_timeout": "5"}
    conf.update(delivery)
    return make_server(extra={"smtp": {"relay_networks": "127.0.0.0/8"},
                              "delivery": conf})


def submit(server, rcpts, sender="alice@localhost", body=None, tag="t"):
    body = body or ("Subject: %s\r\nMessage-Id: <%s@localhost>\r\n\r\n"
                    "hello %s\r\n" % (tag, tag, tag))
    with smtplib.SMTP(*server.addr("smtp"), timeout=10) as c:
        c.sendmail(sender, rcpts, body)


def queue(server):
    out = server.cli("queue", "list").stdout
    return [l for l in out.splitlines() if l]


def test_delivers_to_preferred_mx(make_server, dns, mx_port, mxs):
    dns.mx("remote.test", (20, "mx2.remote.test"), (10, "mx1.remote.test"))
    dns.a("mx1.remote.test", "127.0.0.2")
    dns.a("mx2.remote.test", "127.0.0.3")
    mxs += [MX("127.0.0.2", mx_port), MX("127.0.0.3", mx_port)]
    s = delivery_server(make_server, dns, mx_port)
    submit(s, ["Bob@remote.test"], tag="pref")
    (_, frm, to, content, _), = mxs[0].rec.wait(1)
    assert frm == "alice@localhost" and to == ["Bob@remote.test"]
    assert content.startswith(b"Received: from ")
    assert b"Return-Path" not in content
    assert b"hello pref" in content
    assert mxs[1].rec.messages == []
    wait_for(lambda: queue(s) == [], what="empty queue")
    assert "event=delivered" in s.log_text()


@pytest.mark.parametrize("how", ["refused", "4xx-rcpt", "4xx-data"])
def test_falls_back_to_second_mx(make_server, dns, mx_port, mxs, how):
    dns.mx("remote.test", (10, "mx1.remote.test"), (20, "mx2.remote.test"))
    dns.a("mx1.remote.test", "127.0.0.2")
    dns.a("mx2.remote.test", "127.0.0.3")
    if how != "refused":
        first = MX("127.0.0.2", mx_port)
        if how == "4xx-rcpt":
            first.rec.rcpt_reply = lambda a: "451 4.3.0 try later"
        else:
            first.rec.data_reply = "452 4.3.1 full"
        mxs.append(first)
    second = MX("127.0.0.3", mx_port)
    mxs.append(second)
    s = delivery_server(make_server, dns, mx_port)
    submit(s, ["bob@remote.test"], tag="fallback")
    (_, _, to, content, _), = second.rec.wait(1)
    assert to == ["bob@remote.test"] and b"hello fallback" in content
    wait_for(lambda: queue(s) == [], what="empty queue")


def test_ipv6_first_then_ipv4(make_server, dns, mx_port, mxs):
    """An exchanger's IPv6 address is tried first; nothing listens there
    (::1 at that port), so its IPv4 address takes the mail."""
    dns.mx("remote.test", (10, "mx1.remote.test"))
    dns.aaaa("mx1.remote.test", "::1")
    dns.a("mx1.remote.test", "127.0.0.2")
    m = MX("127.0.0.2", mx_port)
    mxs.append(m)
    s = delivery_server(make_server, dns, mx_port)
    submit(s, ["bob@remote.test"], tag="v6")
    m.rec.wait(1)
    log = s.log_text()
    assert re.search(r"event=connect-failed ip=::1 ", log), log[-2000:]
    assert log.index("ip=::1") < log.index("event=connected ip=127.0.0.2")


def test_5xx_bounces_to_local_sender(make_server, dns, mx_port, mxs):
    dns.mx("remote.test", (10, "mx1.remote.test"))
    dns.a("mx1.remote.test", "127.0.0.2")
    m = MX("127.0.0.2", mx_port)
    m.rec.rcpt_reply = lambda a: ("550 5.1.1 <%s>: no such user here" % a
                                  if a.startswith("nobody") else None)
    mxs.append(m)
    s = delivery_server(make_server, dns, mx_port)
    submit(s, ["nobody@remote.test", "carol@remote.test"], tag="bounce")
    (_, _, to, _, _), = m.rec.wait(1)
    assert to == ["carol@remote.test"]
    msgs = wait_for(lambda: pop3_messages(s, "alice@localhost"),
                    what="a bounce in alice's mailbox")
    assert len(msgs) == 1
    b = msgs[0]
    assert b.startswith(b"Return-Path: <>\r\n")
    assert b"Content-Type: multipart/report; report-type=delivery-status" in b
    assert b"550 5.1.1 <nobody@remote.test>: no such user here" in b
    assert b"Final-Recipient: rfc822; nobody@remote.test" in b
    assert b"Status: 5.1.1" in b
    assert b"Remote-MTA: dns; mx1.remote.test" in b
    assert b"Subject: bounce" in b  # the original headers
    assert b"hello bounce" not in b  # not its body
    assert b"carol@remote.test" not in b.split(b"text/rfc822-headers")[0]
    wait_for(lambda: queue(s) == [], what="empty queue")


def test_retry_after_4xx_succeeds_on_schedule(make_server, dns, mx_port, mxs):
    dns.mx("remote.test", (10, "mx1.remote.test"))
    dns.a("mx1.remote.test", "127.0.0.2")
    m = MX("127.0.0.2", mx_port)
    tries = []

    def greylist(addr):
        tries.append(time.time())
        return "450 4.2.0 greylisted, come back later" if len(tries) == 1 \
            else None
    m.rec.rcpt_reply = greylist
    mxs.append(m)
    s = delivery_server(make_server, dns, mx_port,
                        retry_schedule="2s, 10s")
    submit(s, ["bob@remote.test"], tag="retry")
    wait_for(lambda: len(tries) == 1, what="first try")
    q = wait_for(lambda: [l for l in queue(s) if "greylisted" in l],
                 what="deferred entry")
    assert " attempts=1 " in q[0]  # one attempt so far
    (_, _, to, _, _), = m.rec.wait(1, timeout=20)
    gap = tries[1] - tries[0]
    assert 1.5 <= gap <= 5, gap
    wait_for(lambda: queue(s) == [], what="empty queue")


def test_null_mx_and_nxdomain_bounce(make_server, dns, mx_port):
    dns.mx("nullmx.test", (0, "."))
    dns.resolver.nxdomain.add("nowhere.test")
    s = delivery_server(make_server, dns, mx_port)
    submit(s, ["x@nullmx.test"], tag="nullmx")
    submit(s, ["y@nowhere.test"], tag="nx")
    msgs = wait_for(lambda: (lambda m: m if len(m) == 2 else None)(
        pop3_messages(s, "alice@localhost")), what="two bounces")
    text = b"\n".join(msgs)
    assert b"5.1.10" in text and b"null MX" in text
    assert b"Status: 5.1.2" in text and b"nowhere.test" in text
    wait_for(lambda: queue(s) == [], what="empty queue")


def test_servfail_is_retried_not_bounced(make_server, dns, mx_port, mxs):
    dns.resolver.servfail.add("flaky.test")
    s = delivery_server(make_server, dns, mx_port, retry_schedule="1h")
    submit(s, ["x@flaky.test"], tag="servfail")
    q = wait_for(lambda: [l for l in queue(s) if "SERVFAIL" in l],
                 what="a deferred entry")
    assert "x@flaky.test" in q[0]
    # Flush makes the running server try again at once, and it works now.
    dns.resolver.servfail.clear()
    dns.mx("flaky.test", (10, "mx1.flaky.test"))
    dns.a("mx1.flaky.test", "127.0.0.2")
    m = MX("127.0.0.2", mx_port)
    mxs.append(m)
    s.cli("queue", "flush")
    m.rec.wait(1, timeout=5)
    wait_for(lambda: queue(s) == [], what="empty queue")
    assert pop3_messages(s, "alice@localhost") == []


def test_one_connection_for_several_recipients(make_server, dns, mx_port, mxs):
    dns.mx("remote.test", (10, "mx1.remote.test"))
    dns.a("mx1.remote.test", "127.0.0.2")
    m = MX("127.0.0.2", mx_port)
    mxs.append(m)
    s = delivery_server(make_server, dns, mx_port)
    submit(s, ["a@remote.test", "b@remote.test", "c@remote.test"], tag="many")
    (_, _, to, _, _), = m.rec.wait(1)
    assert sorted(to) == ["a@remote.test", "b@remote.test", "c@remote.test"]
    time.sleep(0.3)
    assert len(m.rec.messages) == 1  # one transaction, one connection


@pytest.fixture
def relay_tls(tmp_path, monkeypatch, dns):
    """A smarthost name in the test DNS and a certificate for it from a
    test CA, which the server is told to trust."""
    ca, cert, key = make_ca(tmp_path, "relay.test")
    monkeypatch.setenv("PILLARBOX_TEST_TRUST_FILE", ca)
    dns.a("relay.test", "127.0.0.5")
    return server_tls_context(cert, key)


def smarthost_server(make_server, dns, port, tmp_path, password, **kw):
    pw = tmp_path / "pw"
    pw.write_text(password + "\n")
    return delivery_server(make_server, dns, port,
                           smarthost="relay.test:%d" % port,
                           smarthost_user="relayuser",
                           smarthost_password_file=str(pw), **kw)


def test_smarthost_with_auth_over_verified_tls(make_server, dns, mx_port, mxs,
                                              tmp_path, relay_tls):
    host = MX("127.0.0.5", mx_port, tls_context=relay_tls,
              require_starttls=True,
              authenticator=plain_auth("relayuser", "s3cret"))
    mxs.append(host)
    s = smarthost_server(make_server, dns, mx_port, tmp_path, "s3cret")
    submit(s, ["x@anywhere.test", "y@elsewhere.test"], tag="smarthost")
    msgs = host.rec.wait(1)
    assert sorted(msgs[0][2]) == ["x@anywhere.test", "y@elsewhere.test"]
    # only the smarthost's own address was looked up: no MX lookups
    assert all(q[0] == "relay.test" for q in dns.resolver.queries)
    log = s.log_text()
    assert "s3cret" not in log
    assert "event=auth user=relayuser" in log
    assert re.search(r"event=tls peer=relay.test\S* tls=TLSv1.2", log)


def test_smarthost_wrong_password_defers(make_server, dns, mx_port, mxs,
                                         tmp_path, relay_tls):
    host = MX("127.0.0.5", mx_port, tls_context=relay_tls,
              authenticator=plain_auth("relayuser", "s3cret"))
    mxs.append(host)
    s = smarthost_server(make_server, dns, mx_port, tmp_path, "wrong",
                         retry_schedule="1h")
    submit(s, ["x@anywhere.test"], tag="badauth")
    q = wait_for(lambda: [l for l in queue(s) if "AUTH" in l],
                 what="a deferred entry")
    assert "535" in q[0]
    assert host.rec.messages == []


def test_smarthost_needs_tls(make_server, dns, mx_port, mxs, tmp_path,
                             relay_tls):
    """No STARTTLS offered, or a certificate the trust store does not
    vouch for: nothing is sent, not even the password."""
    host = MX("127.0.0.5", mx_port, auth_require_tls=False,
              authenticator=plain_auth("relayuser", "s3cret"))
    mxs.append(host)
    s = smarthost_server(make_server, dns, mx_port, tmp_path, "s3cret",
                         retry_schedule="1h")
    submit(s, ["x@anywhere.test"], tag="notls")
    q = wait_for(lambda: [l for l in queue(s) if "TLS is required" in l],
                 what="a deferred entry")
    assert "x@anywhere.test" in q[0]
    assert host.rec.messages == []


def test_smarthost_untrusted_certificate(make_server, dns, mx_port, mxs,
                                         tmp_path, monkeypatch, relay_tls):
    other = tmp_path / "other"
    other.mkdir()
    ca2, _, _ = make_ca(other, "relay.test")
    monkeypatch.setenv("PILLARBOX_TEST_TRUST_FILE", ca2)  # not the signer
    host = MX("127.0.0.5", mx_port, tls_context=relay_tls,
              authenticator=plain_auth("relayuser", "s3cret"))
    mxs.append(host)
    s = smarthost_server(make_server, dns, mx_port, tmp_path, "s3cret",
                         retry_schedule="1h")
    submit(s, ["x@anywhere.test"], tag="untrusted")
    q = wait_for(lambda: [l for l in queue(s) if "TLS handshake" in l],
                 what="a deferred entry")
    assert host.rec.messages == []


def test_opportunistic_tls_to_mx(make_server, dns, mx_port, mxs, tmp_path):
    """An exchanger offering STARTTLS gets it, with any certificate (a
    self-signed one here, from no CA the server knows)."""
    _, cert, key = make_ca(tmp_path, "mx1.remote.test")
    dns.mx("remote.test", (10, "mx1.remote.test"))
    dns.a("mx1.remote.test", "127.0.0.2")
    m = MX("127.0.0.2", mx_port, tls_context=server_tls_context(cert, key),
           require_starttls=True)
    mxs.append(m)
    s = delivery_server(make_server, dns, mx_port)
    submit(s, ["bob@remote.test"], tag="otls")
    m.rec.wait(1)
    assert re.search(r"event=tls peer=mx1.remote.test", s.log_text())


def test_kill9_during_delivery_loses_nothing(make_server, dns, mx_port, mxs):
    """The MX holds every DATA for a while; the server is killed while
    messages are under way, then restarted: each arrives (at least once)."""
    dns.mx("remote.test", (10, "mx1.remote.test"))
    dns.a("mx1.remote.test", "127.0.0.2")
    m = MX("127.0.0.2", mx_port)
    mxs.append(m)
    s = delivery_server(make_server, dns, mx_port)
    # Stall: the MX takes the RCPTs but answers DATA only after 3 s.
    real = m.rec.handle_DATA

    async def slow(server, session, envelope):
        import asyncio
        await asyncio.sleep(3)
        return await real(server, session, envelope)
    m.rec.handle_DATA = slow
    n = 10
    for i in range(n):
        submit(s, ["r%d@remote.test" % i], tag="k%d" % i)
    time.sleep(0.5)
    s.kill9()
    m.rec.handle_DATA = real
    assert len(queue(s)) == n  # nothing removed before the peer's 250
    restart(s)
    wait_for(lambda: queue(s) == [], timeout=30, what="empty queue")
    got = {re.search(rb"hello (k\d+)", c).group(1) for (_, _, _, c, _) in
           m.rec.messages}
    assert got == {b"k%d" % i for i in range(n)}


def test_bounce_for_remote_sender_is_queued_from_null(make_server, dns,
                                                       mx_port, mxs):
    dns.mx("remote.test", (10, "mx1.remote.test"))
    dns.a("mx1.remote.test", "127.0.0.2")
    dns.mx("sender.test", (10, "mx2.sender.test"))
    dns.a("mx2.sender.test", "127.0.0.3")
    m1 = MX("127.0.0.2", mx_port)
    m1.rec.rcpt_reply = lambda a: "550 5.7.1 go away"
    m2 = MX("127.0.0.3", mx_port)
    mxs += [m1, m2]
    s = delivery_server(make_server, dns, mx_port)
    submit(s, ["x@remote.test"], sender="someone@sender.test", tag="rb")
    (_, frm, to, content, _), = m2.rec.wait(1)
    assert frm in ("", "<>") and to == ["someone@sender.test"]
    assert b"550 5.7.1 go away" in content
    # A bounce of the bounce goes nowhere: no loop.
    m2.rec.rcpt_reply = lambda a: "550 5.1.1 nope"
    submit(s, ["x@remote.test"], sender="", tag="null")
    wait_for(lambda: queue(s) == [], what="empty queue")
    time.sleep(0.5)
    assert len(m2.rec.messages) == 1


def test_loop_detected(make_server, dns, mx_port, mxs):
    dns.mx("remote.test", (10, "mx1.remote.test"))
    dns.a("mx1.remote.test", "127.0.0.2")
    m = MX("127.0.0.2", mx_port)
    mxs.append(m)
    s = delivery_server(make_server, dns, mx_port)
    hops = "".join("Received: from h%d by h%d; Mon, 1 Jan 2024 00:00:00 +0000"
                   "\r\n" % (i, i + 1) for i in range(31))
    submit(s, ["x@remote.test"], body=hops + "Subject: loop\r\n\r\nx\r\n")
    msgs = wait_for(lambda: pop3_messages(s, "alice@localhost"),
                    what="a bounce")
    assert b"5.4.6" in msgs[0] and b"loop" in msgs[0]
    assert m.rec.messages == []


def test_smtputf8_needed_but_not_offered_bounces(make_server, dns, mx_port,
                                                 mxs):
    dns.mx("remote.test", (10, "mx1.remote.test"))
    dns.a("mx1.remote.test", "127.0.0.2")
    m = MX("127.0.0.2", mx_port)  # aiosmtpd without enable_SMTPUTF8
    mxs.append(m)
    s = delivery_server(make_server, dns, mx_port)
    with smtplib.SMTP(*s.addr("smtp"), timeout=10) as c:
        c.ehlo()
        c.sendmail("alice@localhost", ["jörg@remote.test"],
                   "Subject: utf8\r\n\r\nx\r\n".encode(),
                   mail_options=["SMTPUTF8"])
    msgs = wait_for(lambda: pop3_messages(s, "alice@localhost"),
                    what="a bounce")
    assert b"5.6.7" in msgs[0] and b"SMTPUTF8" in msgs[0]
    assert m.rec.messages == []


def test_idn_domain_looked_up_as_a_label(make_server, dns, mx_port, mxs):
    dns.mx("xn--bcher-kva.test", (10, "mx1.remote.test"))
    dns.a("mx1.remote.test", "127.0.0.2")
    m = MX("127.0.0.2", mx_port, enable_SMTPUTF8=True)
    mxs.append(m)
    s = delivery_server(make_server, dns, mx_port)
    with smtplib.SMTP(*s.addr("smtp"), timeout=10) as c:
        c.ehlo()
        c.sendmail("alice@localhost", ["bob@bücher.test"],
                   "Subject: idn\r\n\r\nx\r\n".encode(),
                   mail_options=["SMTPUTF8"])
    (_, _, to, _, opts), = m.rec.wait(1)
    assert to == ["bob@bücher.test"] and "SMTPUTF8" in opts
    assert ("xn--bcher-kva.test", "MX") in dns.resolver.queries


def test_queue_cli(make_server, dns, mx_port):
    dns.resolver.servfail.add("later.test")
    s = delivery_server(make_server, dns, mx_port, retry_schedule="1h")
    submit(s, ["a@later.test"], tag="q1")
    submit(s, ["b@later.test"], tag="q2")
    lines = wait_for(lambda: (lambda q: q if len(q) == 2 and all(
        "SERVFAIL" in l for l in q) else None)(queue(s)), what="two entries")
    # ID <SENDER> <RECIPIENT> attempts=N next=TIME error=TEXT
    m = re.fullmatch(r"([0-9a-f]{16}) <alice@localhost> <a@later.test> "
                     r"attempts=1 next=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ "
                     r"error=451 4\.4\.3 .*SERVFAIL.*", lines[0])
    assert m, lines[0]
    ids = [l.split()[0] for l in lines]
    s.cli("queue", "delete", ids[0])
    assert len(queue(s)) == 1
    s.cli("queue", "bounce", ids[1])
    assert queue(s) == []
    msgs = pop3_messages(s, "alice@localhost")
    assert len(msgs) == 1 and b"b@later.test" in msgs[0]
    r = s.cli("queue", "delete", "00000000000000ff", check=False)
    assert r.returncode == 1
    r = s.cli("queue", "flush", "zz", check=False)
    assert r.returncode == 1 and "bad message id" in r.stderr
    r = s.cli("queue", "flush", ids[0], check=False)  # deleted above
    assert r.returncode == 1
    assert r.stderr == "pillarbox: queue flush: no such message in the " \
        "queue\n", r.stderr


# ------------------------------------------------------------ real Postfix

POSTFIX = "/usr/sbin/postfix"


def test_real_postfix_as_the_peer(make_server, dns, tmp_path):
    """Delivery to a real Postfix: a private config dir, smtpd on
    127.0.0.1 at a port picked now (Postfix binds only addresses an
    interface has, and loopback has 127.0.0.1), mail discarded once
    taken."""
    if not os.path.exists(POSTFIX) or os.geteuid() != 0:
        pytest.skip("Postfix not installed, or not root: cannot run it "
                    "(Debian package postfix)")
    port = free_port(["127.0.0.1"])
    # Postfix's own user walks into its directories: not under pytest's
    # tmp_path, which only root may enter.
    top = tempfile.mkdtemp(prefix="pillarbox-postfix-")
    os.chmod(top, 0o755)
    conf = os.path.join(top, "conf")
    spool = os.path.join(top, "spool")
    os.mkdir(conf)
    os.mkdir(spool)
    maillog = os.path.join(top, "maillog")
    open(os.path.join(conf, "main.cf"), "w").write(
        "compatibility_level = 3.6\n"
        "queue_directory = %s\n" % spool +
        "data_directory = %s/data\n" % spool +
        "myhostname = postfix.remote.test\n"
        "mydestination = remote.test\n"
        "inet_interfaces = 127.0.0.1\n"
        "inet_protocols = ipv4\n"
        "mynetworks = 127.0.0.0/8\n"
        "local_recipient_maps =\n"
        "alias_maps =\n"
        "local_transport = discard:\n"
        "maillog_file = %s\n" % maillog +
        "maillog_file_prefixes = %s\n" % top +
        "smtputf8_enable = yes\n")
    mc = open("/etc/postfix/master.cf").read()
    mc = re.sub(r"(?m)^smtp\s+inet.*$",
                "127.0.0.1:%d inet n - n - - smtpd" % port, mc)
    open(os.path.join(conf, "master.cf"), "w").write(mc)
    r = subprocess.run([POSTFIX, "-c", conf, "start"],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        shutil.rmtree(top, ignore_errors=True)
        pytest.skip("postfix -c DIR start failed (run `script -qc "
                    "'postfix -c DIR check'` to see why): " + r.stderr[-300:])
    try:
        dns.mx("remote.test", (10, "pf.remote.test"))
        dns.a("pf.remote.test", "127.0.0.1")
        s = delivery_server(make_server, dns, port)
        try:
            wait_for(lambda: _port_open("127.0.0.1", port), timeout=20,
                     what="postfix smtpd")
        except AssertionError:
            pytest.skip("postfix started but its smtpd does not answer")
        submit(s, ["rcpt@remote.test"], tag="postfix")
        wait_for(lambda: queue(s) == [], timeout=30, what="empty queue")
        log = s.log_text()
        assert re.search(r"event=delivered .*to=<rcpt@remote.test> "
                         r"relay=pf.remote.test\[127.0.0.1\] .*reply=250", log), \
            log[-2000:]
        wait_for(lambda: os.path.exists(maillog) and
                 "from=<alice@localhost>" in open(maillog).read(),
                 what="the message in Postfix's log")
    finally:
        subprocess.run([POSTFIX, "-c", conf, "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(top, ignore_errors=True)


def _port_open(ip, port):
    import socket
    try:
        socket.create_connection((ip, port), timeout=0.5).close()
        return True
    except OSError:
        return False


# ------------------------------------------------ what goes on the wire

def scripted(make_server, dns, mx_port, mxs, **kw):
    dns.mx("remote.test", (10, "mx1.remote.test"))
    dns.a("mx1.remote.test", "127.0.0.2")
    m = ScriptedMX("127.0.0.2", mx_port, **kw)
    mxs.append(m)
    return m, delivery_server(make_server, dns, mx_port)


def test_pipelining_and_dot_stuffing_on_the_wire(make_server, dns, mx_port,
                                                 mxs):
    """PIPELINING offered: MAIL, both RCPTs and DATA in one write, replies
    read back one octet at a time; SIZE= and BODY=8BITMIME given; a line
    starting with "." goes out doubled and comes back whole."""
    m, s = scripted(make_server, dns, mx_port, mxs)
    body = ("Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\n"
            "caf\u00e9 8bit\r\n").encode()
    submit(s, ["a@remote.test", "b@remote.test"], body=body)
    wait_for(lambda: m.bodies, what="the message")
    wait_for(lambda: queue(s) == [], what="an empty queue")
    i = next(k for k, c in enumerate(m.commands) if c.startswith("MAIL"))
    assert m.commands[i:i + 4] == [
        m.commands[i], "RCPT TO:<a@remote.test>", "RCPT TO:<b@remote.test>",
        "DATA"]
    assert re.fullmatch(r"MAIL FROM:<alice@localhost> SIZE=\d+ BODY=8BITMIME",
                        m.commands[i])
    assert 4 in m.batches  # the four came in one write
    raw, got = m.bodies[0]
    assert b"\r\n..leading dot\r\n...two\r\n..\r\n" in raw
    assert got.endswith(body)
    size = int(re.search(r"SIZE=(\d+)", m.commands[i]).group(1))
    assert size == len(got)
    wait_for(lambda: m.commands[-1] == "QUIT", what="QUIT")


def test_helo_fallback_and_no_pipelining(make_server, dns, mx_port, mxs):
    """EHLO refused with a 5xx: HELO, and then plain RFC 821 - no
    parameters on MAIL, one command at a time."""
    m, s = scripted(make_server, dns, mx_port, mxs, ehlo=None)
    submit(s, ["a@remote.test", "b@remote.test"], tag="helo")
    wait_for(lambda: m.bodies, what="the message")
    assert m.commands[0].startswith("EHLO ")
    assert m.commands[1].startswith("HELO ")
    assert "MAIL FROM:<alice@localhost>" in m.commands
    assert max(m.batches) == 1  # never two commands at once


def test_peer_size_limit_bounces_without_sending(make_server, dns, mx_port,
                                                 mxs):
    m, s = scripted(make_server, dns, mx_port, mxs,
                    ehlo=("PIPELINING", "SIZE 200"))
    submit(s, ["a@remote.test"], body=("Subject: big\r\n\r\n" +
                                       "x" * 500 + "\r\n").encode())
    msgs = wait_for(lambda: pop3_messages(s, "alice@localhost"),
                    what="a bounce")
    assert b"5.3.4" in msgs[0] and b"exceeds the limit" in msgs[0]
    assert not any(c.startswith("MAIL") for c in m.commands)


def metric(server, name):
    host, port = server.addr("web")
    with urllib.request.urlopen("http://%s:%d/metrics" % (host, port),
                                timeout=10) as r:
        text = r.read().decode()
    (value,) = re.findall(r"^%s (\d+)$" % re.escape(name), text, re.M)
    return int(value)


def test_new_messages_do_not_walk_the_whole_queue(make_server, dns, mx_port):
    """Each relayed message is looked at by its own keys: a busy server
    with a long queue (here held: max_concurrent 0) does not walk all of
    it once per commit, which made accepting relayed mail slow down as
    the queue grew."""
    s = delivery_server(make_server, dns, mx_port, max_concurrent="0")
    walks = metric(s, "pillarbox_queue_walks_total")
    for i in range(30):
        submit(s, ["x%d@remote.test" % i], tag="w%d" % i)
    assert len(queue(s)) == 30
    # The start's walk, and perhaps one a timer or clock tick explains;
    # never one per message.
    assert metric(s, "pillarbox_queue_walks_total") - walks <= 2
