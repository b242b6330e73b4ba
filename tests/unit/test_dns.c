/* test_dns.c - the order mail exchangers are tried in (RFC 5321 5.1), and
 * international domain names as A-labels. */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/dns.h"

/* A target: host, preference, address ("::1" or "127.0.0.1"). */
static struct dns_target target(const char *host, unsigned pref, const char *ip)
{
	struct dns_target t;

	memset(&t, 0, sizeof t);
	strcpy(t.host, host);
	t.pref = pref;
	if (strchr(ip, ':') != NULL) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&t.addr;
		a->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, ip, &a->sin6_addr), 1);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&t.addr;
		a->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, ip, &a->sin_addr), 1);
	}
	return t;
}

static const char *ip_of(const struct dns_target *t)
{
	static char buf[64];

	if (t->addr.ss_family == AF_INET6)
		inet_ntop(AF_INET6,
			  &((const struct sockaddr_in6 *)&t->addr)->sin6_addr,
			  buf, sizeof buf);
	else
		inet_ntop(AF_INET,
			  &((const struct sockaddr_in *)&t->addr)->sin_addr,
			  buf, sizeof buf);
	return buf;
}

/* Lowest preference first; per host IPv6 before IPv4, each family in the
 * order the server gave. */
static void test_order_by_preference(void **state)
{
	struct dns_target t[] = {
	    target("mx3.example", 30, "192.0.2.3"),
	    target("mx1.example", 10, "192.0.2.1"),
	    target("mx1.example", 10, "192.0.2.11"),
	    target("mx1.example", 10, "2001:db8::1"),
	    target("mx2.example", 20, "2001:db8::2"),
	    target("mx2.example", 20, "192.0.2.2"),
	};
	static const char *want[] = {"2001:db8::1", "192.0.2.1", "192.0.2.11",
				     "2001:db8::2", "192.0.2.2", "192.0.2.3"};

	(void)state;
	for (uint64_t seed = 0; seed < 50; seed++) {
		struct dns_target u[6];
		memcpy(u, t, sizeof t);
		dns_order(u, 6, seed);
		for (int i = 0; i < 6; i++)
			assert_string_equal(ip_of(&u[i]), want[i]);
	}
}

/* Equal preferences: an order drawn from the seed (both orders come up),
 * each host's addresses staying together. */
static void test_equal_preferences_shuffled(void **state)
{
	int first_a = 0, first_b = 0;

	(void)state;
	for (uint64_t seed = 1; seed <= 200; seed++) {
		struct dns_target u[] = {
		    target("a.example", 10, "192.0.2.1"),
		    target("a.example", 10, "2001:db8::a"),
		    target("b.example", 10, "192.0.2.2"),
		    target("b.example", 10, "2001:db8::b"),
		    target("c.example", 5, "192.0.2.5"),
		};
		dns_order(u, 5, seed);
		assert_string_equal(u[0].host, "c.example");
		assert_string_equal(u[1].host, u[2].host);
		assert_string_equal(u[3].host, u[4].host);
		assert_int_equal(u[1].addr.ss_family, AF_INET6);
		assert_int_equal(u[3].addr.ss_family, AF_INET6);
		first_a += strcmp(u[1].host, "a.example") == 0;
		first_b += strcmp(u[1].host, "b.example") == 0;
	}
	/* A fair shuffle: each first in roughly half the draws. */
	assert_true(first_a > 50 && first_b > 50);
}

static void test_order_edges(void **state)
{
	struct dns_target one = target("only.example", 0, "192.0.2.9");

	(void)state;
	dns_order(NULL, 0, 1);
	dns_order(&one, 1, 1);
	assert_string_equal(ip_of(&one), "192.0.2.9");
}

static void test_a_labels(void **state)
{
	char out[DNS_NAME_MAX + 1];

	(void)state;
	assert_int_equal(dns_to_ascii("Example.ORG", out), 0);
	assert_string_equal(out, "example.org");
	assert_int_equal(dns_to_ascii("example.org.", out), 0);
	assert_string_equal(out, "example.org");
	assert_int_equal(dns_to_ascii("bücher.example", out), 0);
	assert_string_equal(out, "xn--bcher-kva.example");
	assert_int_equal(dns_to_ascii("BÜCHER.example", out), 0);
	assert_string_equal(out, "xn--bcher-kva.example");
	assert_int_equal(dns_to_ascii("例え.テスト", out), 0);
	assert_string_equal(out, "xn--r8jz45g.xn--zckzah");
	assert_int_equal(dns_to_ascii("", out), -1);
	assert_int_equal(dns_to_ascii("\xff\xfe.example", out), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_order_by_preference),
	    cmocka_unit_test(test_equal_preferences_shuffled),
	    cmocka_unit_test(test_order_edges),
	    cmocka_unit_test(test_a_labels),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
