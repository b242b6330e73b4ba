/* test_smtp_parse.c - SMTP command arguments (smtp/parse.c): MAIL FROM,
 * RCPT TO, BDAT and HELO names, each with the exact reply it gives.
 * Every argument is parsed from a heap copy of exactly its length + NUL,
 * so ASan catches any read past it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp/parse.h"

/* The replies, as parse.c words them. */
#define E_FROM	 "501 5.1.7 Bad sender address syntax"
#define E_EHLO	 "555 5.5.4 MAIL parameters need EHLO"
#define E_SIZE	 "501 5.5.4 Bad SIZE parameter"
#define E_MPARAM "555 5.5.4 Unsupported MAIL parameter"
#define E_UTF8	 "553 5.6.7 Non-ASCII address needs SMTPUTF8"
#define E_TO	 "501 5.1.3 Bad recipient address syntax"
#define E_RPARAM "555 5.5.4 Unsupported RCPT parameter"
#define E_BDAT	 "501 5.5.4 Syntax error: BDAT size [LAST]"

/* UTF-8 address parts: "δοκ" and "πα.δο". */
#define U_LOCAL	 "\xce\xb4\xce\xbf\xce\xba"
#define U_DOMAIN "\xcf\x80\xce\xb1.\xce\xb4\xce\xbf"

#define PM_DOMAIN "example.org" /* where <postmaster> goes */

/* Fails (with the case named) unless reply r is the one wanted: NULL for
 * accepted, else that exact line. */
static void check_reply(const char *what, const char *arg, int flag,
			const char *r, const char *want)
{
	if ((r == NULL) != (want == NULL) ||
	    (r != NULL && strcmp(r, want) != 0))
		print_error("%s \"%s\" (%d): got \"%s\", want \"%s\"\n", what,
			    arg, flag, r ? r : "(ok)", want ? want : "(ok)");
	if (want != NULL) {
		assert_non_null(r);
		assert_string_equal(r, want);
	} else {
		assert_null(r);
	}
}

/* --- MAIL FROM ---------------------------------------------------------- */

struct mail_case {
	const char *arg;
	bool esmtp;
	const char *reply; /* NULL: accepted */
	bool null;
	const char *local, *domain;
	uint64_t size;
	bool utf8;
};

/* A refused argument: only the reply matters. */
/* clang-format off */
#define MAIL_ERR(arg, esmtp, reply) \
	{arg, esmtp, reply, false, NULL, NULL, 0, false}
/* clang-format on */

static const struct mail_case mail_cases[] = {
    /* Accepted. */
    {"FROM:<a@b>", false, NULL, false, "a", "b", 0, false},
    {"from:<a@b>", false, NULL, false, "a", "b", 0, false},
    {"From:<A@B.Example>", false, NULL, false, "A", "b.example", 0, false},
    {"FROM: <a@b>", false, NULL, false, "a", "b", 0, false},
    {"FROM:   <a@b>", false, NULL, false, "a", "b", 0, false},
    {"FROM:<>", false, NULL, true, "", "", 0, false},
    {"FROM:<> SIZE=10", true, NULL, true, "", "", 10, false},
    {"FROM:<a@b> ", false, NULL, false, "a", "b", 0, false},
    {"FROM:<a@b> SIZE=0", true, NULL, false, "a", "b", 0, false},
    {"FROM:<a@b> SIZE=12345", true, NULL, false, "a", "b", 12345, false},
    {"FROM:<a@b> size=007", true, NULL, false, "a", "b", 7, false},
    {"FROM:<a@b> SIZE=18446744073709551615", true, NULL, false, "a", "b",
     UINT64_MAX, false},
    {"FROM:<a@b> BODY=8BITMIME", true, NULL, false, "a", "b", 0, false},
    {"FROM:<a@b> body=7bit", true, NULL, false, "a", "b", 0, false},
    {"FROM:<a@b> SMTPUTF8", true, NULL, false, "a", "b", 0, true},
    {"FROM:<a@b>  SIZE=10   smtputf8  BODY=8BITMIME ", true, NULL, false, "a",
     "b", 10, true},
    {"FROM:<" U_LOCAL "@" U_DOMAIN "> SMTPUTF8", true, NULL, false, U_LOCAL,
     U_DOMAIN, 0, true},
    {"FROM:<" U_LOCAL "@b> BODY=8BITMIME SMTPUTF8", true, NULL, false, U_LOCAL,
     "b", 0, true},
    {"FROM:<postmaster@b>", false, NULL, false, "postmaster", "b", 0, false},

    /* The path. */
    MAIL_ERR("", true, E_FROM),
    MAIL_ERR("FROM", true, E_FROM),
    MAIL_ERR("FROM:", true, E_FROM),
    MAIL_ERR("FROM <a@b>", true, E_FROM),
    MAIL_ERR("FROM:a@b", true, E_FROM),
    MAIL_ERR("TO:<a@b>", true, E_FROM),
    MAIL_ERR("FROM:<a@b", true, E_FROM),
    MAIL_ERR("FROM:<a@b>x", true, E_FROM),
    MAIL_ERR("FROM:<a@b>\tSIZE=1", true, E_FROM),
    MAIL_ERR("FROM:<a b@c>", true, E_FROM),
    MAIL_ERR("FROM:<postmaster>", true, E_FROM),
    MAIL_ERR("FROM:<@x:a@b>", true, E_FROM),
    MAIL_ERR("FROM:<\xff@b> SMTPUTF8", true, E_FROM), /* not UTF-8 */
    MAIL_ERR(" FROM:<a@b>", true, E_FROM),

    /* Parameters need EHLO. */
    MAIL_ERR("FROM:<a@b> SIZE=10", false, E_EHLO),
    MAIL_ERR("FROM:<a@b> BODY=8BITMIME", false, E_EHLO),
    MAIL_ERR("FROM:<a@b> SMTPUTF8", false, E_EHLO),
    MAIL_ERR("FROM:<" U_LOCAL "@b> SMTPUTF8", false, E_EHLO),
    MAIL_ERR("FROM:<a@b> FOO", false, E_EHLO),

    /* SIZE. */
    MAIL_ERR("FROM:<a@b> SIZE=99999999999999999999999", true, E_SIZE),
    MAIL_ERR("FROM:<a@b> SIZE=18446744073709551616", true, E_SIZE),
    MAIL_ERR("FROM:<a@b> SIZE=abc", true, E_SIZE),
    MAIL_ERR("FROM:<a@b> SIZE=", true, E_SIZE),
    MAIL_ERR("FROM:<a@b> SIZE= 10", true, E_SIZE),
    MAIL_ERR("FROM:<a@b> SIZE=-1", true, E_SIZE),
    MAIL_ERR("FROM:<a@b> SIZE=+1", true, E_SIZE),
    MAIL_ERR("FROM:<a@b> SIZE=10x", true, E_SIZE),
    MAIL_ERR("FROM:<a@b> SIZE=0x10", true, E_SIZE),

    /* Other parameters. */
    MAIL_ERR("FROM:<a@b> SIZE", true, E_MPARAM),
    MAIL_ERR("FROM:<a@b> BODY=BINARYMIME", true, E_MPARAM),
    MAIL_ERR("FROM:<a@b> BODY=8BIT", true, E_MPARAM),
    MAIL_ERR("FROM:<a@b> BODY=", true, E_MPARAM),
    MAIL_ERR("FROM:<a@b> AUTH=<>", true, E_MPARAM),
    MAIL_ERR("FROM:<a@b> SMTPUTF8=1", true, E_MPARAM),
    MAIL_ERR("FROM:<a@b> SIZE=10 FOO", true, E_MPARAM),
    MAIL_ERR("FROM:<" U_LOCAL "@b> FOO SMTPUTF8", true, E_MPARAM),

    /* Non-ASCII without SMTPUTF8 (RFC 6531 3.4). */
    MAIL_ERR("FROM:<" U_LOCAL "@b>", true, E_UTF8),
    MAIL_ERR("FROM:<a@" U_DOMAIN ">", true, E_UTF8),
    MAIL_ERR("FROM:<" U_LOCAL "@b> BODY=8BITMIME", true, E_UTF8),
    MAIL_ERR("FROM:<" U_LOCAL "@b>", false, E_UTF8),
};

static void test_mail(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof mail_cases / sizeof *mail_cases; i++) {
		const struct mail_case *c = &mail_cases[i];
		struct smtp_mail_args m;
		char *arg = strdup(c->arg);
		const char *r;

		memset(&m, 0xa5, sizeof m);
		r = smtp_parse_mail(arg, c->esmtp, &m);
		free(arg); /* m holds copies; r is a static string */
		check_reply("MAIL", c->arg, c->esmtp, r, c->reply);
		if (c->reply == NULL) {
			assert_int_equal(m.from.null, c->null);
			assert_string_equal(m.from.local, c->local);
			assert_string_equal(m.from.domain, c->domain);
			assert_int_equal(m.size, c->size);
			assert_int_equal(m.utf8, c->utf8);
		}
	}
}

/* --- RCPT TO ------------------------------------------------------------ */

struct rcpt_case {
	const char *arg;
	bool utf8; /* SMTPUTF8 was given at MAIL */
	const char *reply;
	const char *local, *domain;
};

/* clang-format off */
#define RCPT_ERR(arg, utf8, reply) {arg, utf8, reply, NULL, NULL}
/* clang-format on */

static const struct rcpt_case rcpt_cases[] = {
    {"TO:<a@b>", false, NULL, "a", "b"},
    {"to:<A@B>", false, NULL, "A", "b"},
    {"TO: <a@b>", false, NULL, "a", "b"},
    {"TO:<a@b> ", false, NULL, "a", "b"}, /* trailing space, as MAIL */
    {"TO:<postmaster> ", false, NULL, "postmaster", PM_DOMAIN},
    {"TO:<a@b.example.>", false, NULL, "a", "b.example"},
    {"TO:<\"a b\"@c>", false, NULL, "a b", "c"},
    /* An address literal: the policy tells ours from a relay attempt. */
    {"TO:<a@[1.2.3.4]>", false, NULL, "a", "[1.2.3.4]"},
    {"TO:<" U_LOCAL "@" U_DOMAIN ">", true, NULL, U_LOCAL, U_DOMAIN},
    /* RFC 5321 4.1.1.3: <postmaster> without a domain, any case. */
    {"TO:<postmaster>", false, NULL, "postmaster", PM_DOMAIN},
    {"TO:<PostMaster>", false, NULL, "postmaster", PM_DOMAIN},
    {"To: <postmaster>", true, NULL, "postmaster", PM_DOMAIN},
    {"TO:<postmaster@other.example>", false, NULL, "postmaster",
     "other.example"},

    /* Parameters are not supported (no DSN). */
    RCPT_ERR("TO:<a@b> NOTIFY=NEVER", false, E_RPARAM),
    RCPT_ERR("TO:<a@b> ORCPT=rfc822;a@b", false, E_RPARAM),
    RCPT_ERR("TO:<a@b>  X", false, E_RPARAM),
    /* A parameter after "<postmaster>" is a parameter too. */
    RCPT_ERR("TO:<postmaster> NOTIFY=NEVER", false, E_RPARAM),

    RCPT_ERR("", false, E_TO),
    RCPT_ERR("TO", false, E_TO),
    RCPT_ERR("TO:", false, E_TO),
    RCPT_ERR("TO <a@b>", false, E_TO),
    RCPT_ERR("FROM:<a@b>", false, E_TO),
    RCPT_ERR("TO:a@b", false, E_TO),
    RCPT_ERR("TO:<>", false, E_TO), /* no null recipient */
    RCPT_ERR("TO:<a@b", false, E_TO),
    RCPT_ERR("TO:<a@b>x", false, E_TO),
    RCPT_ERR("TO:<a@b>\tX", false, E_TO),
    RCPT_ERR("TO:<postmaster", false, E_TO),
    RCPT_ERR("TO:<@relay:a@b>", false, E_TO),
    RCPT_ERR("TO:<a@[1.2.3]>", false, E_TO),
    RCPT_ERR("TO:<\xff@b>", true, E_TO),

    /* Non-ASCII needs SMTPUTF8 at MAIL. */
    RCPT_ERR("TO:<" U_LOCAL "@b>", false, E_UTF8),
    RCPT_ERR("TO:<a@" U_DOMAIN ">", false, E_UTF8),
};

static void test_rcpt(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof rcpt_cases / sizeof *rcpt_cases; i++) {
		const struct rcpt_case *c = &rcpt_cases[i];
		char *arg = strdup(c->arg);
		struct addr a;
		const char *r;

		memset(&a, 0xa5, sizeof a);
		r = smtp_parse_rcpt(arg, c->utf8, PM_DOMAIN, &a);
		free(arg);
		check_reply("RCPT", c->arg, c->utf8, r, c->reply);
		if (c->reply == NULL) {
			assert_false(a.null);
			assert_string_equal(a.local, c->local);
			assert_string_equal(a.domain, c->domain);
		}
	}
}

/* --- BDAT --------------------------------------------------------------- */

struct bdat_case {
	const char *arg;
	bool ok;
	uint64_t size;
	bool last;
};

/* clang-format off */
#define BDAT_ERR(arg) {arg, false, 0, false}
/* clang-format on */

static const struct bdat_case bdat_cases[] = {
    {"10", true, 10, false},
    {"10 LAST", true, 10, true},
    {"10 last", true, 10, true},
    {"10 LaSt", true, 10, true},
    {"0", true, 0, false},
    {"0 LAST", true, 0, true},
    {"007", true, 7, false},
    {"1099511627776", true, 1ull << 40, false}, /* SMTP_BDAT_MAX */
    BDAT_ERR("1099511627777"),
    BDAT_ERR("99999999999999999999999"),
    BDAT_ERR("18446744073709551616 LAST"),
    BDAT_ERR("x"),
    BDAT_ERR(""),
    BDAT_ERR("LAST"),
    BDAT_ERR("10 LASTX"),
    BDAT_ERR("10 LAS"),
    BDAT_ERR("10 LAST "),
    BDAT_ERR("10  LAST"),
    BDAT_ERR("10 FIRST"),
    BDAT_ERR("10 "),
    BDAT_ERR("10x"),
    BDAT_ERR("0x10"),
    BDAT_ERR("-1"),
    BDAT_ERR("+1"),
    BDAT_ERR(" 10"),
    BDAT_ERR("10\tLAST"),
};

static void test_bdat(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof bdat_cases / sizeof *bdat_cases; i++) {
		const struct bdat_case *c = &bdat_cases[i];
		char *arg = strdup(c->arg);
		uint64_t size = 12345;
		bool last = false;
		const char *r = smtp_parse_bdat(arg, &size, &last);

		free(arg);

		if ((r == NULL) != c->ok)
			print_error("BDAT \"%s\": got \"%s\"\n", c->arg,
				    r ? r : "(ok)");
		if (c->ok) {
			assert_null(r);
			assert_int_equal(size, c->size);
			assert_int_equal(last, c->last);
		} else {
			assert_non_null(r);
			assert_string_equal(r, E_BDAT);
		}
	}
}

/* --- HELO / EHLO -------------------------------------------------------- */

struct helo_case {
	const char *arg;
	size_t len; /* 0: refused */
};

static const struct helo_case helo_cases[] = {
    {"mail.example.org", 16},
    {"mail.example.org extra words", 16},
    {"[192.0.2.1]", 11},
    {"[IPv6:2001:db8::1]", 18},
    {"x", 1},
    {"!~", 2},
    {"", 0},
    {" mail", 0},
    {"a\tb", 0},
    {"a\x01", 0},
    {"\x1f", 0},
    {"a\x7f", 0},
    {"a\rb", 0},
    {"a\nb", 0},
    {"\xc3\xa9t\xc3\xa9", 0}, /* UTF-8 is not printable ASCII */
    {"a\x80", 0},
    {"a\xff", 0},
};

static void test_helo(void **state)
{
	char name[300];

	(void)state;
	for (size_t i = 0; i < sizeof helo_cases / sizeof *helo_cases; i++) {
		char *arg = strdup(helo_cases[i].arg);
		size_t n = smtp_parse_helo(arg);

		free(arg);

		if (n != helo_cases[i].len)
			print_error("HELO \"%s\": got %zu\n", helo_cases[i].arg,
				    n);
		assert_int_equal(n, helo_cases[i].len);
	}

	/* 255 octets at most, whatever follows. */
	memset(name, 'a', 255);
	name[255] = '\0';
	assert_int_equal(smtp_parse_helo(name), 255);
	strcpy(name + 255, " more");
	assert_int_equal(smtp_parse_helo(name), 255);
	name[255] = 'a';
	name[256] = '\0';
	assert_int_equal(smtp_parse_helo(name), 0);
	memset(name, 'a', 299);
	name[299] = '\0';
	name[254] = '\x01'; /* a control byte inside a long name */
	name[255] = ' ';
	assert_int_equal(smtp_parse_helo(name), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_mail),
	    cmocka_unit_test(test_rcpt),
	    cmocka_unit_test(test_bdat),
	    cmocka_unit_test(test_helo),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
