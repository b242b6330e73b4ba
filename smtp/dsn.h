/*
 * dsn.h - delivery status notifications (bounces, RFC 3464): the message
 * that tells a sender which recipients could not be reached and why. Pure
 * functions over bytes, so they are unit-tested alone; smtp/deliver.c
 * decides when to send one and where it goes.
 *
 * A bounce is a multipart/report (RFC 6522) of three parts:
 *   1. text/plain: a few lines for a person, each failed recipient with
 *      the remote server's reply;
 *   2. message/delivery-status: the same for programs, one block per
 *      recipient (Final-Recipient, Action, Status, Remote-MTA,
 *      Diagnostic-Code);
 *   3. text/rfc822-headers: the original message's header section, so
 *      the sender can tell which message it was (not its body: a bounce
 *      must not carry the spam it answers back out).
 * It goes to the envelope sender with the null sender <> as its own, so
 * that a bounce can never cause another (RFC 5321 4.5.5, 6.1).
 */
#ifndef PILLARBOX_SMTP_DSN_H
#define PILLARBOX_SMTP_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* Received: headers above which a message is looping (RFC 5321 6.3
 * leaves the number to us; Postfix's hopcount_limit is 50, Exim's 100 and
 * the issue says 30: no real path is that long). */
#define DSN_HOPS_MAX 30
/* Header octets copied into the third part at most: headers beyond are
 * cut (at a line's end), as Postfix does with its bounce_size_limit. */
#define DSN_HEADERS_MAX (64u << 10)

/* One failed recipient. */
struct dsn_rcpt {
	const char *addr;   /* as the sender gave it at RCPT */
	const char *remote; /* the server that refused it ("mx.example.org
			     * [192.0.2.1]"), or NULL when we gave up
			     * ourselves (DNS, loop, too old) */
	const char *reply;  /* the remote reply ("550 5.1.1 No such user")
			     * or our own reason; one line */
};

struct dsn {
	const char *hostname; /* ours: the Reporting-MTA and From: */
	const char *sender;   /* the envelope sender the bounce goes to */
	const char *id;	      /* the queued message's id, for Message-Id */
	time_t arrival, now;
	const char *msg; /* the original message (header section used) */
	size_t msg_len;
	const struct dsn_rcpt *rcpts;
	size_t nrcpts;
};

/* Builds the bounce (header and body, CRLF line ends, no trace headers)
 * into a malloc'd buffer and returns it; its length in *len. */
char *dsn_build(const struct dsn *d, size_t *len);

/* The enhanced status code (RFC 3463) of a reply ("550 5.1.1 ..." ->
 * "5.1.1") into buf (at least 16 octets); a reply without one gets the
 * class's generic code ("550 ..." -> "5.0.0"; not a reply: "5.0.0"). */
const char *dsn_status(const char *reply, char *buf, size_t n);

/* Length of msg's header section, up to and including the empty line
 * that ends it (the whole message when there is none). */
size_t dsn_header_len(const char *msg, size_t len);

/* Number of "Received:" fields in msg's header section (any case). */
unsigned dsn_count_received(const char *msg, size_t len);

/* Length of a leading "Return-Path:" field (with its folded lines) at
 * msg, else 0: a relay drops it (RFC 5321 4.4: only the final delivery
 * adds one). */
size_t dsn_return_path_len(const char *msg, size_t len);

#endif
