"""Durability: every message that got its 250 survives kill -9 (and a
graceful SIGTERM), in every recipient's mailbox, exactly once and whole.

16 threads send messages with unique ids to alice, bob or both; the server
is killed at some moment, started again on the same data_dir, and both
mailboxes are read back through POP3."""
import collections
import hashlib
import re
import smtplib
import threading
import time

from helpers import (HELO_NAME, SENDER, TIMEOUT, pop3_messages, restart,  # noqa: F401
                     precreate_server_dirs,
                     split_trace)

USERS = ("alice@localhost", "bob@localhost")
RCPT_SETS = (("alice@localhost",), ("bob@localhost",),
             ("alice@localhost", "bob@localhost"))
THREADS = 16
PER_CONNECTION = 5
MID_RE = re.compile(rb"^Message-Id: <([^@>]+)@client\.test>\r\n", re.M)


def body_for(mid):
    """The exact message for an id: its length and content derive from the
    id, so a truncated or mixed-up message is detected."""
    h = hashlib.sha256(mid.encode()).digest()
    n = 3 + h[0] % 40
    lines = ["%s %04d %s" % (mid, i, hashlib.sha256(
        ("%s/%d" % (mid, i)).encode()).hexdigest()) for i in range(n)]
    return ("Message-Id: <%s@client.test>\r\nSubject: %s\r\n"
            "From: %s\r\n\r\n%s\r\nEND %s\r\n"
            % (mid, mid, SENDER, "\r\n".join(lines), mid)).encode()


class Senders:
    """THREADS threads sending until stop is set; acked[mid] is the tuple
    of recipients whose delivery was acknowledged with 250, attempted[mid]
    every recipient a message was ever sent to."""

    def __init__(self, server, tag, acked, attempted):
        self.server = server
        self.tag = tag
        self.acked = acked
        self.attempted = attempted
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.errors = []
        self.threads = [threading.Thread(target=self.run, args=(i,))
                        for i in range(THREADS)]
        self.count = 0

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(TIMEOUT * 3)
        assert not any(t.is_alive() for t in self.threads), "sender stuck"

    def run(self, tid):
        n = 0
        host, port = self.server.addr("smtp")
        while not self.stop.is_set():
            try:
                with smtplib.SMTP(host, port, local_hostname=HELO_NAME,
                                  timeout=TIMEOUT) as cl:
                    for _ in range(PER_CONNECTION):
                        if self.stop.is_set():
                            break
                        mid = "%s-t%02d-%05d" % (self.tag, tid, n)
                        rcpts = RCPT_SETS[(n + tid) % len(RCPT_SETS)]
                        n += 1
                        with self.lock:
                            self.attempted[mid] = rcpts
                        refused = cl.sendmail(SENDER, list(rcpts),
                                              body_for(mid))
                        ok = tuple(r for r in rcpts if r not in refused)
                        with self.lock:
                            self.acked[mid] = ok
                            self.count += 1
            except (smtplib.SMTPException, OSError) as e:
                # the server went away (or refused): try again until told
                # to stop; a refused connection after kill -9 lands here
                with self.lock:
                    self.errors.append(repr(e))
                time.sleep(0.02)


def check_mailboxes(server, acked, attempted):
    """Every acknowledged message is in each of its recipients' mailboxes
    exactly once; every stored message is whole and was sent to that
    user; a stored message is in all of its recipients' mailboxes."""
    present = {}
    for user in USERS:
        seen = collections.Counter()
        for msg in pop3_messages(server, user):
            _, _, rest = split_trace(msg)
            m = MID_RE.search(rest)
            assert m, "stored message without our Message-Id: %r" % msg[:500]
            mid = m.group(1).decode()
            assert mid in attempted, "phantom message %s" % mid
            assert user in attempted[mid], "%s got %s" % (user, mid)
            assert rest == body_for(mid), "message %s is not whole" % mid
            seen[mid] += 1
        dups = sorted(k for k, v in seen.items() if v > 1)
        assert not dups, "%s has duplicates: %s" % (user, dups[:20])
        missing = sorted(mid for mid, rc in acked.items()
                         if user in rc and not seen[mid])
        assert not missing, "%s lost %d acknowledged messages: %s" % (
            user, len(missing), missing[:20])
        present[user] = seen
    # all or nothing per message: no recipient without the others
    half = sorted(mid for mid, rc in attempted.items()
                  if len({bool(present[u][mid])
                          for u in acked.get(mid, rc)}) > 1)
    assert not half, "delivered to only some recipients: %s" % half[:20]


def test_kill9_keeps_every_acknowledged_message(make_server):
    s = make_server()
    acked, attempted = {}, {}
    per_round = []
    for rnd, delay in enumerate((0.3, 1.0, 2.0)):
        senders = Senders(s, "r%d" % rnd, acked, attempted).start()
        time.sleep(delay)
        s.kill9()
        senders.finish()
        per_round.append(senders.count)
        restart(s)
        check_mailboxes(s, acked, attempted)
        print("round %d: kill after %.1fs, %d acknowledged, %d attempted"
              % (rnd, delay, senders.count, len(attempted)))
    assert sum(per_round) > 0, "no message was acknowledged at all"
    assert per_round[1] > 0 and per_round[2] > 0, per_round
    # the restarted server still takes mail
    mid = "final"
    attempted[mid] = acked[mid] = USERS
    host, port = s.addr("smtp")
    with smtplib.SMTP(host, port, local_hostname=HELO_NAME,
                      timeout=TIMEOUT) as cl:
        assert cl.sendmail(SENDER, list(USERS), body_for(mid)) == {}
    check_mailboxes(s, acked, attempted)


def test_sigterm_during_sending_is_graceful(make_server):
    s = make_server()
    acked, attempted = {}, {}
    senders = Senders(s, "term", acked, attempted).start()
    time.sleep(0.7)
    # senders stop starting new messages a little after the signal
    timer = threading.Timer(0.3, senders.stop.set)
    timer.start()
    rc = s.stop()
    timer.join()
    senders.finish()
    assert rc == 0, "SIGTERM exit code %r\n%s" % (rc, s.log_text()[-3000:])
    assert senders.count > 0
    print("SIGTERM: %d acknowledged, %d attempted"
          % (senders.count, len(attempted)))
    restart(s)
    check_mailboxes(s, acked, attempted)
