"""Outbound delivery figures for bench.sh (section 6): prints key=value.

  outbound.py throughput BIN WORKDIR CONCURRENCY COUNT
      COUNT 4 KiB messages are queued for a domain whose exchanger is not
      there yet (each deferred once), then Postfix's smtp-sink starts and
      `pillarbox queue flush` sends them all: msgs/s from the flush to the
      last event=delivered. max_concurrent = max_per_domain = CONCURRENCY.

  outbound.py latency BIN WORKDIR COUNT
      With an idle queue, one 4 KiB message at a time: the time from the
      submission's 250 to the 250 an aiosmtpd sink gives for its data,
      both read on this process's clock. Prints p50 and p99 in ms.

The sinks are found as the MX of remote.test in a dnslib DNS server of
this process (the smarthost would need verified TLS, which neither sink
speaks). Everything on 127.0.0.x, ports picked at run time."""
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time

BODY = ("Subject: bench\r\n\r\n" + ("x" * 76 + "\r\n") * 52)[:4096]


def free_port(ip):
    s = socket.socket()
    s.bind((ip, 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start_server(binary, wd, delivery):
    os.makedirs(wd + "/data", exist_ok=True)
    conf = wd + "/pb.conf"
    with open(conf, "w") as f:
        f.write("[server]\nhostname = mx.test\ndata_dir = %s/data\n"
                "domains = localhost\nmax_connections = 10000\n"
                "[smtp]\nlisten = 127.0.0.1:0\nrelay_networks = 127.0.0.0/8\n"
                "smtps =\nsubmission =\n"
                "max_connections_per_ip = 5000\n[pop3]\nlisten =\npop3s =\n"
                "[web]\nlisten =\n[delivery]\n" % wd)
        for k, v in delivery.items():
            f.write("%s = %s\n" % (k, v))
    log = open(wd + "/server.log", "wb")
    p = subprocess.Popen([binary, "serve", "-c", conf], stdout=log,
                         stderr=log)
    for _ in range(300):
        text = open(wd + "/server.log", "rb").read().decode("latin-1")
        if "event=ready" in text:
            port = int(re.search(r"proto=smtp addr=\S+:(\d+)", text).group(1))
            return p, conf, port
        if p.poll() is not None:
            break
        time.sleep(0.05)
    raise SystemExit("server did not start:\n" + text[-2000:])


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()


def mx_dns(ip):
    """A DNS server saying remote.test's exchanger is at ip."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..",
                                    "integration"))
    from mxutil import DNSTable
    dns = DNSTable()
    dns.mx("remote.test", (10, "sink.remote.test"))
    dns.a("sink.remote.test", ip)
    return dns


def count_delivered(wd):
    with open(wd + "/server.log", "rb") as f:
        return f.read().count(b"event=delivered")


def throughput(binary, wd, conc, count):
    sink_ip = "127.0.0.6"
    port = free_port(sink_ip)
    dns = mx_dns(sink_ip)
    p, conf, smtp_port = start_server(binary, wd, {
        "resolver": dns.address, "mx_port": port, "retry_schedule": "1h",
        "max_concurrent": conc, "max_per_domain": conc,
        "connect_timeout": "5", "command_timeout": "30"})
    sink = None
    try:
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as c:
            for i in range(count):
                c.sendmail("bench@localhost", ["r%d@remote.test" % i], BODY)
        # every entry deferred once (connection refused)
        deadline = time.time() + 120
        while time.time() < deadline:
            q = subprocess.run([binary, "-c", conf, "queue", "list"],
                               capture_output=True, text=True).stdout
            lines = q.splitlines()
            if len(lines) == count and all(" attempts=1 " in l
                                           for l in lines):
                break
            time.sleep(0.1)
        sink = subprocess.Popen(["smtp-sink", "-u", "nobody",
                                 "%s:%d" % (sink_ip, port), "1024"],
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection((sink_ip, port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        t0 = time.time()
        subprocess.run([binary, "-c", conf, "queue", "flush"], check=True)
        deadline = time.time() + 300
        while count_delivered(wd) < count and time.time() < deadline:
            time.sleep(0.005)
        secs = time.time() - t0
        n = count_delivered(wd)
        print("concurrency=%s msgs=%d secs=%.3f msgs_per_s=%.0f"
              % (conc, n, secs, n / secs))
    finally:
        stop(p)
        dns.stop()
        if sink is not None:
            sink.terminate()
            sink.wait()


def latency(binary, wd, count):
    from aiosmtpd.controller import Controller

    got = {}
    ev = threading.Event()

    class Sink:
        async def handle_DATA(self, server, session, envelope):
            got[envelope.rcpt_tos[0]] = time.time()
            ev.set()
            return "250 2.0.0 ok"

    sink_ip = "127.0.0.7"
    port = free_port(sink_ip)
    ctl = Controller(Sink(), hostname=sink_ip, port=port)
    ctl.start()
    dns = mx_dns(sink_ip)
    p, conf, smtp_port = start_server(binary, wd, {
        "resolver": dns.address, "mx_port": port})
    lat = []
    try:
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as c:
            for i in range(count):
                rcpt = "r%d@remote.test" % i
                ev.clear()
                c.sendmail("bench@localhost", [rcpt], BODY)
                t250 = time.time()
                if not ev.wait(10):
                    raise SystemExit("message %d not delivered" % i)
                lat.append((got[rcpt] - t250) * 1000)
    finally:
        stop(p)
        ctl.stop()
        dns.stop()
    lat.sort()
    print("msgs=%d p50_ms=%.2f p99_ms=%.2f"
          % (len(lat), lat[len(lat) // 2], lat[min(len(lat) - 1,
                                                   len(lat) * 99 // 100)]))


if __name__ == "__main__":
    if sys.argv[1] == "throughput":
        throughput(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        latency(sys.argv[2], sys.argv[3], int(sys.argv[4]))
