/*
 * session.h - what the files of smtp/ share and nobody else sees: the
 * session and transaction structs and the reply helpers every command
 * uses. smtp.c runs sessions (the command table, the mail transaction, the
 * relay decision per RCPT, the commit); auth.c is SMTP AUTH; sender.c the
 * sender check of a user who sends through us.
 */
#ifndef PILLARBOX_SMTP_SESSION_H
#define PILLARBOX_SMTP_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/loop.h"
#include "smtp/addr.h"
#include "smtp/data.h"
#include "smtp/smtp.h"
#include "store/store.h"

/* Where a session is; a command lists the states it is allowed in. */
enum smtp_state {
	ST_FRESH = 1 << 0, /* before HELO/EHLO */
	ST_READY = 1 << 1, /* no transaction */
	ST_MAIL = 1 << 2,  /* MAIL given, no recipient yet */
	ST_RCPT = 1 << 3,  /* one recipient or more */
	ST_BDAT = 1 << 4,  /* between BDAT chunks: BDAT, RSET, NOOP, QUIT */
	ST_ANY = 0x1f,
	ST_NOT_BDAT = ST_ANY & ~ST_BDAT,
};

enum smtp_mode { MODE_CMD, MODE_DATA, MODE_BDAT };

/* Why input is held back while a body goes to its spill file. */
enum smtp_wait {
	WAIT_NONE,
	WAIT_ROOM,  /* too many chunks wait for the file (msgbuf_full) */
	WAIT_FLUSH, /* the message is complete; its last chunks are not */
};

/* An SMTP AUTH exchange waiting for the client's next line (a 334 went
 * out). */
enum smtp_auth_step {
	AUTH_STEP_NONE,
	AUTH_STEP_PLAIN,      /* PLAIN without an initial response */
	AUTH_STEP_LOGIN_USER, /* LOGIN: the user name */
	AUTH_STEP_LOGIN_PASS, /* LOGIN: the password */
};

#define SMTP_TX_ID_MAX 24  /* session id (12 hex) + transaction (4 hex) */
#define SMTP_REPLY_MAX 512 /* RFC 5321 4.5.3.1.5, CRLF included */

/* Distinct addresses: a transaction's local mailboxes, or the remote
 * recipients it relays. */
struct smtp_list {
	char **v;
	unsigned n, cap;
};

struct smtp_tx {
	char id[SMTP_TX_ID_MAX]; /* for the log, Received: and 250 */
	/* The reverse-path as the client gave it (local part's case kept:
	 * it is handed on with relayed mail), "" for <>. */
	char from[STORE_ADDR_MAX + 1];
	char first_rcpt[STORE_ADDR_MAX + 1];
	unsigned nrcpt;		/* RCPTs accepted */
	unsigned rejected;	/* RCPTs refused: unknown user, relay, sender,
				 * quota */
	struct smtp_list users; /* local mailboxes */
	/* The commit's verdict per mailbox (users.n of them): over[i] when
	 * the message would take users.v[i] past its quota, so it does not
	 * get it; nover of them. dsn_queued: their DSN went to the queue (a
	 * remote sender). */
	bool *over;
	unsigned nover;
	bool dsn_queued;
	struct smtp_list remote; /* recipients to relay: queued */
	char *as_user;		 /* who sends: see smtp_sender_check */
	bool utf8;
	struct msgbuf body;
	struct data_reader rd;
	struct data_head head; /* the header section, kept when as_user must
				* own the From: field */
	uint64_t bdat_left;    /* octets of the current chunk still to read */
	bool bdat_last;
	const char *bdat_discard; /* the 503 for a chunk out of order */
	char *header;		  /* Received:, made at the end; the stored
				   * body starts with it (every copy's) */
	size_t header_len;
	char *trace;	    /* "Return-Path: <from>\r\n": each mailbox
			     * entry's own (RFC 5321 4.4: added at final
			     * delivery, so never in a relayed copy) */
	uint64_t stored_id; /* the store's message id, once committed */
	struct store_job job;
};

struct smtp_session {
	struct conn *c;
	struct smtp_server *srv;
	enum smtp_state state;
	enum smtp_mode mode;
	enum smtp_wait wait;
	bool esmtp;
	unsigned errors; /* since the last message accepted */
	unsigned ntx;
	char *helo;
	struct smtp_tx *tx;
	/* SMTP AUTH (auth.c). */
	char *auth_user; /* logged in as (the store's lower-cased name); NULL
			  * until AUTH succeeds */
	enum smtp_auth_step auth_step;
	const char *auth_mech;	  /* "PLAIN", "LOGIN": of the exchange */
	char *auth_name;	  /* LOGIN's user name, then the name being
				   * checked (or waiting out its delay) */
	struct timer *auth_delay; /* login_delay after a failure */
};

/* --- smtp.c ------------------------------------------------------------ */

/* Writes line and CRLF. */
void smtp_reply(struct smtp_session *s, const char *line);
/* A refusal caused by the client: counted, and too many end the session
 * (see smtp_errors in smtp.c). */
void smtp_error(struct smtp_session *s, const char *line);
/* The client's HELO name for a log line (encoded), or "-". */
const char *smtp_log_helo(const struct smtp_session *s);

/* Adds addr to l unless it is there (two RCPTs, one copy); drops the
 * entries past the first n. */
void smtp_list_add(struct smtp_list *l, const char *addr);
void smtp_list_cut(struct smtp_list *l, unsigned n);

/* --- relay.c ----------------------------------------------------------- */

/* What became of a recipient. */
enum smtp_rcpt_result {
	RCPT_OK,
	RCPT_RELAY_DENIED, /* 554: not ours, and this client may not relay */
	RCPT_UNKNOWN,	   /* 550: ours, but no such user or alias */
	RCPT_FULL,	   /* 550 5.2.2: every mailbox it reaches is at or
			    * over its quota */
	RCPT_SENDER,	   /* 553: relayed for a user who does not own the
			    * sender (reply made) */
	RCPT_TEMP,	   /* 451: the store could not be read now */
};

/* Decides the recipient a (rcpt: as the client gave it, formatted) for
 * the transaction: core/relay.h's one decision, logged; then the mailbox
 * (its users join tx->users, unless every one of them is full) or the
 * relay queue (tx->remote), with the sender check for rights that are a
 * user's. primary is the first
 * configured domain (our address literal's). reply (SMTP_REPLY_MAX) gets
 * the 553 of RCPT_SENDER. */
enum smtp_rcpt_result smtp_rcpt_decide(struct smtp_session *s, struct addr *a,
				       const char *rcpt, const char *primary,
				       char *reply);

/* --- auth.c ------------------------------------------------------------ */

/* Whether this session may log in: offered in EHLO, else AUTH gets 530. */
bool smtp_auth_allowed(struct smtp_session *s);
/* The AUTH command; and the client's line after a 334 (auth_step set). */
void smtp_auth_command(struct smtp_session *s, char *arg);
void smtp_auth_response(struct smtp_session *s, char *line);
/* Frees what AUTH holds (the session's free). */
void smtp_auth_free(struct smtp_session *s);

/* --- sender.c ---------------------------------------------------------- */

/* Checks that user may send as tx->from (with sender_check = strict: it
 * is their address, or an alias that reaches them; never <>), in txn.
 * Returns 0 when so (tx->as_user becomes user, if not set); else writes
 * the reply into reply (size n): "553 5.7.1 ..." (and -EPERM, logged), or
 * a 451 for a store that cannot be read (and that error). */
int smtp_sender_check(struct smtp_session *s, struct store_txn *txn,
		      const char *user, char *reply, size_t n);
/* At the end of a message sent as tx->as_user: every mailbox of its
 * From: field must be as_user's. 0, or the reply in reply as above (not
 * logged: the message's refusal is). */
int smtp_sender_check_header(struct smtp_session *s, char *reply, size_t n);

#endif
