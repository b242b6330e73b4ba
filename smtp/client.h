/*
 * client.h - the SMTP client (RFC 5321): one outbound connection to a mail
 * exchanger or the smarthost, carrying one message after another.
 *
 * The conversation, as a server sees it from us:
 *
 *   S: 220 greeting
 *   C: EHLO our.hostname          (HELO when EHLO gets a 5xx)
 *   C: STARTTLS, EHLO again       (if offered; see client_tls)
 *   C: AUTH PLAIN / LOGIN         (smarthost with a user, RFC 4954)
 *   C: MAIL FROM:<s> [SIZE=n] [BODY=8BITMIME] [SMTPUTF8]
 *   C: RCPT TO:<r> ...            one per recipient: each its own result
 *   C: DATA, the body dot-stuffed, "."
 *   ... MAIL again for the next message, or QUIT.
 *
 * With PIPELINING (RFC 2920) MAIL, every RCPT and DATA go in one write and
 * their replies are read in order; without it each command waits for the
 * reply to the one before. A message is sent only if the peer can take it
 * as it is: one over the peer's SIZE, or one that needs SMTPUTF8 (RFC 6531
 * 3.2: a non-ASCII address or header) to a peer without it, fails at once
 * for all its recipients, with our own reason.
 *
 * Results: every recipient ends CLIENT_DELIVERED (the peer said 250 to the
 * data), CLIENT_TEMP (a 4xx, or the connection failed or was lost before
 * that 250: try again, elsewhere or later) or CLIENT_PERM (a 5xx: bounce).
 * A recipient is delivered only on the 250 after the final "." - so a
 * connection lost at any earlier moment means a new attempt, and a message
 * is sent at least once, never lost.
 *
 * The body is read from the store in pieces of CLIENT_PIECE octets, each in
 * a read transaction of its own (as POP3's RETR): a slow peer holds no
 * snapshot of the store.
 */
#ifndef PILLARBOX_SMTP_CLIENT_H
#define PILLARBOX_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "store/store.h"

#define CLIENT_REPLY_MAX 512  /* a reply kept for a bounce (lines joined) */
#define CLIENT_LINE_MAX	 2048 /* a reply line read; RFC 5321 says 512 */
#define CLIENT_PIECE	 (32u << 10) /* body octets per store read */
#define CLIENT_PEER_MAX	 320	     /* "name[address]" */

enum client_result {
	CLIENT_PENDING,	  /* not yet answered */
	CLIENT_ACCEPTED,  /* RCPT got 2xx; waits for the data's reply */
	CLIENT_DELIVERED, /* the peer took the message for it */
	CLIENT_TEMP,	  /* try again later (or at the next exchanger) */
	CLIENT_PERM,	  /* failed for good: bounce */
};

struct client_rcpt {
	const char *addr;
	enum client_result result;
	bool remote; /* reply is the peer's (else our own reason) */
	char reply[CLIENT_REPLY_MAX];
};

/* One message to send: the caller's, valid until done() has run. */
struct client_msg {
	uint64_t id;	    /* in the store */
	const char *sender; /* "" for <> */
	struct client_rcpt *rcpts;
	size_t nrcpts;
	size_t skip;   /* stored octets not sent (a Return-Path: line) */
	uint64_t size; /* octets sent: the stored length less skip */
	bool utf8;     /* needs SMTPUTF8 (non-ASCII address or header) */
	bool eightbit; /* the body has octets over 127: BODY=8BITMIME */
};

/* TLS to the peer (STARTTLS, RFC 3207): opportunistic for exchangers
 * (when offered, any certificate: RFC 7435), required and verified for
 * the smarthost (its chain to the trust store, its name). */
enum client_tls {
	CLIENT_TLS_OPPORTUNISTIC,
	CLIENT_TLS_REQUIRED,
};

/* The caller's; strings must stay valid until closed() has run. */
struct client_params {
	struct store *st;
	const char *helo;      /* our name, for EHLO */
	const char *peer_name; /* the exchanger's name: logs, TLS */
	const char *auth_user; /* NULL: no AUTH */
	const char *auth_pass;
	enum client_tls tls;
	bool no_starttls; /* opportunistic TLS failed here before: clear */
	unsigned connect_timeout, command_timeout; /* seconds */
};

struct client_ops {
	/* The next message for this connection, or NULL: QUIT. */
	struct client_msg *(*next)(void *arg);
	/* m's transaction is over: every recipient has its result. */
	void (*done)(void *arg, struct client_msg *m);
	/* The connection is gone (from the loop, never inside
	 * client_start). error: NULL after a QUIT, else why it ended
	 * ("connect to mx[192.0.2.1]: connection refused"); a message that
	 * was under way got done() first, with CLIENT_TEMP. tls_failed: it
	 * ended in the TLS handshake. */
	void (*closed)(void *arg, const char *error, bool tls_failed);
};

struct client;

/* Connects to addr (its port set) and runs the conversation above. */
struct client *client_start(const struct sockaddr *addr,
			    const struct client_params *p,
			    const struct client_ops *ops, void *arg);

/* Ends the connection now (the server stops): done() for a message under
 * way (CLIENT_TEMP), then closed(). */
void client_abort(struct client *cl);

/* "name[address]" of the peer, for logs and bounces. */
const char *client_peer(const struct client *cl);

#endif
