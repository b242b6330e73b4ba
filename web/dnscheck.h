/*
 * dnscheck.h - the console's DNS page: the records each domain needs for
 * this server's hostname and ports (GET /api/dns), and whether the
 * resolver returns them now (GET /api/dns/check?domain=D). The routes
 * are api_dns and api_dns_check (web_priv.h); these are the parts they
 * share that touch no connection, for the unit tests.
 */
#ifndef PILLARBOX_WEB_DNSCHECK_H
#define PILLARBOX_WEB_DNSCHECK_H

#include <jansson.h>
#include <stddef.h>

#include "core/dns.h"

#define WEB_DNS_RECORDS 8 /* records a domain needs: web_dns_records */

/* One record to publish. */
struct web_dns_rec {
	enum dns_rr type;
	char name[DNS_NAME_MAX + 2]; /* with its trailing dot */
	char value[DNS_NAME_MAX + 80];
	/* TXT: the version tag that makes a record of this kind
	 * ("v=spf1", "v=DMARC1"): the name's other TXT records are none of
	 * our business. NULL: every record of the type counts. */
	const char *tag;
	const char *why; /* for the page */
};

/* The records domain needs, in the page's order (MX, SPF, DMARC, the
 * autoconfig and autodiscover aliases, the RFC 6186 SRV records), for
 * mail to reach host and for mail programs to find it: submission and
 * pop3 are the ports they use (0: that listener is off). Fills
 * out[WEB_DNS_RECORDS]; returns how many. */
size_t web_dns_records(const char *domain, const char *host,
		       unsigned submission, unsigned pop3,
		       struct web_dns_rec *out);

/* What the resolver's answer (got) says about one record to publish
 * (want), as the check's JSON object, a new reference:
 *   {"type", "name", "value", "status", "found": [...], "error"}
 * status is
 *   "ok"       the records found are exactly the one to publish (names
 *              compared without regard to case);
 *   "differs"  records of the kind are there, others or more (found
 *              lists them: with a tag, those that carry it, so an SPF
 *              record an admin wrote is "differs", not "missing");
 *   "missing"  no such name, no record of the type, or (with a tag)
 *              none that carries it: error says which;
 *   "unknown"  no answer to go by (timeout, SERVFAIL): error says why.
 * found is empty but for "ok" and "differs"; error is null for "ok",
 * and for "differs" unless records were left out of the answer. */
json_t *web_dns_verdict(const struct web_dns_rec *want,
			const struct dns_records *got);

/* The same object for a record whose lookup gave no verdict: "unknown"
 * with error. */
json_t *web_dns_unknown(const struct web_dns_rec *want, const char *error);

#endif
