"""A full store, or a full disk, recovers the way an admin expects: new mail
is refused with 452 4.3.1 (temporary: the sender retries), the user can
still delete mail over POP3, and once mail is deleted new mail fits again
at once, without a restart or another write to nudge the store.

The capped store runs anywhere; the full-disk test mounts a small tmpfs as
data_dir and so needs root."""
import errno
import os
import shutil
import subprocess

import pytest

from helpers import (SMTPConn, expect, pop3_open,  # noqa: F401
                     precreate_server_dirs)

FULL = "452 4.3.1 Insufficient system storage"
LOGGING_OUT = b"+OK Logging out."


def message(tag, size):
    """A CRLF message of about size octets with a unique Subject."""
    head = ("Subject: %s\r\nFrom: sender@example.org\r\n\r\n" % tag).encode()
    line = b"x" * 78 + b"\r\n"
    return head + line * ((size - len(head)) // len(line))


def fill(conn, size, limit):
    """Sends size-octet messages to alice until one is refused; returns
    (number stored, the refusal)."""
    for n in range(limit):
        r = conn.deliver(["alice@localhost"], message("fill %d" % n, size))
        if r.code != 250:
            return n, r
    raise AssertionError("no refusal after %d messages" % limit)


def delete_all(server, limit=None):
    """POP3: marks every message of alice's (the first limit ones) and
    QUITs; returns QUIT's reply and the number of messages deleted."""
    p = pop3_open(server)
    try:
        count, _ = p.stat()
        count = min(count, limit or count)
        for i in range(1, count + 1):
            p.dele(i)
        return p.quit(), count
    finally:
        p.close()


def test_capped_store_recovers_at_once(make_server):
    """max_store_size = 16M: fill it with 256 KiB messages, delete the
    whole mailbox, and the next message is taken at once. LMDB reuses the
    pages a commit frees only two commits later, and every refused attempt
    is rolled back, so on a quiet server the store must make that commit
    itself."""
    s = make_server(extra={"server": {"max_store_size": "16M"}})
    with SMTPConn(s) as c:
        c.ehlo()
        stored, r = fill(c, 256 << 10, 100)
        expect(r, "452 4.3.1", FULL)
        assert stored >= 32, stored  # most of the 16 MiB held mail
        # Still full: a refusal changes nothing.
        expect(c.deliver(["alice@localhost"], message("again", 256 << 10)),
               "452 4.3.1", FULL)
        quit_reply, deleted = delete_all(s)
        assert quit_reply == LOGGING_OUT
        assert deleted == stored
        expect(c.deliver(["alice@localhost"], message("after", 256 << 10)),
               "250 2.0.0")


def test_one_oversized_message_fails_alone(make_server):
    """At the cap, a message that cannot fit is refused while the small
    ones committed in the same batch are stored: each session whose
    message fits gets its 250."""
    s = make_server(extra={"server": {"max_store_size": "16M"}})
    conns = [SMTPConn(s) for _ in range(4)]
    try:
        with SMTPConn(s) as c:
            c.ehlo()
            fill(c, 1 << 20, 40)  # the store is nearly full
        p = pop3_open(s)
        for i in (1, 2):  # room for some small messages, not a big one
            p.dele(i)
        assert p.quit() == LOGGING_OUT
        big = message("big", 6 << 20)
        for c in conns:
            c.begin(["alice@localhost"])
            expect(c.cmd("DATA"), "354")
        # Send the four ends of DATA back to back so that the commit
        # thread is likely to take them as one batch.
        for i, c in enumerate(conns):
            body = big if i == 1 else message("small %d" % i, 8 << 10)
            c.send(body + b".\r\n")
        replies = [c.reply() for c in conns]
        expect(replies[1], "452 4.3.1", FULL)
        for i in (0, 2, 3):
            expect(replies[i], "250 2.0.0")
    finally:
        for c in conns:
            c.close()


# --------------------------------------------------------- full disk

TMPFS_SIZE = "24m"


@pytest.fixture
def tmpfs_data(tmp_path):
    """A small tmpfs mounted where make_server's first server keeps its
    data_dir (tmp_path/s0/data); unmounted afterwards, whatever happened.
    Request it before make_server so that the server is stopped first."""
    if os.geteuid() != 0:
        pytest.skip("the full-disk test mounts a tmpfs: run it as root")
    d = tmp_path / "s0" / "data"
    d.mkdir(parents=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount(8) here (Debian package mount)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o",
                        "size=%s,mode=0700" % TMPFS_SIZE, "tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs: %s" % r.stderr.strip())
    try:
        yield d
    finally:
        if subprocess.run(["umount", str(d)]).returncode != 0:
            subprocess.run(["umount", "-l", str(d)])


def take_every_block(path):
    """Another program fills the filesystem: writes path until no block is
    left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"f" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    finally:
        os.close(fd)
    assert os.statvfs(path).f_bavail == 0


def test_full_disk(tmpfs_data, make_server):
    """data_dir on a full filesystem: new mail gets 452 4.3.1 (not 451),
    deleting mail still works even once another program took the last
    block, and afterwards mail fits again. 128 KiB messages stay under
    SMTP's spill threshold, so the only writer on the tmpfs is the store."""
    s = make_server()
    assert s.data == str(tmpfs_data)
    with SMTPConn(s) as c:
        c.ehlo()
        stored, r = fill(c, 128 << 10, 400)
        expect(r, "452 4.3.1", FULL)
        assert stored >= 100, stored  # most of the 24 MiB held mail
        # The store kept room for deletions; now nothing is left at all:
        # a deletion writes into the blocks the store allocated ahead.
        take_every_block(os.path.join(s.data, "filler"))
        expect(c.deliver(["alice@localhost"], message("again", 128 << 10)),
               "452 4.3.1", FULL)
        # One by one: the pages each frees are reusable only two commits
        # later, so each writes into the reserve.
        for _ in range(3):
            assert delete_all(s, limit=1) == (LOGGING_OUT, 1)
        quit_reply, deleted = delete_all(s)
        assert quit_reply == LOGGING_OUT
        assert deleted == stored - 3
        expect(c.deliver(["alice@localhost"], message("after", 128 << 10)),
               "250 2.0.0")
        # The room is reused, not just for one message (LMDB's allocator
        # leaves some freed pages too scattered for a 128 KiB message), and
        # the user can empty the mailbox again.
        again, r = fill(c, 128 << 10, 400)
        expect(r, "452 4.3.1", FULL)
        assert again >= stored * 3 // 4, (again, stored)
        quit_reply, deleted = delete_all(s)
        assert quit_reply == LOGGING_OUT
        assert deleted == again + 1
    assert "event=lmdb_error" not in s.log_text(), s.log_text()[-3000:]
