/* test_web_http.c - the HTTP request reader (web/http.c) and the log ring
 * (core/logring.c). Requests are fed whole, byte by byte, and cut in two at
 * every offset; every cut must give the same requests. Inputs are heap
 * copies of exactly their length, so ASan catches a read past them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "web/http.h"
#include "core/logring.h"

/* What the reader made of an input: the requests as one text, and the
 * refusal's status (0: none). */
struct outcome {
	char text[8192];
	int status;
	int requests;
};

static void describe(struct outcome *o, const struct http_request *q)
{
	size_t n = strlen(o->text);

	snprintf(o->text + n, sizeof o->text - n,
		 "[%d %s ka=%d host=%s cookie=%s type=%s csrf=%s body=%s]",
		 (int)q->method, q->url, q->keep_alive, q->hdr[HTTP_H_HOST],
		 q->hdr[HTTP_H_COOKIE], q->hdr[HTTP_H_CONTENT_TYPE],
		 q->hdr[HTTP_H_CSRF], q->body ? q->body : "-");
	o->requests++;
}

/* Feeds in[0..n) in pieces: the first `cut` octets, then `step` at a time
 * (step 0: the rest at once). Like the connection layer, input not used
 * stays and more is appended to it. */
static void feed(const char *in, size_t n, size_t cut, size_t step,
		 struct outcome *o)
{
	struct http_reader r;
	char *buf = malloc(n ? n : 1);
	size_t have = 0, off = 0;

	memset(o, 0, sizeof *o);
	http_reader_init(&r);
	while (off < n || have > off) {
		size_t more = have == 0 && cut ? cut : step ? step : n - have;
		if (have < n && (have == off || more)) {
			if (have + more > n)
				more = n - have;
			memcpy(buf + have, in + have, more);
			have += more;
		}
		struct http_request *q = NULL;
		size_t used;
		int status;
		/* A copy of exactly the available bytes: ASan sees overreads.
		 */
		size_t avail = have - off;
		char *piece = malloc(avail ? avail : 1);
		memcpy(piece, buf + off, avail);
		enum http_read e =
		    http_read(&r, piece, avail, &used, &q, &status);
		free(piece);
		off += used;
		if (e == HTTP_READ_REQUEST) {
			describe(o, q);
			http_request_free(q);
			continue;
		}
		if (e == HTTP_READ_ERROR) {
			o->status = status;
			break;
		}
		if (have == n && off == n)
			break;
		assert_true(off == have); /* AGAIN uses all it is given */
	}
	http_reader_free(&r);
	free(buf);
}

/* Every way of cutting in must read like the whole. */
static void check_all_cuts(const char *in, const char *want, int status)
{
	size_t n = strlen(in);
	struct outcome whole, o;

	feed(in, n, 0, 0, &whole);
	if (want != NULL)
		assert_string_equal(whole.text, want);
	assert_int_equal(whole.status, status);
	feed(in, n, 0, 1, &o);
	assert_string_equal(o.text, whole.text);
	assert_int_equal(o.status, whole.status);
	for (size_t cut = 1; cut < n; cut++) {
		feed(in, n, cut, 0, &o);
		assert_string_equal(o.text, whole.text);
		assert_int_equal(o.status, whole.status);
	}
}

static void test_pipelined(void **state)
{
	(void)state;
	check_all_cuts(
	    "GET /api/users HTTP/1.1\r\nHost: a:8080\r\nCookie: x=1; "
	    "pb_session=abc\r\n\r\n"
	    "POST /api/users HTTP/1.1\r\nHost: a\r\nContent-Type: "
	    "application/json\r\nX-CSRF-Token: t0k\r\nContent-Length: "
	    "7\r\n\r\n{\"a\":1}"
	    "DELETE /api/users/b%40x HTTP/1.0\r\n\r\n",
	    "[1 /api/users ka=1 host=a:8080 cookie=x=1; pb_session=abc type= "
	    "csrf= body=-][3 /api/users ka=1 host=a cookie= "
	    "type=application/json csrf=t0k body={\"a\":1}][0 "
	    "/api/users/b%40x ka=0 host= cookie= type= csrf= body=-]",
	    0);
}

static void test_chunked_and_case(void **state)
{
	(void)state;
	check_all_cuts("POST /x HTTP/1.1\r\nhOsT: h\r\nTransfer-Encoding: "
		       "chunked\r\nCONNECTION: close\r\n\r\n3\r\nabc\r\n2\r\n"
		       "de\r\n0\r\n\r\n",
		       "[3 /x ka=0 host=h cookie= type= csrf= body=abcde]", 0);
	/* A repeated header is one list (RFC 9110 5.3). */
	check_all_cuts("GET / HTTP/1.1\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
		       "[1 / ka=1 host= cookie=a=1, b=2 type= csrf= body=-]",
		       0);
}

static void test_refused(void **state)
{
	char *big;
	size_t n;

	(void)state;
	check_all_cuts("BREW /pot HTTP/1.1\r\n\r\n", "", 501);
	check_all_cuts("GET / HTTP/1.1\r\nBad Header\r\n\r\n", "", 400);
	check_all_cuts("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: "
		       "Upgrade\r\n\r\n",
		       "", 501);
	/* Smuggling: both lengths, or a broken one. */
	check_all_cuts("POST / HTTP/1.1\r\nContent-Length: 3\r\n"
		       "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		       "", 400);
	check_all_cuts("POST / HTTP/1.1\r\nContent-Length: 3x\r\n\r\nabc", "",
		       400);
	/* Oversized body, announced or chunked. */
	check_all_cuts("POST / HTTP/1.1\r\nContent-Length: 70000\r\n\r\n", "",
		       413);
	n = HTTP_BODY_MAX + 200;
	big = malloc(n + 200);
	n = (size_t)sprintf(big,
			    "POST / HTTP/1.1\r\nTransfer-Encoding: "
			    "chunked\r\n\r\n%x\r\n",
			    HTTP_BODY_MAX + 1);
	memset(big + n, 'a', HTTP_BODY_MAX + 1);
	big[n + HTTP_BODY_MAX + 1] = '\0';
	{
		struct outcome o;
		feed(big, strlen(big), 0, 0, &o);
		assert_int_equal(o.status, 413);
		feed(big, strlen(big), 0, 4096, &o);
		assert_int_equal(o.status, 413);
	}
	/* Oversized head, URL and header value. */
	n = (size_t)sprintf(big, "GET /");
	memset(big + n, 'u', HTTP_URL_MAX);
	strcpy(big + n + HTTP_URL_MAX, " HTTP/1.1\r\n\r\n");
	{
		struct outcome o;
		feed(big, strlen(big), 0, 0, &o);
		assert_int_equal(o.status, 414);
		feed(big, strlen(big), 0, 1, &o);
		assert_int_equal(o.status, 414);
	}
	n = (size_t)sprintf(big, "GET / HTTP/1.1\r\nCookie: ");
	memset(big + n, 'c', HTTP_VALUE_MAX + 1);
	strcpy(big + n + HTTP_VALUE_MAX + 1, "\r\n\r\n");
	{
		struct outcome o;
		feed(big, strlen(big), 0, 0, &o);
		assert_int_equal(o.status, 431);
	}
	free(big);
	big = malloc(HTTP_HEAD_MAX + 200);
	/* Many short headers: it is the head's size that counts. */
	n = (size_t)sprintf(big, "GET / HTTP/1.1\r\n");
	while (n < HTTP_HEAD_MAX + 50)
		n += (size_t)sprintf(big + n, "X-Filler: %040d\r\n", 0);
	strcpy(big + n, "\r\n");
	{
		struct outcome o;
		feed(big, strlen(big), 0, 0, &o);
		assert_int_equal(o.status, 431);
		feed(big, strlen(big), 0, 7, &o);
		assert_int_equal(o.status, 431);
	}
	free(big);
}

/* A request after a refusal is never read: the connection closes. */
static void test_error_sticks(void **state)
{
	struct http_reader r;
	struct http_request *q = NULL;
	size_t used;
	int status = 0;
	const char bad[] = "GET / HTTP/1.1\r\nBad Header\r\n\r\n";
	const char good[] = "GET / HTTP/1.1\r\n\r\n";

	(void)state;
	http_reader_init(&r);
	assert_int_equal(http_read(&r, bad, sizeof bad - 1, &used, &q, &status),
			 HTTP_READ_ERROR);
	status = 0;
	assert_int_equal(
	    http_read(&r, good, sizeof good - 1, &used, &q, &status),
	    HTTP_READ_ERROR);
	assert_int_equal(status, 400);
	http_reader_free(&r);
}

static void collect(const char *line, void *arg)
{
	strcat(arg, line);
	strcat(arg, "|");
}

static void test_logring(void **state)
{
	struct logring *r = logring_new(3, 16);
	char out[256] = "";

	(void)state;
	logring_add(r, "a sid=1 x\n", 10);
	logring_add(r, "b sid=12 y@z\n", 13);
	logring_add(r, "c sid=1 y@z\n", 12);
	logring_add(r, "d sid=1 0123456789abcdef\n", 25); /* cut at 16 */
	logring_each(r, NULL, NULL, 10, collect, out);
	assert_string_equal(out, "b sid=12 y@z|c sid=1 y@z|d sid=1 01234567|");
	out[0] = '\0';
	logring_each(r, "1", NULL, 10, collect, out); /* not sid=12 */
	assert_string_equal(out, "c sid=1 y@z|d sid=1 01234567|");
	out[0] = '\0';
	logring_each(r, NULL, "y@z", 1, collect, out); /* the newest one */
	assert_string_equal(out, "c sid=1 y@z|");
	logring_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pipelined),
	    cmocka_unit_test(test_chunked_and_case),
	    cmocka_unit_test(test_refused),
	    cmocka_unit_test(test_error_sticks),
	    cmocka_unit_test(test_logring),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
