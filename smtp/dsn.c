/* dsn.c - bounce messages (RFC 3464, RFC 6522). see dsn.h */
#include "smtp/dsn.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"

/* A growing output buffer. */
struct buf {
	char *p;
	size_t len, cap;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->p = xrealloc(b->p, b->cap);
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void buf_printf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		fatal("event=oom");
	buf_add(b, s, (size_t)n);
	free(s);
}

size_t dsn_header_len(const char *msg, size_t len)
{
	/* The first line is a header line; the section ends at CRLF CRLF,
	 * or right away when the message starts with an empty line. */
	if (len >= 2 && msg[0] == '\r' && msg[1] == '\n')
		return 2;
	for (size_t i = 0; i + 3 < len; i++)
		if (msg[i] == '\r' && memcmp(msg + i, "\r\n\r\n", 4) == 0)
			return i + 4;
	return len;
}

/* Is the line at msg[i] a field called name (followed by ':')? */
static bool field_is(const char *msg, size_t len, size_t i, const char *name)
{
	size_t n = strlen(name);

	return i + n < len && strncasecmp(msg + i, name, n) == 0 &&
	       msg[i + n] == ':';
}

unsigned dsn_count_received(const char *msg, size_t len)
{
	size_t hl = dsn_header_len(msg, len);
	unsigned count = 0;

	for (size_t i = 0; i < hl;) {
		const char *nl = memchr(msg + i, '\n', hl - i);
		count += field_is(msg, hl, i, "Received");
		if (nl == NULL)
			break;
		i = (size_t)(nl - msg) + 1;
	}
	return count;
}

size_t dsn_return_path_len(const char *msg, size_t len)
{
	size_t i = 0;

	if (!field_is(msg, len, 0, "Return-Path"))
		return 0;
	/* The field and its continuation lines (starting with WSP). */
	do {
		const char *nl = memchr(msg + i, '\n', len - i);
		if (nl == NULL)
			return len;
		i = (size_t)(nl - msg) + 1;
	} while (i < len && (msg[i] == ' ' || msg[i] == '\t'));
	return i;
}

const char *dsn_status(const char *reply, char *buf, size_t n)
{
	const char *p = reply;
	char cls = '5';

	if (isdigit((unsigned char)p[0]) && (p[0] == '4' || p[0] == '5') &&
	    isdigit((unsigned char)p[1]) && isdigit((unsigned char)p[2])) {
		cls = p[0];
		p += 3;
		p += *p == ' ' || *p == '-';
		/* class "." 1*3digit "." 1*3digit, the class matching */
		size_t a = strspn(p + 2, "0123456789");
		if (p[0] == cls && p[1] == '.' && a >= 1 && a <= 3 &&
		    p[2 + a] == '.') {
			size_t b = strspn(p + 3 + a, "0123456789");
			if (b >= 1 && b <= 3 &&
			    (p[3 + a + b] == ' ' || p[3 + a + b] == '\0')) {
				snprintf(buf, n, "%.*s", (int)(3 + a + b), p);
				return buf;
			}
		}
	}
	snprintf(buf, n, "%c.0.0", cls);
	return buf;
}

/* An RFC 5322 date. */
static void dsn_date(time_t t, char *buf, size_t n)
{
	struct tm tm;

	localtime_r(&t, &tm);
	strftime(buf, n, "%a, %d %b %Y %H:%M:%S %z", &tm);
}

char *dsn_build(const struct dsn *d, size_t *len)
{
	struct buf b = {0};
	char boundary[96], now[64], arrival[64], st[16];
	size_t hl, rp;

	snprintf(boundary, sizeof boundary, "%s.%lld/%s", d->id,
		 (long long)d->now, d->hostname);
	dsn_date(d->now, now, sizeof now);
	dsn_date(d->arrival, arrival, sizeof arrival);

	/* Auto-Submitted (RFC 3834): no vacation reply to a bounce. */
	buf_printf(&b,
		   "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n"
		   "To: <%s>\r\n"
		   "Subject: Undelivered Mail Returned to Sender\r\n"
		   "Date: %s\r\n"
		   "Message-Id: <%s.%lld.bounce@%s>\r\n"
		   "Auto-Submitted: auto-replied\r\n"
		   "MIME-Version: 1.0\r\n"
		   "Content-Type: multipart/report; "
		   "report-type=delivery-status;\r\n"
		   "\tboundary=\"%s\"\r\n"
		   "\r\n"
		   "This is a MIME-encapsulated message.\r\n"
		   "\r\n",
		   d->hostname, d->sender, now, d->id, (long long)d->now,
		   d->hostname, boundary);

	/* 1. For a person. */
	buf_printf(&b,
		   "--%s\r\n"
		   "Content-Description: Notification\r\n"
		   "Content-Type: text/plain; charset=utf-8\r\n"
		   "\r\n"
		   "This is the mail system at host %s.\r\n"
		   "\r\n"
		   "I'm sorry to have to inform you that your message could "
		   "not\r\n"
		   "be delivered to one or more recipients. It's attached "
		   "below.\r\n"
		   "\r\n",
		   boundary, d->hostname);
	for (size_t i = 0; i < d->nrcpts; i++) {
		const struct dsn_rcpt *r = &d->rcpts[i];
		if (r->remote != NULL)
			buf_printf(&b, "<%s>: host %s said: %s\r\n\r\n",
				   r->addr, r->remote, r->reply);
		else
			buf_printf(&b, "<%s>: %s\r\n\r\n", r->addr, r->reply);
	}

	/* 2. For programs (RFC 3464 2.2, 2.3). */
	buf_printf(&b,
		   "--%s\r\n"
		   "Content-Description: Delivery report\r\n"
		   "Content-Type: message/delivery-status\r\n"
		   "\r\n"
		   "Reporting-MTA: dns; %s\r\n"
		   "X-Pillarbox-Queue-ID: %s\r\n"
		   "Arrival-Date: %s\r\n",
		   boundary, d->hostname, d->id, arrival);
	for (size_t i = 0; i < d->nrcpts; i++) {
		const struct dsn_rcpt *r = &d->rcpts[i];
		buf_printf(&b,
			   "\r\n"
			   "Final-Recipient: rfc822; %s\r\n"
			   "Original-Recipient: rfc822; %s\r\n"
			   "Action: failed\r\n"
			   "Status: %s\r\n",
			   r->addr, r->addr,
			   dsn_status(r->reply, st, sizeof st));
		if (r->remote != NULL) {
			/* "mx.example.org[192.0.2.1]": the name is the MTA */
			size_t hn = strcspn(r->remote, " [");
			buf_printf(&b,
				   "Remote-MTA: dns; %.*s\r\n"
				   "Diagnostic-Code: smtp; %s\r\n",
				   (int)hn, r->remote, r->reply);
		} else {
			buf_printf(&b, "Diagnostic-Code: X-Pillarbox; %s\r\n",
				   r->reply);
		}
	}

	/* 3. The original header section, without our Return-Path. */
	rp = dsn_return_path_len(d->msg, d->msg_len);
	hl = dsn_header_len(d->msg + rp, d->msg_len - rp);
	if (hl > DSN_HEADERS_MAX) {
		const char *p = d->msg + rp, *nl = p;
		for (const char *q;
		     (q = memchr(nl, '\n',
				 (size_t)(p + DSN_HEADERS_MAX - nl))) != NULL;)
			nl = q + 1;
		hl = (size_t)(nl - p);
	}
	buf_printf(&b,
		   "\r\n--%s\r\n"
		   "Content-Description: Undelivered Message Headers\r\n"
		   "Content-Type: text/rfc822-headers\r\n"
		   "\r\n",
		   boundary);
	buf_add(&b, d->msg + rp, hl);
	if (hl < 2 || memcmp(d->msg + rp + hl - 2, "\r\n", 2) != 0)
		buf_add(&b, "\r\n", 2);
	buf_printf(&b, "\r\n--%s--\r\n", boundary);
	*len = b.len;
	return b.p;
}
