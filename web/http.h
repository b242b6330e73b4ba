/*
 * http.h - HTTP/1.1 requests, read with http_parser (Debian's
 * libhttp-parser: never parsed by hand), one at a time, resuming across
 * reads; and the status texts of the replies.
 *
 * The reader is independent of the connection: it is fed whatever input
 * has arrived, says how much of it it used, and hands over a complete
 * request, which owns copies of everything the server looks at (so the
 * input buffer may move on). Pipelined requests wait in the input until the
 * caller asks for the next one.
 *
 * Limits (a request past one is refused and the connection closed):
 *   HTTP_HEAD_MAX   request line and headers together      431
 *   HTTP_URL_MAX    the request target                     414
 *   HTTP_VALUE_MAX  one header value the server keeps      431
 *   HTTP_BODY_MAX   the body (Content-Length or chunked)   413
 */
#ifndef PILLARBOX_WEB_HTTP_H
#define PILLARBOX_WEB_HTTP_H

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>

#define HTTP_HEAD_MAX  8192 /* nginx's large_client_header_buffers: 8k */
#define HTTP_URL_MAX   2048 /* a path with an address and a query */
#define HTTP_VALUE_MAX 1024 /* a Cookie with our one session id, a Host */
#define HTTP_BODY_MAX  (64u << 10) /* API bodies are a few hundred octets */

/* The headers the server reads; others are parsed and dropped. */
#define HTTP_HEADERS(X)                                                        \
	X(HOST, "host")                                                        \
	X(COOKIE, "cookie")                                                    \
	X(CONTENT_TYPE, "content-type")                                        \
	X(CSRF, "x-csrf-token")                                                \
	X(ORIGIN, "origin")

enum http_header {
#define X(e, name) HTTP_H_##e,
	HTTP_HEADERS(X)
#undef X
	    HTTP_H_COUNT
};

struct http_request {
	enum http_method method;
	bool keep_alive; /* the client wants the connection kept */
	bool http10;	 /* HTTP/1.0: keep-alive must be said (RFC 9112 9.3) */
	char url[HTTP_URL_MAX + 1];
	size_t url_len;
	/* Each header the server reads, "" when absent; a repeated one is
	 * joined with ", " (RFC 9110 5.3), within HTTP_VALUE_MAX. */
	char hdr[HTTP_H_COUNT][HTTP_VALUE_MAX + 1];
	char *body; /* NUL-terminated; NULL when there is none */
	size_t body_len;
};

/* Frees a request from http_read. NULL is a no-op. */
void http_request_free(struct http_request *req);

enum http_read {
	HTTP_READ_AGAIN,   /* all input used; no complete request yet */
	HTTP_READ_REQUEST, /* *req is a complete request, now the caller's */
	HTTP_READ_ERROR,   /* a bad request: answer *status, then close */
};

struct http_reader {
	http_parser p;
	struct http_request *req; /* being read; NULL between requests */
	size_t head_len;	  /* octets of the head so far */
	int field;		  /* header being read: enum http_header, -1 */
	bool in_value;		  /* the last callback was a value */
	char name[32];		  /* the header name so far (lower-cased) */
	size_t name_len;
	size_t body_cap;
	int status; /* the refusal's status, once there is one */
	bool done;  /* the request is complete */
};

/* Makes r ready for a connection's first request. */
void http_reader_init(struct http_reader *r);
/* Frees a request half read. */
void http_reader_free(struct http_reader *r);

/* Reads from p[0..n): *used octets were taken (also on AGAIN, where they
 * are all of n). On HTTP_READ_REQUEST the next request starts after them;
 * on HTTP_READ_ERROR *status is 400, 405, 413, 414, 431 or 501. */
enum http_read http_read(struct http_reader *r, const char *p, size_t n,
			 size_t *used, struct http_request **req, int *status);

/* The reason phrase of a status code ("Not Found"). */
const char *http_status_text(int status);

#endif
