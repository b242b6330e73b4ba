/* test_addr.c - SMTP path parser and formatter (smtp/addr.c).
 * Every input is copied to a heap buffer of exactly its length, so that
 * ASan catches any read past the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp/addr.h"

/* A literal and its length, which may include NUL bytes. */
#define S(lit) lit, sizeof(lit) - 1

struct valid_case {
	const char *s;
	size_t n;
	bool allow_null, utf8;
	size_t used; /* 0: all n bytes */
	const char *local, *domain, *formatted;
};

static const struct valid_case valid[] = {
    {S("<a@b>"), false, false, 0, "a", "b", "a@b"},
    {S("<a@b> SIZE=10"), false, false, 5, "a", "b", "a@b"},
    {S("<a@b>>"), false, false, 5, "a", "b", "a@b"},
    {S("<>"), true, false, 0, "", "", ""},
    {S("<> SIZE=10"), true, true, 2, "", "", ""},
    {S("<postmaster@example.org>"), false, false, 0, "postmaster",
     "example.org", "postmaster@example.org"},
    {S("<User.Name+tag@Example.COM>"), false, false, 0, "User.Name+tag",
     "example.com", "user.name+tag@example.com"},
    /* Trailing dot and case normalised. */
    {S("<A@EXAMPLE.org.>"), false, false, 0, "A", "example.org",
     "a@example.org"},
    {S("<!#$%&'*+-/=?^_`{|}~@x>"), false, false, 0, "!#$%&'*+-/=?^_`{|}~", "x",
     "!#$%&'*+-/=?^_`{|}~@x"},
    {S("<a@1.2.3.4>"), false, false, 0, "a", "1.2.3.4", "a@1.2.3.4"},
    {S("<a@a-b.c--d.x9>"), false, false, 0, "a", "a-b.c--d.x9",
     "a@a-b.c--d.x9"},
    /* Relay tricks that are valid syntax; policy refuses them later. */
    {S("<user%remote@local>"), false, false, 0, "user%remote", "local",
     "user%remote@local"},
    {S("<user!remote@local>"), false, false, 0, "user!remote", "local",
     "user!remote@local"},
    {S("<\"user@remote\"@local>"), false, false, 0, "user@remote", "local",
     "\"user@remote\"@local"},
    /* Address literals, in their one spelling (RFC 5321 4.1.3): the
     * caller tells its own address from a relay attempt. */
    {S("<user@[1.2.3.4]>"), false, false, 0, "user", "[1.2.3.4]",
     "user@[1.2.3.4]"},
    {S("<U@[IPv6:::1]>"), false, false, 0, "U", "[IPv6:::1]", "u@[IPv6:::1]"},
    {S("<u@[ipv6:2001:DB8:0:0::1]>"), false, false, 0, "u",
     "[IPv6:2001:db8::1]", "u@[IPv6:2001:db8::1]"},
    {S("<u@[IPv6:::ffff:127.0.0.1]>"), false, false, 0, "u",
     "[IPv6:::ffff:127.0.0.1]", "u@[IPv6:::ffff:127.0.0.1]"},
    /* Quoted strings: stored unquoted, re-quoted only when needed. */
    {S("<\"abc\"@x>"), false, false, 0, "abc", "x", "abc@x"},
    {S("<\"\\a\\b\"@x>"), false, false, 0, "ab", "x", "ab@x"},
    {S("<\"\"@x>"), false, false, 0, "", "x", "\"\"@x"},
    {S("<\"a b\"@x>"), false, false, 0, "a b", "x", "\"a b\"@x"},
    {S("<\".a\"@x>"), false, false, 0, ".a", "x", "\".a\"@x"},
    {S("<\"a.\"@x>"), false, false, 0, "a.", "x", "\"a.\"@x"},
    {S("<\"a..b\"@x>"), false, false, 0, "a..b", "x", "\"a..b\"@x"},
    {S("<\"a\\\"b\\\\c\"@x>"), false, false, 0, "a\"b\\c", "x",
     "\"a\\\"b\\\\c\"@x"},
    {S("<\"a\\ b\"@x>"), false, false, 0, "a b", "x", "\"a b\"@x"},
    {S("<\"Q<>@,;:\"@X>"), false, false, 0, "Q<>@,;:", "x", "\"q<>@,;:\"@x"},
    /* SMTPUTF8 (RFC 6531): UTF-8 kept as sent, ASCII lower-cased. */
    {S("<\xce\xb4\xce\xbf\xce\xba@\xcf\x80\xce\xb1.\xce\xb4\xce\xbf>"), false,
     true, 0, "\xce\xb4\xce\xbf\xce\xba", "\xcf\x80\xce\xb1.\xce\xb4\xce\xbf",
     "\xce\xb4\xce\xbf\xce\xba@\xcf\x80\xce\xb1.\xce\xb4\xce\xbf"},
    {S("<J\xc3\xb6rg@M\xc3\xbcNCHEN.De>"), false, true, 0, "J\xc3\xb6rg",
     "m\xc3\xbcnchen.de", "j\xc3\xb6rg@m\xc3\xbcnchen.de"},
    {S("<\xf0\x9f\x98\x80.\xe2\x82\xac@x\xef\xbf\xbd>"), false, true, 0,
     "\xf0\x9f\x98\x80.\xe2\x82\xac", "x\xef\xbf\xbd",
     "\xf0\x9f\x98\x80.\xe2\x82\xac@x\xef\xbf\xbd"},
    {S("<\"\xc3\xa9 \xf4\x8f\xbf\xbf\"@x>"), false, true, 0,
     "\xc3\xa9 \xf4\x8f\xbf\xbf", "x", "\"\xc3\xa9 \xf4\x8f\xbf\xbf\"@x"},
};

struct invalid_case {
	const char *s;
	size_t n;
	bool allow_null, utf8;
};

static const struct invalid_case invalid[] = {
    /* Framing. */
    {S(""), true, true},
    {S("<"), true, true},
    {S(">"), true, true},
    {S("a@b"), true, true},
    {S(" <a@b>"), true, true},
    {S("<a@b"), true, true},
    {S("<<a@b>>"), true, true},
    {S("<>"), false, true}, /* null only for MAIL FROM */
    {S("< >"), true, true},
    /* Space, NUL, CR, LF outside a quoted string. */
    {S("< a@b>"), true, true},
    {S("<a @b>"), true, true},
    {S("<a@ b>"), true, true},
    {S("<a@b >"), true, true},
    {S("<a\0b@c>"), true, true},
    {S("<a@b\0>"), true, true},
    {S("<\0>"), true, true},
    {S("<a\r@b>"), true, true},
    {S("<a@b\r\n>"), true, true},
    {S("<a\x7f@b>"), true, true},
    /* Inside a quoted string: no NUL, CR, LF, DEL, even escaped. */
    {S("<\"a\0\"@b>"), true, true},
    {S("<\"a\r\"@b>"), true, true},
    {S("<\"a\n\"@b>"), true, true},
    {S("<\"a\\\r\"@b>"), true, true},
    {S("<\"a\\\0\"@b>"), true, true},
    {S("<\"\x7f\"@b>"), true, true},
    {S("<\"\\\x7f\"@b>"), true, true},
    {S("<\"a\t\"@b>"), true, true},
    /* Missing parts. */
    {S("<postmaster>"), true, true},
    {S("<a>"), true, true},
    {S("<@b>"), true, true},
    {S("<a@>"), true, true},
    /* Relay tricks. */
    {S("<@local:user@remote>"), true, true},
    {S("<@a,@b:u@c>"), true, true},
    {S("<user@remote@local>"), true, true},
    /* Address literals: IPv4 and IPv6 only, whole, and nothing after. */
    {S("<user@[1.2.3]>"), true, true},
    {S("<user@[1.2.3.256]>"), true, true},
    {S("<user@[01.2.3.4]>"), true, true},
    {S("<user@[1.2.3.4.5]>"), true, true},
    {S("<user@[::1]>"), true, true},
    {S("<user@[IPv6:1.2.3.4]>"), true, true},
    {S("<user@[IPv6:zz::1]>"), true, true},
    {S("<user@[IPv6:]>"), true, true},
    {S("<user@[x-tag:abc]>"), true, true},
    {S("<user@[]>"), true, true},
    {S("<user@[1.2.3.4>"), true, true},
    {S("<user@[1.2.3.4]"), true, true},
    {S("<user@[1.2.3.4].x>"), true, true},
    {S("<user@[1.2.3.4 ]>"), true, true},
    {S("<user@x.[1.2.3.4]>"), true, true},
    {S("<user@[IPv6:1:2:3:4:5:6:7:8:9:0:1:2:3:4:5:6:7:8:9:0:1:2:3:4]>"), true,
     true},
    {S("<user@local:25>"), true, true},
    /* Dot-string. */
    {S("<.a@b>"), true, true},
    {S("<a.@b>"), true, true},
    {S("<a..b@c>"), true, true},
    {S("<.@b>"), true, true},
    {S("<a,b@c>"), true, true},
    {S("<a(b)@c>"), true, true},
    {S("<a\\b@c>"), true, true},
    {S("<a\"b\"@c>"), true, true},
    /* Quoted-string. */
    {S("<\"a@b>"), true, true},
    {S("<\"a\\\"@b>"), true, true},
    {S("<\"a\"b@c>"), true, true},
    {S("<\"a\".b@c>"), true, true},
    {S("<\"a\"\"b\"@c>"), true, true},
    /* Domain. */
    {S("<a@-b>"), true, true},
    {S("<a@b->"), true, true},
    {S("<a@b-.c>"), true, true},
    {S("<a@.b>"), true, true},
    {S("<a@.>"), true, true},
    {S("<a@b..c>"), true, true},
    {S("<a@b..>"), true, true},
    {S("<a@b_c>"), true, true},
    {S("<a@b/c>"), true, true},
    {S("<a@\"b\">"), true, true},
    /* Without SMTPUTF8, no byte >= 0x80 anywhere. */
    {S("<\xce\xb4@b>"), true, false},
    {S("<a@b\xc3\xbc>"), true, false},
    {S("<\"\xc3\xa9\"@b>"), true, false},
    /* With SMTPUTF8, only well-formed UTF-8 (RFC 3629). */
    {S("<\x80@b>"), true, true},
    {S("<\xff@b>"), true, true},
    {S("<\xc0\x80@b>"), true, true},	     /* overlong NUL */
    {S("<\xc1\xbf@b>"), true, true},	     /* overlong */
    {S("<\xe0\x80\xaf@b>"), true, true},     /* overlong '/' */
    {S("<\xed\xa0\x80@b>"), true, true},     /* surrogate */
    {S("<\xf0\x80\x80\xaf@b>"), true, true}, /* overlong */
    {S("<\xf4\x90\x80\x80@b>"), true, true}, /* above U+10FFFF */
    {S("<\xf5\x80\x80\x80@b>"), true, true},
    {S("<\xe2\x82@b>"), true, true}, /* cut short */
    {S("<a@b\xc3>"), true, true},
    {S("<a@b\xe2\x82>"), true, true},
    {S("<\"\xc3\"@b>"), true, true},
    {S("<\"\\\xc3\xa9\"@b>"), true, true}, /* quoted-pair is ASCII */
    {S("<a@\xc3\xa9-\xc3>"), true, true},
};

/* Parses a heap copy of exactly n bytes. */
static int parse_exact(const char *s, size_t n, bool allow_null, bool utf8,
		       struct addr *a, size_t *used)
{
	char *copy = malloc(n ? n : 1);
	int r;

	assert_non_null(copy);
	if (n)
		memcpy(copy, s, n);
	r = addr_parse_path(copy, n, allow_null, utf8, a, used);
	free(copy);
	return r;
}

static void assert_cleared(const struct addr *a)
{
	static const struct addr zero;

	assert_memory_equal(a, &zero, sizeof zero);
}

static void test_valid(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof valid / sizeof valid[0]; i++) {
		const struct valid_case *c = &valid[i];
		struct addr a;
		size_t used = 0;
		char buf[400];

		if (parse_exact(c->s, c->n, c->allow_null, c->utf8, &a, &used))
			fail_msg("valid[%zu] refused", i);
		assert_int_equal(used, c->used ? c->used : c->n);
		assert_int_equal(a.null, c->s[1] == '>');
		assert_string_equal(a.local, c->local);
		assert_string_equal(a.domain, c->domain);
		assert_int_equal(a.literal, c->domain[0] == '[');
		assert_int_equal(addr_format(&a, buf, sizeof buf),
				 strlen(c->formatted));
		assert_string_equal(buf, c->formatted);
		/* allow_null=true never turns a mailbox invalid. */
		assert_int_equal(
		    parse_exact(c->s, c->n, true, c->utf8, &a, &used), 0);
	}
}

static void test_invalid(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
		const struct invalid_case *c = &invalid[i];
		struct addr a;
		size_t used = 12345;

		if (!parse_exact(c->s, c->n, c->allow_null, c->utf8, &a, &used))
			fail_msg("invalid[%zu] accepted", i);
		assert_int_equal(used, 12345); /* untouched on error */
		assert_cleared(&a);
	}
}

/* addr_format_sent keeps the local part's case (RFC 5321 2.4), and
 * addr_literal_ip gives a literal's address. */
static void test_format_sent(void **state)
{
	struct addr a;
	size_t used;
	char buf[400];

	(void)state;
	assert_int_equal(addr_parse_path(S("<Bob.Smith@Remote.TEST.>"), false,
					 false, &a, &used),
			 0);
	assert_int_equal(addr_format_sent(&a, buf, sizeof buf), 21);
	assert_string_equal(buf, "Bob.Smith@remote.test");
	assert_int_equal(addr_format(&a, buf, sizeof buf), 21);
	assert_string_equal(buf, "bob.smith@remote.test");
	assert_int_equal(addr_format_sent(&a, buf, 22), 21);
	assert_int_equal(addr_format_sent(&a, buf, 21), -1);
	assert_int_equal(addr_literal_ip(&a, buf, sizeof buf), -1);
	assert_int_equal(
	    addr_parse_path(S("<\"A B\"@[IPv6:::1]>"), false, false, &a, &used),
	    0);
	assert_int_equal(addr_format_sent(&a, buf, sizeof buf), 16);
	assert_string_equal(buf, "\"A B\"@[IPv6:::1]");
	assert_int_equal(addr_literal_ip(&a, buf, sizeof buf), 3);
	assert_string_equal(buf, "::1");
	assert_int_equal(addr_literal_ip(&a, buf, 3), -1);
	assert_int_equal(
	    addr_parse_path(S("<a@[10.0.0.1]>"), false, false, &a, &used), 0);
	assert_int_equal(addr_literal_ip(&a, buf, sizeof buf), 8);
	assert_string_equal(buf, "10.0.0.1");
}

/* UTF-8 paths are refused when SMTPUTF8 was not given. */
static void test_utf8_off(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof valid / sizeof valid[0]; i++) {
		struct addr a;
		size_t used, k;
		bool ascii = true, r;

		for (k = 0; k < valid[i].n; k++)
			if ((unsigned char)valid[i].s[k] >= 0x80)
				ascii = false;
		r = parse_exact(valid[i].s, valid[i].n, true, false, &a,
				&used) == 0;
		assert_int_equal(r, ascii);
	}
}

/* A valid path cut short anywhere before its '>' is an error. */
static void test_truncated(void **state)
{
	size_t i, k;

	(void)state;
	for (i = 0; i < sizeof valid / sizeof valid[0]; i++) {
		size_t end = valid[i].used ? valid[i].used : valid[i].n;

		for (k = 0; k < end; k++) {
			struct addr a;
			size_t used;

			assert_int_equal(
			    parse_exact(valid[i].s, k, true, true, &a, &used),
			    -1);
			assert_cleared(&a);
		}
	}
}

/* Format, wrap in <>, parse again: the same address and the same key. */
static void test_round_trip(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof valid / sizeof valid[0]; i++) {
		struct addr a, b;
		char buf[400], again[400];
		size_t used;
		int len;

		assert_int_equal(
		    parse_exact(valid[i].s, valid[i].n, true, true, &a, &used),
		    0);
		if (a.null)
			continue;
		buf[0] = '<';
		len = addr_format(&a, buf + 1, sizeof buf - 2);
		assert_true(len > 0);
		buf[len + 1] = '>';
		assert_int_equal(
		    parse_exact(buf, (size_t)len + 2, false, true, &b, &used),
		    0);
		assert_int_equal(used, (size_t)len + 2);
		assert_string_equal(b.domain, a.domain);
		assert_int_equal(strlen(b.local), strlen(a.local));
		assert_int_equal(addr_format(&b, again, sizeof again), len);
		assert_memory_equal(again, buf + 1, (size_t)len);
	}
}

/* Every buffer too small fails without writing past its end. */
static void test_format_sizes(void **state)
{
	size_t i, n;

	(void)state;
	for (i = 0; i < sizeof valid / sizeof valid[0]; i++) {
		size_t flen = strlen(valid[i].formatted);
		struct addr a;
		size_t used;

		assert_int_equal(
		    parse_exact(valid[i].s, valid[i].n, true, true, &a, &used),
		    0);
		for (n = 0; n <= flen + 1; n++) {
			char *buf = malloc(n ? n : 1);

			assert_non_null(buf);
			assert_int_equal(addr_format(&a, n ? buf : NULL, n),
					 n > flen ? (int)flen : -1);
			if (n > flen)
				assert_string_equal(buf, valid[i].formatted);
			free(buf);
		}
	}
}

/* Builds "<" L "@" D ">" into buf; returns its length. */
static size_t build(char *buf, const char *l, size_t ln, const char *d,
		    size_t dn)
{
	buf[0] = '<';
	memcpy(buf + 1, l, ln);
	buf[1 + ln] = '@';
	memcpy(buf + 2 + ln, d, dn);
	buf[2 + ln + dn] = '>';
	return ln + dn + 3;
}

static int parse_built(const char *l, size_t ln, const char *d, size_t dn,
		       struct addr *a)
{
	char buf[700];
	size_t used, n = build(buf, l, ln, d, dn);

	return parse_exact(buf, n, false, true, a, &used);
}

/* RFC 5321 4.5.3.1: local-part 64, domain 255; RFC 1035: label 63. */
static void test_limits(void **state)
{
	char l[100], q[100], d[300], out[400];
	struct addr a;

	(void)state;
	memset(l, 'a', sizeof l);
	memset(q, ' ', sizeof q);
	q[0] = '"';
	assert_int_equal(parse_built(l, 64, "x", 1, &a), 0);
	assert_int_equal(strlen(a.local), 64);
	assert_int_equal(parse_built(l, 65, "x", 1, &a), -1);
	/* 64 octets unquoted: the quotes do not count. */
	q[65] = '"';
	assert_int_equal(parse_built(q, 66, "x", 1, &a), 0);
	assert_int_equal(addr_format(&a, out, sizeof out), 68);
	q[65] = ' ';
	q[66] = '"';
	assert_int_equal(parse_built(q, 67, "x", 1, &a), -1);

	/* One label of 63, then 64. */
	memset(d, 'b', sizeof d);
	assert_int_equal(parse_built("a", 1, d, 63, &a), 0);
	assert_int_equal(parse_built("a", 1, d, 64, &a), -1);
	/* Four labels of 63: 255 octets; 256 with the root dot. */
	d[63] = d[127] = d[191] = '.';
	assert_int_equal(parse_built("a", 1, d, 255, &a), 0);
	assert_int_equal(strlen(a.domain), 255);
	d[255] = '.';
	assert_int_equal(parse_built("a", 1, d, 256, &a), 0);
	assert_int_equal(strlen(a.domain), 255);
	assert_int_equal(addr_format(&a, out, sizeof out), 257);
	d[256] = 'c';
	assert_int_equal(parse_built("a", 1, d, 257, &a), -1);
	/* Five labels, none over 63, 256 octets in all: too long. */
	d[254] = '.';
	d[255] = 'b';
	assert_int_equal(parse_built("a", 1, d, 256, &a), -1);
	/* 63 octets of UTF-8 in a label (21 x 3), then 66. */
	{
		char u[80];
		int k;

		for (k = 0; k < 22; k++)
			memcpy(u + 3 * k, "\xe2\x82\xac", 3);
		assert_int_equal(parse_built("a", 1, u, 63, &a), 0);
		assert_int_equal(parse_built("a", 1, u, 66, &a), -1);
	}
}

/* Each byte in each position: exactly the grammar's characters pass. */
static void test_every_byte(void **state)
{
	int b;

	(void)state;
	for (b = 0; b < 256; b++) {
		char s[16];
		struct addr a;
		size_t used;
		bool atext = (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') ||
			     (b >= '0' && b <= '9') ||
			     (b && strchr("!#$%&'*+-/=?^_`{|}~", b));
		bool ldh = (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') ||
			   (b >= '0' && b <= '9') || b == '-' || b == '.';
		int r;

		memcpy(s, "<aXb@x>", 7);
		s[2] = (char)b;
		r = parse_exact(s, 7, false, true, &a, &used);
		assert_int_equal(r == 0, atext || b == '.');

		/* qtextSMTP: %d32-33 / %d35-91 / %d93-126; a '\' starts a
		 * quoted-pair, which takes the 'b'. */
		memcpy(s, "<\"aXb\"@x>", 9);
		s[3] = (char)b;
		r = parse_exact(s, 9, false, true, &a, &used);
		assert_int_equal(r == 0, b >= 32 && b <= 126 && b != '"');

		/* quoted-pairSMTP = %d92 %d32-126: ASCII only, even with
		 * SMTPUTF8. */
		memcpy(s, "<\"a\\X\"@x>", 9);
		s[4] = (char)b;
		r = parse_exact(s, 9, false, true, &a, &used);
		assert_int_equal(r == 0, b >= 32 && b <= 126);

		/* "<a@xXy>": '>' ends the path early, at used=5. */
		memcpy(s, "<a@xXy>", 7);
		s[4] = (char)b;
		r = parse_exact(s, 7, false, true, &a, &used);
		assert_int_equal(r == 0 && used == 7, ldh);
		assert_int_equal(r == 0 && used == 5, b == '>');
		if (b >= 'A' && b <= 'Z')
			assert_int_equal(a.domain[1], b + 32);
	}
}

/* Random paths from a nasty alphabet: no crash, no over-read, and
 * anything accepted formats to a key that parses back to itself. */
static void test_random(void **state)
{
	static const char alphabet[] = "<<>>@@@..\"\"\\\\aZ0- :,[]%\r\n\0\x7f"
				       "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
	uint32_t seed = 12345;
	int iter, accepted = 0;

	(void)state;
	for (iter = 0; iter < 200000; iter++) {
		char s[24], key[400], wrapped[402], key2[400];
		size_t n, k, used, used2;
		struct addr a, b;
		int len;

		seed = seed * 1103515245u + 12345u;
		n = (seed >> 16) % sizeof s;
		for (k = 0; k < n; k++) {
			seed = seed * 1103515245u + 12345u;
			s[k] = alphabet[(seed >> 16) % (sizeof alphabet - 1)];
		}
		if (n > 0 && iter % 2)
			s[0] = '<';
		if (parse_exact(s, n, iter % 3 == 0, iter % 5 != 0, &a, &used) <
		    0)
			continue;
		accepted++;
		assert_true(used <= n && s[used - 1] == '>');
		len = addr_format(&a, key, sizeof key);
		assert_true(len >= 0);
		if (a.null)
			continue;
		wrapped[0] = '<';
		memcpy(wrapped + 1, key, (size_t)len);
		wrapped[len + 1] = '>';
		assert_int_equal(parse_exact(wrapped, (size_t)len + 2, false,
					     true, &b, &used2),
				 0);
		assert_int_equal(addr_format(&b, key2, sizeof key2), len);
		assert_memory_equal(key, key2, (size_t)len);
	}
	assert_true(accepted > 100); /* the generator reaches valid paths */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_valid),
	    cmocka_unit_test(test_invalid),
	    cmocka_unit_test(test_format_sent),
	    cmocka_unit_test(test_utf8_off),
	    cmocka_unit_test(test_truncated),
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_format_sizes),
	    cmocka_unit_test(test_limits),
	    cmocka_unit_test(test_every_byte),
	    cmocka_unit_test(test_random),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
