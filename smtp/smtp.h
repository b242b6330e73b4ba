/*
 * smtp.h - the SMTP server (RFC 5321): the MX role (mail for local users
 * and aliases, delivered straight into their mailboxes by one commit, and
 * relaying for the clients core/relay.h allows) and the submission role
 * (RFC 6409: the same, after SMTP AUTH). A message's local copies and its
 * relayed recipients (queued) are one commit, answered by one 250.
 */
#ifndef PILLARBOX_SMTP_H
#define PILLARBOX_SMTP_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/conn.h"
#include "store/store.h"

#define SMTP_CMD_MAX 512 /* RFC 5321 4.5.3.1.4, CRLF included */
/* An AUTH command with its initial response, or the client's line after a
 * 334: RFC 4954 4 wants lines of 12288 octets taken. */
#define SMTP_AUTH_LINE_MAX 12288
#define SMTP_ERRORS_MAX                                                        \
	20 /* errors without delivering mail before we                         \
	    * hang up (Postfix's smtpd_hard_error_limit) */

struct smtp_server {
	const char *name; /* "smtp" or "submission": the log lines' area */
	bool submission;  /* MAIL needs AUTH first */
	const struct config *cfg;
	struct store *st;
	uint64_t max_size; /* max_message_size, within what the store takes */
	char busy_reply[CONFIG_STR_MAX + 80], full_reply[CONFIG_STR_MAX + 80];
	uint64_t accepted, refused; /* messages, for the stats line */
};

extern const struct conn_proto smtp_proto;
/* The same sessions, named "submission" in the logs (and in the
 * event=listening line). */
extern const struct conn_proto smtp_submission_proto;

/* Prepares srv (ctx of the listener) for cfg and st: the MX role. */
void smtp_server_init(struct smtp_server *srv, const struct config *cfg,
		      struct store *st);
/* The same for the submission listener ([smtp] submission). */
void smtp_submission_init(struct smtp_server *srv, const struct config *cfg,
			  struct store *st);

#endif
