/* test_dns.c - the order mail exchangers are tried in (RFC 5321 5.1),
 * international domain names as A-labels, and answers of each type as
 * the text dns_lookup hands over (dns_records_parse), fed answers built
 * octet by octet as a server sends them. */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
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

/* --- answers on the wire ------------------------------------------------ */

/* A DNS message (RFC 1035 4.1) being written: a header, one question, the
 * answers added. */
struct msg {
	unsigned char b[16384];
	size_t n;
	unsigned answers;
};

static void put8(struct msg *m, unsigned v)
{
	assert_true(m->n < sizeof m->b);
	m->b[m->n++] = (unsigned char)v;
}

static void put16(struct msg *m, unsigned v)
{
	put8(m, v >> 8);
	put8(m, v & 0xff);
}

static void put_name(struct msg *m, const char *name)
{
	while (*name != '\0') {
		size_t len = strcspn(name, ".");
		put8(m, (unsigned)len);
		for (size_t i = 0; i < len; i++)
			put8(m, (unsigned char)name[i]);
		name += len;
		if (*name == '.')
			name++;
	}
	put8(m, 0);
}

/* The header (a response, recursion available, NOERROR) and question. */
static void msg_begin(struct msg *m, const char *qname, unsigned qtype)
{
	memset(m, 0, sizeof *m);
	put16(m, 0x1234);
	put16(m, 0x8180);
	put16(m, 1); /* QDCOUNT */
	put16(m, 0); /* ANCOUNT: msg_rr counts them */
	put16(m, 0);
	put16(m, 0);
	put_name(m, qname);
	put16(m, qtype);
	put16(m, 1); /* IN */
}

/* An answer's owner, type, class and TTL; returns where RDLENGTH goes,
 * for msg_rr_end once the data is written. */
static size_t msg_rr(struct msg *m, const char *owner, unsigned type)
{
	size_t at;

	put_name(m, owner);
	put16(m, type);
	put16(m, 1);
	put16(m, 0);
	put16(m, 300);
	at = m->n;
	put16(m, 0);
	m->answers++;
	m->b[6] = (unsigned char)(m->answers >> 8);
	m->b[7] = (unsigned char)(m->answers & 0xff);
	return at;
}

static void msg_rr_end(struct msg *m, size_t at)
{
	size_t len = m->n - at - 2;

	m->b[at] = (unsigned char)(len >> 8);
	m->b[at + 1] = (unsigned char)(len & 0xff);
}

static void msg_mx(struct msg *m, const char *owner, unsigned pref,
		   const char *host)
{
	size_t at = msg_rr(m, owner, 15);

	put16(m, pref);
	put_name(m, host);
	msg_rr_end(m, at);
}

/* One TXT record of nstr strings (each with its length: any octet). */
static void msg_txt(struct msg *m, const char *owner, size_t nstr,
		    const char *const *str, const size_t *len)
{
	size_t at = msg_rr(m, owner, 16);

	for (size_t i = 0; i < nstr; i++) {
		put8(m, (unsigned)len[i]);
		for (size_t j = 0; j < len[i]; j++)
			put8(m, (unsigned char)str[i][j]);
	}
	msg_rr_end(m, at);
}

static void msg_srv(struct msg *m, const char *owner, unsigned prio,
		    unsigned weight, unsigned port, const char *target)
{
	size_t at = msg_rr(m, owner, 33);

	put16(m, prio);
	put16(m, weight);
	put16(m, port);
	put_name(m, target);
	msg_rr_end(m, at);
}

static void msg_cname(struct msg *m, const char *owner, const char *target)
{
	size_t at = msg_rr(m, owner, 5);

	put_name(m, target);
	msg_rr_end(m, at);
}

static void msg_addr(struct msg *m, const char *owner, const char *ip)
{
	unsigned char a[16];
	bool v6 = strchr(ip, ':') != NULL;
	size_t at = msg_rr(m, owner, v6 ? 28 : 1);

	assert_int_equal(inet_pton(v6 ? AF_INET6 : AF_INET, ip, a), 1);
	for (size_t i = 0; i < (v6 ? 16u : 4u); i++)
		put8(m, a[i]);
	msg_rr_end(m, at);
}

static struct dns_records rec; /* 8 KiB: not on the stack */

static void parse(enum dns_rr type, const struct msg *m)
{
	memset(&rec, 0xa5, sizeof rec); /* nothing left from before counts */
	dns_records_parse(type, m->b, (int)m->n, &rec);
}

/* Two exchangers, the server's case and order: lower-cased, sorted. */
static void test_records_mx(void **state)
{
	static struct msg m;

	(void)state;
	msg_begin(&m, "example.org", 15);
	msg_mx(&m, "example.org", 20, "Backup.Example.ORG");
	msg_mx(&m, "example.org", 10, "mx.example.org");
	parse(DNS_RR_MX, &m);
	assert_int_equal(rec.status, DNS_ANSWER_OK);
	assert_null(rec.error);
	assert_false(rec.cut);
	assert_int_equal(rec.n, 2);
	assert_string_equal(rec.rr[0], "10 mx.example.org.");
	assert_string_equal(rec.rr[1], "20 backup.example.org.");

	/* RFC 7505: the null MX, whose exchanger is the root. */
	msg_begin(&m, "example.org", 15);
	msg_mx(&m, "example.org", 0, "");
	parse(DNS_RR_MX, &m);
	assert_int_equal(rec.n, 1);
	assert_string_equal(rec.rr[0], "0 .");
	assert_string_equal(dns_rr_name(DNS_RR_MX), "MX");
}

/* A record's strings are joined; '\' and octets that are no printable
 * ASCII are escaped, so any record is text JSON can carry. */
static void test_records_txt(void **state)
{
	static struct msg m;
	const char *spf[] = {"v=spf1 mx ", "-all"};
	const size_t spf_len[] = {10, 4};
	const char *odd[] = {"a\\b\x01\xc3\xa9", "", "\"q\""};
	const size_t odd_len[] = {6, 0, 3};
	const char *other[] = {"google-site-verification=x"};
	const size_t other_len[] = {26};

	(void)state;
	msg_begin(&m, "example.org", 16);
	msg_txt(&m, "example.org", 2, spf, spf_len);
	msg_txt(&m, "example.org", 3, odd, odd_len);
	msg_txt(&m, "example.org", 1, other, other_len);
	parse(DNS_RR_TXT, &m);
	assert_int_equal(rec.status, DNS_ANSWER_OK);
	assert_int_equal(rec.n, 3);
	assert_string_equal(rec.rr[0], "a\\\\b\\001\\195\\169\"q\"");
	assert_string_equal(rec.rr[1], "google-site-verification=x");
	assert_string_equal(rec.rr[2], "v=spf1 mx -all");
}

/* CNAME: where the alias leads; a name with no alias is "no such
 * record", as an empty answer of any type is. */
static void test_records_cname(void **state)
{
	static struct msg m;

	(void)state;
	msg_begin(&m, "autoconfig.example.org", 5);
	msg_cname(&m, "autoconfig.example.org", "MX.Example.org");
	parse(DNS_RR_CNAME, &m);
	assert_int_equal(rec.status, DNS_ANSWER_OK);
	assert_int_equal(rec.n, 1);
	assert_string_equal(rec.rr[0], "mx.example.org.");

	msg_begin(&m, "autoconfig.example.org", 5);
	parse(DNS_RR_CNAME, &m);
	assert_int_equal(rec.status, DNS_ANSWER_NODATA);
	assert_string_equal(rec.error, "no such record");
	assert_int_equal(rec.n, 0);

	msg_begin(&m, "example.org", 15);
	parse(DNS_RR_MX, &m);
	assert_int_equal(rec.status, DNS_ANSWER_NODATA);
}

static void test_records_srv(void **state)
{
	static struct msg m;

	(void)state;
	msg_begin(&m, "_submission._tcp.example.org", 33);
	msg_srv(&m, "_submission._tcp.example.org", 0, 1, 587,
		"mx.example.org");
	msg_srv(&m, "_submission._tcp.example.org", 0, 0, 0, "");
	parse(DNS_RR_SRV, &m);
	assert_int_equal(rec.status, DNS_ANSWER_OK);
	assert_int_equal(rec.n, 2);
	assert_string_equal(rec.rr[0], "0 0 0 .");
	assert_string_equal(rec.rr[1], "0 1 587 mx.example.org.");
}

/* Addresses; an A question answered through an alias gives the
 * addresses where it leads. */
static void test_records_addresses(void **state)
{
	static struct msg m;

	(void)state;
	msg_begin(&m, "mx.example.org", 1);
	msg_cname(&m, "mx.example.org", "host.example.org");
	msg_addr(&m, "host.example.org", "192.0.2.10");
	msg_addr(&m, "host.example.org", "192.0.2.9");
	parse(DNS_RR_A, &m);
	assert_int_equal(rec.status, DNS_ANSWER_OK);
	assert_int_equal(rec.n, 2);
	assert_string_equal(rec.rr[0], "192.0.2.10");
	assert_string_equal(rec.rr[1], "192.0.2.9");

	msg_begin(&m, "mx.example.org", 28);
	msg_addr(&m, "mx.example.org", "2001:db8:0:0::1");
	parse(DNS_RR_AAAA, &m);
	assert_int_equal(rec.n, 1);
	assert_string_equal(rec.rr[0], "2001:db8::1");
}

/* Past DNS_RECORDS_MAX records or DNS_RECORDS_TEXT octets, records are
 * left out and the answer says so; what is kept is whole. */
static void test_records_cut(void **state)
{
	static struct msg m;
	static char half[2][150];
	const char *s[] = {half[0], half[1]};
	const size_t len[] = {150, 150};
	char ip[32];

	(void)state;
	msg_begin(&m, "many.example.org", 1);
	for (int i = 0; i < DNS_RECORDS_MAX + 8; i++) {
		snprintf(ip, sizeof ip, "192.0.2.%d", i);
		msg_addr(&m, "many.example.org", ip);
	}
	parse(DNS_RR_A, &m);
	assert_int_equal(rec.status, DNS_ANSWER_OK);
	assert_int_equal(rec.n, DNS_RECORDS_MAX);

	/* 30 TXT records of 300 octets (two strings each): 27 fit in 8 KiB
	 * with their NULs. */
	memset(half, 'x', sizeof half);
	msg_begin(&m, "example.org", 16);
	for (int i = 0; i < 30; i++) {
		half[0][0] = (char)('0' + i / 10);
		half[0][1] = (char)('0' + i % 10);
		msg_txt(&m, "example.org", 2, s, len);
	}
	parse(DNS_RR_TXT, &m);
	assert_int_equal(rec.status, DNS_ANSWER_OK);
	assert_true(rec.cut);
	assert_int_equal(rec.n, DNS_RECORDS_TEXT / 301);
	for (size_t i = 0; i < rec.n; i++) {
		assert_int_equal(strlen(rec.rr[i]), 300);
		assert_int_equal(rec.rr[i][0], '0' + (int)i / 10);
		assert_int_equal(rec.rr[i][1], '0' + (int)i % 10);
	}
}

/* A message cut short anywhere is no answer to go by. */
static void test_records_malformed(void **state)
{
	static struct msg m;

	(void)state;
	msg_begin(&m, "example.org", 15);
	msg_mx(&m, "example.org", 10, "mx.example.org");
	for (size_t cut = 0; cut < m.n; cut++) {
		memset(&rec, 0xa5, sizeof rec);
		dns_records_parse(DNS_RR_MX, m.b, (int)cut, &rec);
		assert_int_equal(rec.status, DNS_ANSWER_TEMP);
		assert_string_equal(rec.error, "malformed DNS answer");
		assert_int_equal(rec.n, 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_order_by_preference),
	    cmocka_unit_test(test_equal_preferences_shuffled),
	    cmocka_unit_test(test_order_edges),
	    cmocka_unit_test(test_a_labels),
	    cmocka_unit_test(test_records_mx),
	    cmocka_unit_test(test_records_txt),
	    cmocka_unit_test(test_records_cname),
	    cmocka_unit_test(test_records_srv),
	    cmocka_unit_test(test_records_addresses),
	    cmocka_unit_test(test_records_cut),
	    cmocka_unit_test(test_records_malformed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
