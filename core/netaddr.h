/*
 * netaddr.h - a client's IP address as policy sees it. Every limit,
 * throttle and relay rule keys on these, made once per connection:
 *   - an IPv4-mapped IPv6 address (::ffff:a.b.c.d, what a dual-stack "[::]"
 *     listener reports for IPv4 clients) is the IPv4 address;
 *   - an IPv6 client is one /64 (RFC 6177: a site gets at least a /64, so
 *     per-address limits would be trivial to dodge).
 */
#ifndef PILLARBOX_NETADDR_H
#define PILLARBOX_NETADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define NETADDR_TEXT_MAX       46 /* INET6_ADDRSTRLEN */
#define NETADDR_V6_CLIENT_BITS 64 /* one IPv6 client is one /64 */

struct netaddr {
	int family;	     /* AF_INET or AF_INET6 */
	unsigned char b[16]; /* 4 octets for AF_INET, network order */
};

/* Fills a from sa (AF_INET or AF_INET6), unmapping v4-mapped addresses.
 * Returns 0, or -1 for another family. */
int netaddr_from_sockaddr(struct netaddr *a, const struct sockaddr *sa);

/* Parses "1.2.3.4" or "::1" (no brackets). 0 or -1. */
int netaddr_parse(struct netaddr *a, const char *s);

/* Parses "net/bits" (or a bare address: all bits) into *net, *bits.
 * Host bits beyond the prefix must be zero. 0 or -1. */
int netaddr_parse_cidr(const char *s, struct netaddr *net, unsigned *bits);

/* True when a lies in net/bits (same family). */
bool netaddr_in(const struct netaddr *a, const struct netaddr *net,
		unsigned bits);

/* The client a belongs to: itself for IPv4, its /64 for IPv6. */
struct netaddr netaddr_client(const struct netaddr *a);

bool netaddr_equal(const struct netaddr *a, const struct netaddr *b);
uint32_t netaddr_hash(const struct netaddr *a);

/* Writes a as text ("127.0.0.1", "::1") into buf (NETADDR_TEXT_MAX). */
void netaddr_format(const struct netaddr *a, char *buf, size_t n);

#endif
