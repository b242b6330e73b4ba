/*
 * dns.h - DNS lookups on the loop (c-ares): where mail for a domain goes
 * (its MX records, then each exchanger's addresses) and a host's own
 * addresses (a smarthost). Nothing here blocks: c-ares's sockets are
 * watched by the loop and its timeouts run on a loop timer.
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

/* --- pure parts, for the unit tests ------------------------------------- */

/* Puts targets in the order to try them: by preference, lowest first;
 * exchangers of equal preference in an order drawn from seed (a shuffle,
 * RFC 5321 5.1); each exchanger's addresses together, IPv6 before IPv4,
 * each family in the order the server gave. */
void dns_order(struct dns_target *t, size_t n, uint64_t seed);

/* The A-label form of a domain (libidn2; ASCII is only lower-cased) into
 * out (DNS_NAME_MAX + 1). 0, or -1 when it is no valid domain name. */
int dns_to_ascii(const char *domain, char *out);

#endif
