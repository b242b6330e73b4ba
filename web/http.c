/* http.c - HTTP/1.1 request reader over http_parser. see http.h */
#include "web/http.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

static const char *const header_names[HTTP_H_COUNT] = {
#define X(e, name) name,
    HTTP_HEADERS(X)
#undef X
};

void http_request_free(struct http_request *req)
{
	if (req == NULL)
		return;
	free(req->body);
	free(req);
}

void http_reader_init(struct http_reader *r)
{
	memset(r, 0, sizeof *r);
	http_parser_init(&r->p, HTTP_REQUEST);
	r->p.data = r;
	r->field = -1;
}

void http_reader_free(struct http_reader *r)
{
	http_request_free(r->req);
	r->req = NULL;
}

/* Every callback refuses by setting the status and returning non-zero,
 * which stops the parser. */
static int refuse(struct http_reader *r, int status)
{
	if (r->status == 0)
		r->status = status;
	return -1;
}

static int head_add(struct http_reader *r, size_t n)
{
	r->head_len += n;
	return r->head_len > HTTP_HEAD_MAX ? refuse(r, 431) : 0;
}

static int on_message_begin(http_parser *p)
{
	struct http_reader *r = p->data;

	r->req = xcalloc(1, sizeof *r->req);
	r->head_len = r->name_len = r->body_cap = 0;
	r->field = -1;
	r->in_value = false;
	r->done = false;
	return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
	struct http_reader *r = p->data;
	struct http_request *q = r->req;

	if (head_add(r, n) < 0)
		return -1;
	if (q->url_len + n > HTTP_URL_MAX)
		return refuse(r, 414);
	memcpy(q->url + q->url_len, at, n);
	q->url_len += n;
	q->url[q->url_len] = '\0';
	return 0;
}

/* A name arrives in pieces; the value that follows decides nothing until
 * the name is whole, so the lookup happens at the value's first piece. */
static int on_header_field(http_parser *p, const char *at, size_t n)
{
	struct http_reader *r = p->data;

	if (head_add(r, n) < 0)
		return -1;
	if (r->in_value) {
		r->in_value = false;
		r->name_len = 0;
	}
	for (size_t i = 0; i < n; i++) {
		if (r->name_len < sizeof r->name - 1)
			r->name[r->name_len] =
			    (char)tolower((unsigned char)at[i]);
		r->name_len++; /* a longer name matches none of ours */
	}
	return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
	struct http_reader *r = p->data;
	char *v;
	size_t len;

	if (head_add(r, n) < 0)
		return -1;
	if (!r->in_value) {
		/* ": " and CRLF: the head's octets, near enough to exact */
		if (head_add(r, 4) < 0)
			return -1;
		r->in_value = true;
		r->field = -1;
		if (r->name_len < sizeof r->name) {
			r->name[r->name_len] = '\0';
			for (int i = 0; i < HTTP_H_COUNT; i++)
				if (strcmp(r->name, header_names[i]) == 0)
					r->field = i;
		}
		if (r->field >= 0 && r->req->hdr[r->field][0] != '\0') {
			/* A repeat: joined as one list. */
			v = r->req->hdr[r->field];
			len = strlen(v);
			if (len + 2 > HTTP_VALUE_MAX)
				return refuse(r, 431);
			memcpy(v + len, ", ", 3);
		}
	}
	if (r->field < 0)
		return 0;
	v = r->req->hdr[r->field];
	len = strlen(v);
	if (len + n > HTTP_VALUE_MAX)
		return refuse(r, 431);
	/* http_parser refuses NUL and controls in values; keep it so. */
	if (memchr(at, '\0', n) != NULL)
		return refuse(r, 400);
	memcpy(v + len, at, n);
	v[len + n] = '\0';
	return 0;
}

static int on_headers_complete(http_parser *p)
{
	struct http_reader *r = p->data;

	if (p->upgrade || p->method == HTTP_CONNECT)
		return refuse(r, 501); /* no WebSocket, no tunnel */
	/* content_length is ULLONG_MAX without a Content-Length. */
	if ((p->flags & F_CONTENTLENGTH) && p->content_length > HTTP_BODY_MAX)
		return refuse(r, 413);
	r->req->method = (enum http_method)p->method;
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
	struct http_reader *r = p->data;
	struct http_request *q = r->req;

	if (q->body_len + n > HTTP_BODY_MAX)
		return refuse(r, 413);
	if (q->body_len + n + 1 > r->body_cap) {
		r->body_cap = q->body_len + n + 1;
		if ((p->flags & F_CONTENTLENGTH) &&
		    p->content_length + q->body_len + 1 > r->body_cap)
			r->body_cap = q->body_len + p->content_length + 1;
		q->body = xrealloc(q->body, r->body_cap);
	}
	memcpy(q->body + q->body_len, at, n);
	q->body_len += n;
	q->body[q->body_len] = '\0';
	return 0;
}

/* One request at a time: the parser stops here, after the request's last
 * octet, and the next call goes on from there. */
static int on_message_complete(http_parser *p)
{
	struct http_reader *r = p->data;

	r->req->keep_alive = http_should_keep_alive(p) != 0;
	r->req->http10 = p->http_major == 1 && p->http_minor == 0;
	r->done = true;
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

enum http_read http_read(struct http_reader *r, const char *p, size_t n,
			 size_t *used, struct http_request **req, int *status)
{
	enum http_errno e;

	*used = 0;
	if (r->status != 0) {
		*status = r->status;
		return HTTP_READ_ERROR;
	}
	if (HTTP_PARSER_ERRNO(&r->p) == HPE_PAUSED)
		http_parser_pause(&r->p, 0);
	if (n == 0)
		return HTTP_READ_AGAIN;
	*used = http_parser_execute(&r->p, &settings, p, n);
	e = HTTP_PARSER_ERRNO(&r->p);
	if (r->done) {
		r->done = false;
		*req = r->req;
		r->req = NULL;
		return HTTP_READ_REQUEST;
	}
	if (e != HPE_OK || r->status != 0) {
		if (r->status == 0)
			r->status = e == HPE_INVALID_METHOD    ? 501
				    : e == HPE_HEADER_OVERFLOW ? 431
							       : 400;
		*status = r->status;
		return HTTP_READ_ERROR;
	}
	return HTTP_READ_AGAIN;
}

const char *http_status_text(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 204:
		return "No Content";
	case 304:
		return "Not Modified";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 409:
		return "Conflict";
	case 413:
		return "Content Too Large";
	case 414:
		return "URI Too Long";
	case 415:
		return "Unsupported Media Type";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 503:
		return "Service Unavailable";
	case 507:
		return "Insufficient Storage";
	default:
		return "Unknown";
	}
}
