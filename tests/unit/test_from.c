/* test_from.c - the From: field parser (smtp/from.c) of the sender check.
 * Every input is a heap copy of exactly its length, so ASan catches a read
 * past the end; every prefix of every input is parsed too (a header
 * section cut anywhere must never be read past). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp/from.h"

#define S(lit) lit, sizeof(lit) - 1

struct from_case {
	const char *head;
	size_t n;
	bool utf8;
	int want; /* mailboxes, or -1 */
	/* the mailboxes as addr_format_sent writes them, ";"-joined */
	const char *addrs;
};

static const struct from_case cases[] = {
    {S("From: alice@localhost\r\n\r\n"), false, 1, "alice@localhost"},
    {S("From:alice@localhost"), false, 1, "alice@localhost"},
    {S("From: Alice <alice@localhost>\r\n"), false, 1, "alice@localhost"},
    {S("from :  \"Smith, Alice\" <Alice@LOCALHOST.>\r\n"), false, 1,
     "Alice@localhost"},
    {S("Subject: x\r\nFROM: Alice\r\n <alice@localhost>\r\n\r\n"), false, 1,
     "alice@localhost"},
    {S("From: alice@localhost (Alice (the) one, <x@y>)\r\n"), false, 1,
     "alice@localhost"},
    {S("From: (a comment) <alice@localhost> (another)\r\n"), false, 1,
     "alice@localhost"},
    {S("From: a@x, \"B, <b>\" <b@y>,\r\n\tc@z\r\n"), false, 3, "a@x;b@y;c@z"},
    {S("From: a@x,,b@y,\r\n"), false, 2, "a@x;b@y"},
    {S("Subject: x\r\nFrom: a@x\r\nFrom: b@y\r\n"), false, 1, "a@x"},
    {S("X-From: a@x\r\nResent-From: c@z\r\nFrom: b@y\r\n"), false, 1, "b@y"},
    {S("From: \"a b\"@x\r\n"), false, 1, "\"a b\"@x"},
    {S("From: <\"a>b,c\"@x>\r\n"), false, 1, "\"a>b,c\"@x"},
    {S("From: a@[192.0.2.1]\r\n"), false, 1, "a@[192.0.2.1]"},
    {S("From: =?utf-8?q?J=C3=B6rg?= <j@x>\r\n"), false, 1, "j@x"},
    {S("From: J\xc3\xb6rg <j@x>\r\n"), false, 1, "j@x"},
    {S("From: j\xc3\xb6rg@x\r\n"), true, 1, "j\xc3\xb6rg@x"},
    {S("From: 1@x,2@x,3@x,4@x,5@x,6@x,7@x,8@x\r\n"), false, 8,
     "1@x;2@x;3@x;4@x;5@x;6@x;7@x;8@x"},
    {S("From: < a@x (c) >\r\n"), false, 1, "a@x"},
    /* Not understood, or none. */
    {S("Subject: x\r\n\r\n"), false, -1, NULL},
    {S(""), false, -1, NULL},
    {S("Subject: x\r\n From: a@x\r\n"), false, -1, NULL}, /* folded */
    {S("X-From: a@x\r\n"), false, -1, NULL},
    {S("From a@x\r\n"), false, -1, NULL},
    {S("From: \r\n"), false, -1, NULL},
    {S("From: <>\r\n"), false, -1, NULL},
    {S("From: undisclosed-recipients:;\r\n"), false, -1, NULL},
    {S("From: team: a@x, b@y;\r\n"), false, -1, NULL},
    {S("From: <a@x\r\n"), false, -1, NULL},
    {S("From: a@x>\r\n"), false, -1, NULL},
    {S("From: \"a <a@x>\r\n"), false, -1, NULL},
    {S("From: (a <a@x>\r\n"), false, -1, NULL},
    {S("From: A <a@x> <b@y>\r\n"), false, -1, NULL},
    {S("From: <a@x> trailing\r\n"), false, -1, NULL},
    {S("From: <<a@x>>\r\n"), false, -1, NULL},
    {S("From: a b@x\r\n"), false, -1, NULL},
    {S("From: alice\r\n"), false, -1, NULL},
    {S("From: <@route:a@x>\r\n"), false, -1, NULL},
    {S("From: a@x@y\r\n"), false, -1, NULL},
    {S("From: <a (c)@x>\r\n"), false, -1, NULL},
    {S("From: j\xc3\xb6rg@x\r\n"), false, -1, NULL}, /* no SMTPUTF8 */
    {S("From: 1@x,2@x,3@x,4@x,5@x,6@x,7@x,8@x,9@x\r\n"), false, -1, NULL},
};

static int parse_copy(const char *head, size_t n, bool utf8, struct addr *out)
{
	char *copy = malloc(n ? n : 1);
	int r;

	assert_non_null(copy);
	memcpy(copy, head, n);
	r = from_parse(copy, n, utf8, out);
	free(copy);
	return r;
}

static void test_cases(void **state)
{
	struct addr out[FROM_MAILBOXES_MAX];

	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		const struct from_case *c = &cases[i];
		char got[1024] = "", one[400];
		int r = parse_copy(c->head, c->n, c->utf8, out);

		for (int k = 0; k < r; k++) {
			assert_true(
			    addr_format_sent(&out[k], one, sizeof one) >= 0);
			strcat(got, k ? ";" : "");
			strcat(got, one);
		}
		if (r != c->want ||
		    (c->addrs != NULL && strcmp(got, c->addrs) != 0))
			fail_msg("case %zu: got %d \"%s\", want %d \"%s\"", i,
				 r, got, c->want, c->addrs ? c->addrs : "");
	}
}

/* A header section cut anywhere: no read past its end, whatever the
 * result. */
static void test_prefixes(void **state)
{
	struct addr out[FROM_MAILBOXES_MAX];

	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
		for (size_t n = 0; n <= cases[i].n; n++)
			(void)parse_copy(cases[i].head, n, true, out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cases),
	    cmocka_unit_test(test_prefixes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
