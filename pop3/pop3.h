/*
 * pop3.h - the POP3 server (RFC 1939, CAPA RFC 2449, AUTH RFC 5034, response
 * codes RFC 3206) over a snapshot of the user's mailbox in the store.
 */
#ifndef PILLARBOX_POP3_H
#define PILLARBOX_POP3_H

#include "core/config.h"
#include "core/conn.h"
#include "store/store.h"

#define POP3_CMD_MAX	255  /* RFC 2449 4: commands up to 255 octets */
#define POP3_AUTH_MAX	1024 /* an AUTH PLAIN line: two names + password */
#define POP3_ERRORS_MAX 20   /* bad commands before we hang up */
#define POP3_PIECE	(32u << 10) /* RETR octets copied per store read */

struct pop3_lock;

struct pop3_server {
	const struct config *cfg;
	struct store *st;
	char busy_reply[80], full_reply[80];
	struct pop3_lock *locks; /* mailboxes in use: one session each */
};

extern const struct conn_proto pop3_proto;

void pop3_server_init(struct pop3_server *srv, const struct config *cfg,
		      struct store *st);

#endif
