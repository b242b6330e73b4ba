/* test_netaddr.c - client addresses: unmapping, /64 grouping, CIDR. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/netaddr.h"

static struct netaddr addr(const char *s)
{
	struct netaddr a;

	assert_int_equal(netaddr_parse(&a, s), 0);
	return a;
}

static void test_unmapped(void **state)
{
	struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};
	struct netaddr a, b = addr("127.0.0.2");
	char text[NETADDR_TEXT_MAX];

	(void)state;
	inet_pton(AF_INET6, "::ffff:127.0.0.2", &s6.sin6_addr);
	assert_int_equal(netaddr_from_sockaddr(&a, (struct sockaddr *)&s6), 0);
	assert_int_equal(a.family, AF_INET);
	assert_true(netaddr_equal(&a, &b));
	assert_int_equal(netaddr_hash(&a), netaddr_hash(&b));
	netaddr_format(&a, text, sizeof text);
	assert_string_equal(text, "127.0.0.2");
	/* Two IPv4 clients stay two clients (the old bug: one bucket). */
	b = addr("127.0.0.1");
	assert_false(netaddr_equal(&a, &b));
}

static void test_client_per_64(void **state)
{
	struct netaddr a = addr("2001:db8:1:2:aaaa::1");
	struct netaddr b = addr("2001:db8:1:2:bbbb::2");
	struct netaddr c = addr("2001:db8:1:3::1");
	struct netaddr ca = netaddr_client(&a), cb = netaddr_client(&b);
	struct netaddr cc = netaddr_client(&c), v4 = addr("10.1.2.3");
	struct netaddr cv4 = netaddr_client(&v4);

	(void)state;
	assert_true(netaddr_equal(&ca, &cb));
	assert_false(netaddr_equal(&ca, &cc));
	assert_true(netaddr_equal(&cv4, &v4)); /* IPv4: the address itself */
}

static void test_cidr(void **state)
{
	struct netaddr net, a;
	unsigned bits;

	(void)state;
	assert_int_equal(netaddr_parse_cidr("192.168.1.0/24", &net, &bits), 0);
	assert_int_equal(bits, 24);
	a = addr("192.168.1.77");
	assert_true(netaddr_in(&a, &net, bits));
	a = addr("192.168.2.1");
	assert_false(netaddr_in(&a, &net, bits));
	a = addr("::ffff:192.168.1.5"); /* v4-mapped is IPv4 */
	assert_true(netaddr_in(&a, &net, bits));
	assert_int_equal(netaddr_parse_cidr("::1/128", &net, &bits), 0);
	a = addr("::1");
	assert_true(netaddr_in(&a, &net, bits));
	a = addr("127.0.0.1"); /* families never mix */
	assert_false(netaddr_in(&a, &net, bits));
	assert_int_equal(netaddr_parse_cidr("10.0.0.1", &net, &bits), 0);
	assert_int_equal(bits, 32);
	assert_int_equal(netaddr_parse_cidr("::ffff:10.0.0.0/104", &net, &bits),
			 0);
	assert_int_equal(net.family, AF_INET);
	assert_int_equal(bits, 8);
	assert_int_equal(netaddr_parse_cidr("0.0.0.0/0", &net, &bits), 0);
	a = addr("8.8.8.8");
	assert_true(netaddr_in(&a, &net, bits));
	/* Host bits set, too long a prefix, junk: refused. */
	assert_int_equal(netaddr_parse_cidr("10.0.0.1/8", &net, &bits), -1);
	assert_int_equal(netaddr_parse_cidr("10.0.0.0/33", &net, &bits), -1);
	assert_int_equal(netaddr_parse_cidr("::/129", &net, &bits), -1);
	assert_int_equal(netaddr_parse_cidr("::ffff:10.0.0.0/95", &net, &bits),
			 -1);
	assert_int_equal(netaddr_parse_cidr("10.0.0.0/", &net, &bits), -1);
	assert_int_equal(netaddr_parse_cidr("10.0.0.0/x", &net, &bits), -1);
	assert_int_equal(netaddr_parse_cidr("host.example/8", &net, &bits), -1);
	assert_int_equal(netaddr_parse_cidr("", &net, &bits), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_unmapped),
	    cmocka_unit_test(test_client_per_64),
	    cmocka_unit_test(test_cidr),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
