/*
 * dns.h - DNS lookups on the loop (c-ares): where mail for a domain goes
 * (its MX records, then each exchanger's addresses), a host's own
 * addresses (a smarthost), and the records of one name and type as text
 * (what the web console's DNS page compares with what to publish).
 * Nothing here blocks: c-ares's sockets are watched by the loop and its
 * timeouts run on a loop timer.
 *
 * A domain's mail exchangers (RFC 5321 5.1):
 *   - its MX records, lowest preference first (equal preferences in a
 *     random order, to share the load), each exchanger's IPv6 and IPv4
 *     addresses (AAAA, then A), all of them to be tried in that order;
 *   - no MX record (the name exists, with no MX): the domain itself,
 *     the "implicit MX";
 *   - a null MX (RFC 7505: one MX record whose exchanger is ".") or a
 *     domain that does not exist (NXDOMAIN): mail cannot go there;
 *   - a timeout or a server failure: try again later.
 * An international domain name is looked up as its A-label (libidn2).
 *
 * Everything here runs on the loop thread; results are handed to a
 * callback, from the loop, never from inside the call that asked.
 */
#ifndef PILLARBOX_DNS_H
#define PILLARBOX_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define DNS_NAME_MAX 255 /* RFC 1035 2.3.4 */
/* Exchangers looked up per domain, and addresses kept: Postfix tries 5
 * addresses per delivery; a few more cover a domain whose first hosts
 * each have IPv6 and IPv4. */
#define DNS_MX_MAX    10
#define DNS_ADDRS_MAX 20

enum dns_status {
	DNS_OK,	      /* at least one address */
	DNS_NXDOMAIN, /* the domain does not exist: permanent */
	DNS_NULL_MX,  /* RFC 7505: the domain takes no mail: permanent */
	DNS_NO_ADDR,  /* exchangers, but none has an address: permanent */
	DNS_TEMP,     /* timeout, SERVFAIL, refused: try again later */
};

/* One address to try, with the exchanger it belongs to. */
struct dns_target {
	char host[DNS_NAME_MAX + 1];  /* the exchanger (A-label) */
	unsigned pref;		      /* its MX preference; 0 when implicit */
	struct sockaddr_storage addr; /* port 0: the caller sets it */
};

struct dns_result {
	enum dns_status status;
	const char *error; /* what went wrong, for a log line or a bounce:
			    * "NXDOMAIN", "null MX", "SERVFAIL", ... */
	size_t n;	   /* targets, in the order to try them */
	struct dns_target t[DNS_ADDRS_MAX];
};

struct dns_query;

/* Starts c-ares on the loop (loop_init first). resolver: "ip:port" of the
 * DNS server to ask, or "" for the system's (resolv.conf). 0, or -1 with
 * the reason logged (event=dns-error). */
int dns_init(const char *resolver);

/* Cancels what is pending (each callback runs, with DNS_TEMP) and closes
 * every handle; the loop must run afterwards for their close callbacks.
 * Safe without dns_init. */
void dns_cleanup(void);

/* Where mail for domain goes (see above). cb(r, arg) runs once, later, on
 * the loop; r is valid during the call. The query is freed after cb. */
struct dns_query *dns_mx(const char *domain,
			 void (*cb)(const struct dns_result *r, void *arg),
			 void *arg);

/* A host's own addresses (AAAA, then A), as one target list with pref 0:
 * a smarthost. NXDOMAIN is permanent, as for dns_mx. */
struct dns_query *dns_host(const char *host,
			   void (*cb)(const struct dns_result *r, void *arg),
			   void *arg);

/* Cancels a query: its callback never runs. */
void dns_cancel(struct dns_query *q);

/* --- one name, one type ------------------------------------------------- */

enum dns_rr {
	DNS_RR_A,
	DNS_RR_AAAA,
	DNS_RR_MX,
	DNS_RR_TXT,
	DNS_RR_CNAME,
	DNS_RR_SRV
};

/* Records kept of one answer, and room for their text: a domain's apex
 * holds a few TXT records (SPF, site verifications), each well under
 * this. Records past either bound are left out (cut). */
#define DNS_RECORDS_MAX	 32
#define DNS_RECORDS_TEXT 8192

enum dns_answer {
	DNS_ANSWER_OK,	     /* records of that type: rr[0..n) */
	DNS_ANSWER_NODATA,   /* the name exists, without a record of it */
	DNS_ANSWER_NXDOMAIN, /* the name does not exist (or is no name) */
	DNS_ANSWER_TEMP,     /* no answer to go by: timeout, SERVFAIL,
			      * refused, a malformed answer */
};

/* What a resolver answered for one name and type, each record as text in
 * one canonical form, sorted (strcmp), so that equal sets compare equal:
 *   A, AAAA  the address as inet_ntop writes it: "192.0.2.1", "2001:db8::1"
 *   MX       "PREF HOST."            "10 mx.example.org."; a null MX "0 ."
 *   TXT      the record's strings joined with nothing between them (RFC
 *            7208 3.3); a '\' is written "\\", any octet that is no
 *            printable ASCII "\DDD" (decimal, as in a zone file)
 *   CNAME    "TARGET."               the name the alias leads to
 *   SRV      "PRIO WEIGHT PORT TARGET."  "0 1 587 mx.example.org."; "0 0 0 ."
 * Names are lower-case, with their trailing dot (c-ares has escaped
 * what is no printable ASCII in them). */
struct dns_records {
	enum dns_answer status;
	const char *error; /* why not OK, static text: "no such record",
			    * "NXDOMAIN (no such name)", "SERVFAIL", "DNS
			    * timeout", "malformed DNS answer", ... */
	size_t n;
	bool cut; /* records were left out (over one of the bounds) */
	const char *rr[DNS_RECORDS_MAX]; /* into text */
	char text[DNS_RECORDS_TEXT];
};

struct dns_lookup;

/* Asks for the records of type at name (an A-label or a U-label, as
 * dns_mx). cb(r, arg) runs exactly once, later, on the loop (with
 * DNS_ANSWER_TEMP if dns_cleanup comes first); r and its
 * strings are valid during the call. c-ares's retries bound the wait
 * (3 tries per server, the timeout doubling from 2 s: 14 s with one
 * server); a caller that wants its answer sooner stops waiting on its own
 * timer and lets the lookup end unseen. The lookup is freed after cb. */
struct dns_lookup *
dns_lookup(const char *name, enum dns_rr type,
	   void (*cb)(const struct dns_records *r, void *arg), void *arg);

/* The type's name: "MX". */
const char *dns_rr_name(enum dns_rr type);

/* --- pure parts, for the unit tests ------------------------------------- */

/* Puts targets in the order to try them: by preference, lowest first;
 * exchangers of equal preference in an order drawn from seed (a shuffle,
 * RFC 5321 5.1); each exchanger's addresses together, IPv6 before IPv4,
 * each family in the order the server gave. */
void dns_order(struct dns_target *t, size_t n, uint64_t seed);

/* An answer (a c-ares callback's buffer, the query's status ARES_SUCCESS)
 * to the records of type, into r (see struct dns_records). */
void dns_records_parse(enum dns_rr type, const unsigned char *abuf, int alen,
		       struct dns_records *r);

/* The A-label form of a domain (libidn2; ASCII is only lower-cased) into
 * out (DNS_NAME_MAX + 1). 0, or -1 when it is no valid domain name. */
int dns_to_ascii(const char *domain, char *out);

#endif
