"""A DNS server on loopback that answers from zone-file lines (dnslib),
for the web console's DNS check: a name with records gets those of the
type asked (none of it: an empty NOERROR answer, "no such record"), a
name without any gets NXDOMAIN, a name in servfail gets SERVFAIL, and a
question for a name in silent is dropped unanswered.

Debian package: python3-dnslib."""
import threading

from dnslib import QTYPE, RCODE, RR, DNSError
from dnslib.server import BaseResolver

from mxutil import LoopbackDNS


class ZoneResolver(BaseResolver):
    def __init__(self):
        self.rrs = []
        self.servfail = set()
        self.silent = set()
        self.queries = []              # (name, type), as they came
        self.lock = threading.Lock()
        self.asked = threading.Condition(self.lock)

    def resolve(self, request, handler):
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        with self.lock:
            self.queries.append((name, qtype))
            self.asked.notify_all()
            rrs = [rr for rr in self.rrs
                   if str(rr.rname).rstrip(".").lower() == name]
        if name in self.silent:
            raise DNSError("dropped: %s is silent" % name)
        reply = request.reply()
        if name in self.servfail:
            reply.header.rcode = RCODE.SERVFAIL
        elif not rrs:
            reply.header.rcode = RCODE.NXDOMAIN
        for rr in rrs:
            if rr.rtype == request.q.qtype:
                reply.add_answer(rr)
        return reply


class ZoneServer(LoopbackDNS):
    """Records from zone-file lines."""

    def __init__(self):
        # Nothing printed, a dropped question included.
        super().__init__(ZoneResolver(), log="-request,-reply,-truncated,"
                         "-recv,-send,-data,-error")

    def zone(self, text):
        """Adds the records of zone-file lines ("name TTL IN TYPE data")."""
        with self.resolver.lock:
            self.resolver.rrs += RR.fromZone(text)

    def drop(self, name, rtype):
        """Removes the records of rtype ("TXT") at name."""
        name = name.rstrip(".").lower()
        with self.resolver.lock:
            self.resolver.rrs = [
                rr for rr in self.resolver.rrs
                if not (str(rr.rname).rstrip(".").lower() == name and
                        QTYPE[rr.rtype] == rtype)]

    def wait_asked(self, name, count=1, timeout=15):
        """Returns once name has been asked count times (any type)."""
        r = self.resolver
        with r.lock:
            ok = r.asked.wait_for(
                lambda: sum(1 for n, _ in r.queries if n == name) >= count,
                timeout)
        assert ok, "%s never asked: %s" % (name, r.queries)
