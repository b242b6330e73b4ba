/* test_pop3_parse.c - POP3 command arguments (pop3/parse.c): message
 * numbers and the AUTH PLAIN response. Inputs are heap copies of exactly
 * their length + NUL, so ASan catches a read past them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/nameser.h>
#include <netinet/in.h>
#include <resolv.h>

#include <cmocka.h>

#include "core/sasl.h"
#include "pop3/parse.h"

/* A literal and its length, which may include NUL bytes. */
#define S(lit) lit, sizeof(lit) - 1

/* --- message numbers ---------------------------------------------------- */

struct number_case {
	const char *arg;
	int rc;
	unsigned long n;
	const char *rest;
};

/* clang-format off */
#define NUM_ERR(arg) {arg, -1, 0, NULL}
/* clang-format on */

static const struct number_case number_cases[] = {
    {"1", 0, 1, ""},
    {"12 3", 0, 12, " 3"},
    {"7 ", 0, 7, " "},
    {"007", 0, 7, ""},
    {"4294967296", 0, 4294967296ul, ""},
    {"18446744073709551615", 0, 18446744073709551615ul, ""},
    NUM_ERR("0"),
    NUM_ERR("00"),
    NUM_ERR("0 1"),
    NUM_ERR("-1"),
    NUM_ERR("+1"),
    NUM_ERR(" 1"),
    NUM_ERR("1x"),
    NUM_ERR("1\t2"),
    NUM_ERR("0x1"),
    NUM_ERR("abc"),
    NUM_ERR(""),
    NUM_ERR("18446744073709551616"),
    NUM_ERR("99999999999999999999999999999"),
};

static void test_number(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof number_cases / sizeof *number_cases;
	     i++) {
		const struct number_case *c = &number_cases[i];
		char *arg = strdup(c->arg);
		unsigned long n = 424242;
		const char *rest = NULL;
		int rc = pop3_parse_number(arg, &n, &rest);
		/* rest must point into arg, right after the digits. */
		bool rest_ok = rc == 0 && rest != NULL &&
			       rest == arg + strlen(arg) - strlen(c->rest) &&
			       strcmp(rest, c->rest) == 0;

		free(arg);
		if (rc != c->rc)
			print_error("number \"%s\": got %d\n", c->arg, rc);
		assert_int_equal(rc, c->rc);
		if (rc == 0) {
			assert_int_equal(n, c->n);
			assert_true(rest_ok);
		}
	}
}

/* --- AUTH PLAIN --------------------------------------------------------- */

#define USER_SIZE 16 /* user names of up to 15 octets */
#define PASS_SIZE 12 /* passwords of up to 11 octets */

struct plain_case {
	const char *raw; /* decoded response */
	size_t n;
	int rc;
	const char *user, *pass;
};

/* clang-format off */
#define PLAIN_ERR(raw) {raw, -2, NULL, NULL}
/* clang-format on */

static const struct plain_case plain_cases[] = {
    {S("\0user\0pass"), 0, "user", "pass"},
    {S("user\0user\0pass"), 0, "user", "pass"},
    {S("USER\0user\0pass"), 0, "user", "pass"}, /* authzid: any case */
    {S("\0a@b.example\0p w\xc3\xa9"), 0, "a@b.example", "p w\xc3\xa9"},
    {S("\0u\0x"), 0, "u", "x"},
    /* Longest that fit: USER_SIZE - 1 and PASS_SIZE - 1. */
    {S("\0user56789012345\0pass5678901"), 0, "user56789012345", "pass5678901"},
    /* RFC 4616: passwd = 1*SAFE, so an empty one is malformed. */
    PLAIN_ERR(S("\0user\0")),

    /* Logging in as someone else. */
    PLAIN_ERR(S("other\0user\0pass")),
    PLAIN_ERR(S("use\0user\0pass")),
    /* Structure. */
    PLAIN_ERR(S("userpass")),
    PLAIN_ERR(S("\0userpass")),
    PLAIN_ERR(S("user\0pass")),
    PLAIN_ERR(S("")),
    PLAIN_ERR(S("\0")),
    PLAIN_ERR(S("\0\0pass")), /* empty user */
    PLAIN_ERR(S("\0\0")),
    PLAIN_ERR(S("\0user\0pa\0ss")), /* a NUL inside the password */
    PLAIN_ERR(S("\0user\0pass\0")),
    PLAIN_ERR(S("\0user\0\0")),
    /* Too long for the caller's buffers. */
    PLAIN_ERR(S("\0user567890123456\0pass")),
    PLAIN_ERR(S("\0user\0pass56789012")),
};

/* Base64 of raw[0..n), NUL-terminated, malloc'd. */
static char *b64(const char *raw, size_t n)
{
	size_t cap = (n + 2) / 3 * 4 + 1;
	char *out = malloc(cap);

	assert_non_null(out);
	assert_int_equal(b64_ntop((const unsigned char *)raw, n, out, cap),
			 (int)cap - 1);
	return out;
}

static void check_plain(const char *in, int want_rc, const char *want_user,
			const char *want_pass, const char *what)
{
	char *arg = strdup(in);
	char user[USER_SIZE], pass[PASS_SIZE];
	int rc;

	memset(user, 'U', sizeof user);
	memset(pass, 'P', sizeof pass);
	rc = sasl_plain(arg, user, sizeof user, pass, sizeof pass);
	free(arg);
	if (rc != want_rc)
		print_error("plain %s (\"%s\"): got %d, want %d\n", what, in,
			    rc, want_rc);
	assert_int_equal(rc, want_rc);
	if (rc == 0) {
		assert_string_equal(user, want_user);
		assert_string_equal(pass, want_pass);
	}
}

static void test_plain(void **state)
{
	char what[32];

	(void)state;
	for (size_t i = 0; i < sizeof plain_cases / sizeof *plain_cases; i++) {
		const struct plain_case *c = &plain_cases[i];
		char *in = b64(c->raw, c->n);

		snprintf(what, sizeof what, "case %zu", i);
		check_plain(in, c->rc, c->user, c->pass, what);
		free(in);
	}
}

/* Not base64 at all: -1, before any structure is looked at. */
static void test_plain_bad_base64(void **state)
{
	static const char *bad[] = {
	    "!!!!",
	    "AHVzZXIAcGFzcw=!",
	    "AHVzZXIAcGFzcw==AA",
	    "A",
	    "AHVzZXI*",
	    "=",
	    "AHVz\x80ZXIAcGFzcw==",
	};
	char *big;
	size_t n = 1100;

	(void)state;
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		check_plain(bad[i], -1, NULL, NULL, "bad base64");

	/* The sane encoding of the same response is fine. */
	check_plain("AHVzZXIAcGFzcw==", 0, "user", "pass", "reference");

	/* Over the 1024-octet response limit: a malformed response (-2, a
	 * failed login with its delay), not read past the buffer. */
	big = malloc(n);
	assert_non_null(big);
	memset(big, 'a', n);
	big[0] = '\0';
	big[1] = 'u';
	big[2] = '\0';
	{
		char *in = b64(big, n);
		check_plain(in, -2, NULL, NULL, "1100 octets");
		free(in);
		in = b64(big, 1000); /* within it: too long a password */
		check_plain(in, -2, NULL, NULL, "1000 octets");
		free(in);
	}
	free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_number),
	    cmocka_unit_test(test_plain),
	    cmocka_unit_test(test_plain_bad_base64),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
