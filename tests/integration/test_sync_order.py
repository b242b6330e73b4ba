"""No 250 before its commit is on disk (DESIGN.md: "A 250 after DATA means
the message is on disk"). The real server runs under strace; afterwards the
trace must show, for every "250 2.0.0 Ok: stored as ID" written to a
socket, that the data-file write holding message ID was followed by a sync
of LMDB's data.mdb that returned 0, and that this sync had returned before
the reply's write began.

Why the order in strace's output file is the order in time: strace stops a
thread at every traced system call's entry and exit and writes each line
(or the part of it up to <unfinished ...>) while that thread is stopped.
The commit thread is held at the exit of its fdatasync until strace has
written that exit, and only then can it tell the loop thread, which only
then writes the 250: so a correct server always puts the sync's "= 0" (or
its "<... fdatasync resumed> ... = 0") above the reply's line. A server
that replied before the sync returned (the loop thread woken early, a
reply sent from the job's run(), sync turned off with MDB_NOSYNC, or the
sync done before the message's pages were written) puts the reply first,
or has no sync between the data write and the reply: the check fails.
test_checker_catches_early_replies feeds such traces to the same check."""
import os
import re
import shutil
import signal
import smtplib
import subprocess
import threading
import time

import pytest

from conftest import BIN, Server
from helpers import HELO_NAME, TIMEOUT, precreate_server_dirs  # noqa: F401

STRACE = shutil.which("strace")
TRACED = "fdatasync,fsync,msync,write,writev,pwrite64,pwritev,sendmsg,sendto"
WRITES = ("write", "writev", "pwrite64", "pwritev", "sendmsg", "sendto")
SYNCS = ("fdatasync", "fsync")  # msync names no file: not counted
THREADS = 4
PER_THREAD = 5

LINE_RE = re.compile(r"^(\d+) +\d\d:\d\d:\d\d\.\d+ (.*)$")
RESUMED_RE = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
RESULT_RE = re.compile(r"\) += (-?\d+)(?: \w+ \(.*\))?$")
FD_RE = re.compile(r"^\w+\(\d+<([^>]*)>")
STORED_RE = re.compile(r"250 2\.0\.0 Ok: stored as ([0-9a-f]+)")
# The Received: header the server writes at the top of each message holds
# the same id as its 250: "with ESMTP id ID".
TRACE_ID_RE = re.compile(r"\(pillarbox\) with \w+ id ([0-9a-f]+)")


def calls(lines):
    """Every system call of the trace, finished: (name, text, start, end,
    result), start and end being the indexes of the lines where it entered
    and where it returned (the same for a call on one line)."""
    pending = {}  # pid -> (name, text so far, start)
    for i, line in enumerate(lines):
        m = LINE_RE.match(line)
        if m is None:
            continue
        pid, rest = m.groups()
        r = RESUMED_RE.match(rest)
        if r is not None:
            name, text, start = pending.pop(pid)
            rest = text[:-len("<unfinished ...>")] + r.group(2)
        elif rest.endswith("<unfinished ...>"):
            pending[pid] = (rest.split("(", 1)[0], rest, i)
            continue
        elif rest.startswith(("---", "+++")) or "(" not in rest:
            continue  # signals, exits
        else:
            name, start = rest.split("(", 1)[0], i
        res = RESULT_RE.search(rest)
        yield name, rest, start, i, int(res.group(1)) if res else None


def check_sync_order(lines):
    """Returns (ids replied 250, problems): a problem for each 250 not
    preceded by the write of its message to data.mdb and then a sync of
    data.mdb that returned 0 before the reply began."""
    syncs = []   # (start, end) of each data.mdb sync that returned 0
    written = {}  # message id -> end of the data.mdb write holding it
    replies = []  # (message id, start of the reply's write)
    for name, text, start, end, res in calls(lines):
        fd = FD_RE.match(text)
        on_data = fd is not None and fd.group(1).endswith("/data.mdb")
        if name in SYNCS and on_data and res == 0:
            syncs.append((start, end))
        elif name in WRITES and on_data:
            for mid in TRACE_ID_RE.findall(text):
                written.setdefault(mid, end)
        elif name in WRITES:
            replies += [(mid, start) for mid in STORED_RE.findall(text)]
    problems = []
    for mid, at in replies:
        w = written.get(mid)
        if w is None or w > at:
            problems.append("250 for %s: its data not written before" % mid)
        elif not any(w < s and e < at for s, e in syncs):
            problems.append("250 for %s (line %d): no sync of data.mdb "
                            "began after its data was written (line %d) "
                            "and returned before" % (mid, at + 1, w + 1))
    return [mid for mid, _ in replies], problems


class TracedServer(Server):
    """conftest's Server, run under strace -f writing to self.trace."""

    def __init__(self, tmpdir):
        super().__init__(tmpdir, domains="localhost")
        self.trace = os.path.join(self.dir, "trace")

    def start(self):
        self.logf = open(self.log, "ab")
        # LeakSanitizer cannot work under ptrace; the other tests check
        # for leaks.
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") +
                               ":detect_leaks=0").lstrip(":")
        # --seccomp-bpf: threads stop only at the traced calls. -yy names
        # each fd's file or socket; -s 512 shows a message's first lines.
        self.proc = subprocess.Popen(
            [STRACE, "-f", "--seccomp-bpf", "-tt", "-yy", "-s", "512",
             "-e", "trace=" + TRACED, "-o", self.trace,
             BIN, "serve", "-c", self.conf],
            stdout=self.logf, stderr=self.logf, env=env)
        deadline = time.time() + 60
        while time.time() < deadline:
            text = self.log_text()
            if "event=ready" in text:
                self.ports = dict(re.findall(
                    r"event=listening proto=(\w+) addr=(\S+)", text))
                return self
            if self.proc.poll() is not None:
                return None  # strace could not run it
            time.sleep(0.05)
        raise AssertionError("server not ready:\n" + self.log_text())

    def stop(self, sig=signal.SIGTERM):
        """Signals the server itself (strace exits with its status)."""
        if self.proc is None:
            return None
        path = "/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)
        with open(path) as f:
            for pid in f.read().split():
                os.kill(int(pid), sig)
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        self.logf.close()
        self.rc = rc
        return rc


@pytest.fixture
def traced(tmp_path):
    if STRACE is None:
        pytest.skip("strace is not installed")
    s = TracedServer(tmp_path / "s0")
    s.add_user("alice@localhost")
    s.add_user("bob@localhost")
    if s.start() is None:
        pytest.skip("strace cannot trace here: " + s.log_text()[-500:])
    yield s
    rc = s.stop() if s.proc is not None else s.rc
    text = s.log_text()
    assert "ERROR: AddressSanitizer" not in text, text
    assert "runtime error:" not in text, text
    assert rc == 0, "server exit %s\n%s" % (rc, text[-3000:])


def body(tag):
    """About 6 KiB: stored in overflow pages of its own, so its first
    lines (Received: with the id) lead a page strace shows."""
    line = b"%s " % tag.encode() + b"x" * 70 + b"\r\n"
    return b"Subject: %s\r\n\r\n" % tag.encode() + line * 80


def test_no_250_before_sync(traced):
    """Several clients at once, so that commits carry several messages."""
    errors = []

    def send(t):
        try:
            host, port = traced.addr("smtp")
            with smtplib.SMTP(host, port, local_hostname=HELO_NAME,
                              timeout=TIMEOUT * 6) as c:
                for i in range(PER_THREAD):
                    rcpt = ("alice@localhost", "bob@localhost")[i % 2]
                    c.sendmail("sender@example.org", [rcpt],
                               body("t%d-%d" % (t, i)))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=send, args=(t,))
               for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert traced.stop() == 0
    with open(traced.trace, errors="replace") as f:
        lines = f.read().splitlines()
    replied, problems = check_sync_order(lines)
    assert len(replied) == THREADS * PER_THREAD, replied
    assert len(set(replied)) == len(replied)
    assert problems == [], "\n".join(problems)


# The check itself, on traces written by hand: a correct one passes, and
# each way a reply can come too early is caught.
DATA = ('1 00:00:00.000001 writev(11</d/data.mdb>, [{iov_base="\\r\\0\\0\\0'
        'Return-Path: <a@b>\\r\\nReceived: from c ([127.0.0.1])\\r\\n\\tby '
        'mx.test (pillarbox) with ESMTP id ab12\\r\\n"..., iov_len=8192}], '
        '1) = 8192')
SYNC_BEGIN = "1 00:00:00.000002 fdatasync(11</d/data.mdb> <unfinished ...>"
OTHER = ('2 00:00:00.000003 write(16<TCP:[127.0.0.1:25->127.0.0.1:9]>, '
         '"250 2.1.0 Ok\\r\\n", 14) = 14')
SYNC_END = "1 00:00:00.000004 <... fdatasync resumed>) = 0"
REPLY = ('2 00:00:00.000005 writev(16<TCP:[127.0.0.1:25->127.0.0.1:9]>, '
         '[{iov_base="250 2.0.0 Ok: stored as ab12\\r\\n", iov_len=31}], 1) '
         '= 31')
SYNC_FAILED = "1 00:00:00.000004 <... fdatasync resumed>) = -1 EIO (I/O error)"


def test_checker_catches_early_replies():
    good = [DATA, SYNC_BEGIN, OTHER, SYNC_END, REPLY]
    assert check_sync_order(good) == (["ab12"], [])
    one_line_sync = [DATA, "1 00:00:00.000002 fdatasync(11</d/data.mdb>) = 0",
                     REPLY]
    assert check_sync_order(one_line_sync) == (["ab12"], [])
    bad = {
        "reply while the sync runs": [DATA, SYNC_BEGIN, REPLY, SYNC_END],
        "no sync (MDB_NOSYNC)": [DATA, OTHER, REPLY],
        "sync before the data": [SYNC_BEGIN, SYNC_END, DATA, REPLY],
        "sync failed": [DATA, SYNC_BEGIN, SYNC_FAILED, REPLY],
        "reply before the data": [REPLY, DATA, SYNC_BEGIN, SYNC_END],
        "sync of another file": [
            DATA, SYNC_BEGIN.replace("data.mdb", "lock.mdb"), SYNC_END,
            REPLY],
    }
    for what, lines in bad.items():
        replied, problems = check_sync_order(lines)
        assert replied == ["ab12"], what
        assert len(problems) == 1, (what, problems)
