"""tls_bench.py - TLS figures for bench.sh: full handshakes per second of
server CPU (openssl s_time clients, new session each time, against a
pop3s listener with the self-signed EC P-256 certificate), the same for
resumed handshakes (s_time -reuse: each client offers its first session
again, which the server's session cache resumes without ECDHE), and the
RSS an idle TLS connection adds (N POP3S sessions held open after the
greeting).

usage: tls_bench.py BIN WORKDIR SECONDS IDLE_N
Prints key=value lines; exits 1 when something could not be run."""
import os
import re
import resource
import socket
import ssl
import subprocess
import sys
import time

BIN, W, SECS, N = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
CLIENTS = 2


def start():
    os.makedirs(W, exist_ok=True)
    conf = os.path.join(W, "pb.conf")
    with open(conf, "w") as f:
        f.write("[server]\nhostname = mx.test\ndata_dir = %s/data\n"
                "max_connections = 0\n[smtp]\nlisten =\nsmtps =\n"
                "submission =\n[web]\nlisten =\n"
                "[pop3]\nlisten =\npop3s = 127.0.0.1:0\n"
                "max_connections_per_ip = 0\n" % W)
    log = os.path.join(W, "server.log")
    p = subprocess.Popen([BIN, "serve", "-c", conf],
                         stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    for _ in range(300):
        text = open(log).read()
        if "event=ready" in text:
            port = int(re.search(r"proto=pop3s addr=\S*:(\d+)",
                                 text).group(1))
            return p, port, log
        time.sleep(0.1)
    p.kill()
    sys.exit("server did not start")


def cpu(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def rss(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


def handshakes(p, port, log, how):
    """CLIENTS openssl s_time clients (how: -new or -reuse) for SECS:
    (handshakes the server logged, its CPU seconds, handshakes per CPU
    second, per second, connections s_time marked resumed)."""
    before = open(log).read().count("event=tls version")
    c0, t0 = cpu(p.pid), time.time()
    clients = [subprocess.Popen(
        ["openssl", "s_time", "-connect", "127.0.0.1:%d" % port, how,
         "-time", str(SECS)], stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL) for _ in range(CLIENTS)]
    reused = 0
    for c in clients:
        out = c.communicate()[0]
        # the progress line: one character per connection
        reused += sum(l.count(b"r") for l in out.splitlines()
                      if l and set(l) <= set(b"rn*."))
    c1, t1 = cpu(p.pid), time.time()
    n = open(log).read().count("event=tls version") - before
    return n, c1 - c0, n / max(c1 - c0, 0.01), n / (t1 - t0), reused


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    p, port, log = start()
    try:
        # Idle connections first, on a fresh heap.
        ctx = ssl.create_default_context(
            cafile=os.path.join(W, "data", "selfsigned-cert.pem"))
        r0, socks = rss(p.pid), []
        for _ in range(N):
            s = ctx.wrap_socket(socket.create_connection(
                ("127.0.0.1", port)), server_hostname="mx.test")
            s.recv(100)  # the greeting: handshake done
            socks.append(s)
        time.sleep(0.5)
        print("idle_conns=%d idle_kib_per_conn=%.2f" %
              (N, (rss(p.pid) - r0) / N))
        for s in socks:
            s.close()
        time.sleep(0.5)
        n, cpu_s, per_cpu, per_s, _ = handshakes(p, port, log, "-new")
        text = open(log).read()
        print("handshakes=%d server_cpu_s=%.2f per_cpu_s=%.0f "
              "observed_per_s=%.0f cipher=%s" %
              (n, cpu_s, per_cpu, per_s,
               re.findall(r"event=tls version=\S+ cipher=(\S+)", text)[-1]))
        n, cpu_s, per_cpu, per_s, reused = handshakes(p, port, log, "-reuse")
        # s_time prints "r" for each connection that resumed
        print("resumed_handshakes=%d resumed_share=%.3f "
              "resumed_server_cpu_s=%.2f resumed_per_cpu_s=%.0f "
              "resumed_observed_per_s=%.0f" %
              (n, reused / max(n, 1), cpu_s, per_cpu, per_s))
    finally:
        p.terminate()
        p.wait()


main()
