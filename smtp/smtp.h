/*
 * smtp.h - the SMTP server (RFC 5321) for the MX role: mail for local users
 * and aliases, delivered straight into their mailboxes by one commit.
 */
#ifndef PILLARBOX_SMTP_H
#define PILLARBOX_SMTP_H

#include <stdint.h>

#include "core/config.h"
#include "core/conn.h"
#include "store/store.h"

#define SMTP_CMD_MAX 512 /* RFC 5321 4.5.3.1.4, CRLF included */
#define SMTP_ERRORS_MAX                                                        \
	20 /* errors without delivering mail before we                         \
	    * hang up (Postfix's smtpd_hard_error_limit) */

struct smtp_server {
	const struct config *cfg;
	struct store *st;
	uint64_t max_size; /* max_message_size, within what the store takes */
	char busy_reply[CONFIG_STR_MAX + 80], full_reply[CONFIG_STR_MAX + 80];
	uint64_t accepted, refused; /* messages, for the stats line */
};

extern const struct conn_proto smtp_proto;

/* Prepares srv (ctx of the listener) for cfg and st. */
void smtp_server_init(struct smtp_server *srv, const struct config *cfg,
		      struct store *st);

#endif
