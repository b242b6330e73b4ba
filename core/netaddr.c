/* netaddr.c - client addresses, normalised once. see netaddr.h */
#include "core/netaddr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t netaddr_len(const struct netaddr *a)
{
	return a->family == AF_INET ? 4 : 16;
}

int netaddr_from_sockaddr(struct netaddr *a, const struct sockaddr *sa)
{
	static const unsigned char mapped[12] = {[10] = 0xff, [11] = 0xff};

	memset(a, 0, sizeof *a);
	if (sa->sa_family == AF_INET) {
		a->family = AF_INET;
		memcpy(a->b, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return 0;
	}
	if (sa->sa_family != AF_INET6)
		return -1;
	const unsigned char *v6 =
	    ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
	if (memcmp(v6, mapped, 12) == 0) {
		a->family = AF_INET;
		memcpy(a->b, v6 + 12, 4);
	} else {
		a->family = AF_INET6;
		memcpy(a->b, v6, 16);
	}
	return 0;
}

int netaddr_parse(struct netaddr *a, const char *s)
{
	struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};
	struct sockaddr_in s4 = {.sin_family = AF_INET};

	if (inet_pton(AF_INET, s, &s4.sin_addr) == 1)
		return netaddr_from_sockaddr(a, (struct sockaddr *)&s4);
	if (inet_pton(AF_INET6, s, &s6.sin6_addr) == 1)
		return netaddr_from_sockaddr(a, (struct sockaddr *)&s6);
	return -1;
}

/* Zeroes the bits of a past the first bits. */
static void netaddr_mask(struct netaddr *a, unsigned bits)
{
	for (size_t i = 0; i < 16; i++) {
		unsigned keep = bits >= 8 * (i + 1) ? 8
				: bits > 8 * i	    ? bits - 8 * (unsigned)i
						    : 0;
		a->b[i] &= (unsigned char)(0xff00u >> keep);
	}
}

int netaddr_parse_cidr(const char *s, struct netaddr *net, unsigned *bits)
{
	char host[NETADDR_TEXT_MAX + 1];
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	struct netaddr masked;
	char *end;
	long b;

	if (n == 0 || n >= sizeof host)
		return -1;
	memcpy(host, s, n);
	host[n] = '\0';
	if (netaddr_parse(net, host) < 0)
		return -1;
	/* A v4-mapped network is written with IPv6 prefix lengths. */
	b = strchr(host, ':') != NULL ? 128 : (long)netaddr_len(net) * 8;
	if (slash != NULL) {
		long max = b;
		if (slash[1] < '0' || slash[1] > '9')
			return -1;
		b = strtol(slash + 1, &end, 10);
		if (*end != '\0' || b > max)
			return -1;
	}
	/* "::ffff:10.0.0.0/104" is the IPv4 10.0.0.0/8 */
	if (net->family == AF_INET && strchr(host, ':') != NULL) {
		if (b < 96)
			return -1;
		b -= 96;
	}
	masked = *net;
	netaddr_mask(&masked, (unsigned)b);
	if (!netaddr_equal(&masked, net))
		return -1; /* host bits set: a typo more often than not */
	*bits = (unsigned)b;
	return 0;
}

bool netaddr_in(const struct netaddr *a, const struct netaddr *net,
		unsigned bits)
{
	struct netaddr m = *a;

	if (a->family != net->family)
		return false;
	netaddr_mask(&m, bits);
	return netaddr_equal(&m, net);
}

struct netaddr netaddr_client(const struct netaddr *a)
{
	struct netaddr c = *a;

	if (c.family == AF_INET6)
		netaddr_mask(&c, NETADDR_V6_CLIENT_BITS);
	return c;
}

bool netaddr_equal(const struct netaddr *a, const struct netaddr *b)
{
	return a->family == b->family &&
	       memcmp(a->b, b->b, netaddr_len(a)) == 0;
}

uint32_t netaddr_hash(const struct netaddr *a)
{
	uint32_t h = 2166136261u; /* FNV-1a */

	for (size_t i = 0; i < netaddr_len(a); i++)
		h = (h ^ a->b[i]) * 16777619u;
	return h;
}

void netaddr_format(const struct netaddr *a, char *buf, size_t n)
{
	if (inet_ntop(a->family, a->b, buf, (socklen_t)n) == NULL)
		snprintf(buf, n, "?");
}
