/* test_dsn.c - bounce messages (RFC 3464): the three parts, status codes
 * taken from replies, the original headers without the body, and the
 * header scans (Received: count for loops, Return-Path: length). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp/dsn.h"

static const char msg[] = "Return-Path: <alice@example.org>\r\n"
			  "Received: from a by b; Mon, 1 Jan 2024 00:00:00 "
			  "+0000\r\n"
			  "Subject: the report\r\n"
			  "Message-Id: <m1@example.org>\r\n"
			  "\r\n"
			  "the body, which must not come back\r\n";

static void test_status(void **state)
{
	char b[16];

	(void)state;
	assert_string_equal(dsn_status("550 5.1.1 no such user", b, sizeof b),
			    "5.1.1");
	assert_string_equal(dsn_status("452 4.2.2 mailbox full", b, sizeof b),
			    "4.2.2");
	assert_string_equal(dsn_status("554 5.7.1", b, sizeof b), "5.7.1");
	assert_string_equal(dsn_status("550-5.1.10 null", b, sizeof b),
			    "5.1.10");
	assert_string_equal(dsn_status("550 no such user", b, sizeof b),
			    "5.0.0");
	assert_string_equal(dsn_status("451 try later", b, sizeof b), "4.0.0");
	/* the class must match; junk is 5.0.0 */
	assert_string_equal(dsn_status("550 4.1.1 odd", b, sizeof b), "5.0.0");
	assert_string_equal(dsn_status("550 5.1234.1 x", b, sizeof b), "5.0.0");
	assert_string_equal(dsn_status("delivery time expired", b, sizeof b),
			    "5.0.0");
}

static void test_header_scans(void **state)
{
	size_t rp = dsn_return_path_len(msg, sizeof msg - 1);
	char loop[4096] = "";

	(void)state;
	assert_int_equal(rp, strlen("Return-Path: <alice@example.org>\r\n"));
	assert_int_equal(dsn_return_path_len(msg + rp, sizeof msg - 1 - rp), 0);
	assert_int_equal(dsn_header_len(msg, sizeof msg - 1),
			 strstr(msg, "the body") - msg);
	assert_int_equal(dsn_count_received(msg, sizeof msg - 1), 1);
	/* folded Return-Path */
	assert_int_equal(
	    dsn_return_path_len("Return-Path:\r\n <a@b>\r\nX: y\r\n", 27),
	    strlen("Return-Path:\r\n <a@b>\r\n"));
	/* a Received: in the body does not count */
	for (int i = 0; i < 31; i++)
		strcat(loop, "received: from x\r\n");
	strcat(loop, "\r\nReceived: in the body\r\n");
	assert_int_equal(dsn_count_received(loop, strlen(loop)), 31);
	assert_int_equal(dsn_header_len("\r\nbody\r\n", 8), 2);
	assert_int_equal(dsn_header_len("X: no body\r\n", 12), 12);
}

static void test_build(void **state)
{
	const struct dsn_rcpt r[] = {
	    {"bob@remote.example", "mx1.remote.example[192.0.2.1]",
	     "550 5.1.1 <bob@remote.example>: no such user"},
	    {"carol@gone.example", NULL,
	     "550 5.1.2 gone.example: host or domain name not found"},
	};
	struct dsn d = {.hostname = "mail.example.org",
			.sender = "alice@example.org",
			.id = "00000000000000a1",
			.arrival = 1700000000,
			.now = 1700000100,
			.msg = msg,
			.msg_len = sizeof msg - 1,
			.rcpts = r,
			.nrcpts = 2};
	size_t len;
	char *b = dsn_build(&d, &len), *p;

	(void)state;
	assert_int_equal(strlen(b), len);
	assert_non_null(strstr(b, "To: <alice@example.org>\r\n"));
	assert_non_null(strstr(b, "From: Mail Delivery System "
				  "<MAILER-DAEMON@mail.example.org>\r\n"));
	assert_non_null(strstr(b, "Auto-Submitted: auto-replied\r\n"));
	assert_non_null(
	    strstr(b, "Content-Type: multipart/report; "
		      "report-type=delivery-status;\r\n\tboundary=\""));
	/* the human part names each recipient and the remote reply */
	assert_non_null(strstr(b, "<bob@remote.example>: host "
				  "mx1.remote.example[192.0.2.1] said: 550 "
				  "5.1.1 <bob@remote.example>: no such user"));
	/* the machine part */
	assert_non_null(strstr(b, "Reporting-MTA: dns; mail.example.org\r\n"));
	assert_non_null(strstr(b, "Final-Recipient: rfc822; bob@remote.example"
				  "\r\n"));
	assert_non_null(strstr(b, "Action: failed\r\nStatus: 5.1.1\r\n"
				  "Remote-MTA: dns; mx1.remote.example\r\n"
				  "Diagnostic-Code: smtp; 550 5.1.1"));
	assert_non_null(strstr(b, "Status: 5.1.2\r\nDiagnostic-Code: "
				  "X-Pillarbox; 550 5.1.2"));
	/* the original headers, without its Return-Path and its body */
	p = strstr(b, "Content-Type: text/rfc822-headers\r\n\r\n");
	assert_non_null(p);
	p += strlen("Content-Type: text/rfc822-headers\r\n\r\n");
	assert_true(strncmp(p, "Received: from a by b", 21) == 0);
	assert_non_null(strstr(p, "Subject: the report\r\n"));
	assert_null(strstr(b, "the body"));
	assert_null(strstr(b, "Return-Path"));
	/* every line ends in CRLF, and the last boundary closes it */
	for (size_t i = 0; i < len; i++)
		if (b[i] == '\n')
			assert_int_equal(b[i - 1], '\r');
	assert_non_null(strstr(b, "--\r\n"));
	assert_true(len > 4 && strcmp(b + len - 4, "--\r\n") == 0);
	free(b);
}

/* A header section too large is cut at a line end. */
static void test_big_headers_cut(void **state)
{
	size_t n = DSN_HEADERS_MAX * 2 / 21 * 21, len;
	char *m = malloc(n + 16), *b;
	const struct dsn_rcpt r = {"x@y.example", NULL, "550 5.0.0 no"};
	struct dsn d = {.hostname = "h",
			.sender = "s@h",
			.id = "1",
			.rcpts = &r,
			.nrcpts = 1};

	(void)state;
	for (size_t i = 0; i < n; i += 21)
		memcpy(m + i, "X-Filler: 123456789\r\n", 21);
	memcpy(m + n, "\r\nbody\r\n", 8);
	d.msg = m;
	d.msg_len = n + 8;
	b = dsn_build(&d, &len);
	assert_true(len < DSN_HEADERS_MAX + 4096);
	assert_null(strstr(b, "body\r\n"));
	assert_non_null(strstr(b, "X-Filler: 123456789\r\n\r\n--"));
	free(b);
	free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_status),
	    cmocka_unit_test(test_header_scans),
	    cmocka_unit_test(test_build),
	    cmocka_unit_test(test_big_headers_cut),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
