/* sender.c - the sender check: a user who sends through us (logged in
 * with SMTP AUTH, or relaying on a POP-before-SMTP grant) sends as
 * themselves. MAIL FROM and every mailbox of the From: field must be the
 * user's own address or an alias that reaches the user; the null sender
 * is refused (a bounce is the server's to send, not a user's). With
 * [smtp] sender_check = off nothing is checked. see session.h
 *
 * Without it, any account (or any machine that once fetched mail) could
 * send as the boss, the bank's address or anyone else, through a server
 * whose address other servers trust for our domains. */
#include "smtp/session.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "core/conn.h"
#include "smtp/from.h"

/* The user a resolved address reaches is compared with the user sought. */
struct sender_owner {
	const char *user;
	bool found;
};

static void sender_owner_one(const char *user, void *arg)
{
	struct sender_owner *o = arg;

	if (strcmp(user, o->user) == 0)
		o->found = true;
}

/* 1 when addr is user's (user itself, or an alias reaching user), 0 when
 * not, <0 when the store cannot tell now. */
static int sender_owns(struct store_txn *txn, const char *user,
		       const char *addr)
{
	struct sender_owner o = {user, false};
	int r;

	if (addr[0] == '\0')
		return 0; /* <>: nobody's */
	r = store_rcpt_resolve(txn, addr, sender_owner_one, &o);
	if (r == -ENOENT || r == -EINVAL) /* no such user, no such name */
		return 0;
	return r < 0 ? r : o.found;
}

/* Writes the refusal of addr for user. */
static int sender_refuse(const char *user, const char *addr, char *reply,
			 size_t n)
{
	snprintf(reply, n,
		 "553 5.7.1 <%s>: Sender address rejected: not owned by user "
		 "%s",
		 addr, user);
	return -EPERM;
}

static int sender_temp(char *reply, size_t n, int r)
{
	snprintf(reply, n, "451 4.3.0 Temporary lookup failure");
	return r;
}

int smtp_sender_check(struct smtp_session *s, struct store_txn *txn,
		      const char *user, char *reply, size_t n)
{
	struct smtp_tx *tx = s->tx;
	int r;

	if (s->srv->cfg->sender_check == CONFIG_SENDER_OFF)
		return 0;
	r = sender_owns(txn, user, tx->from);
	if (r < 0)
		return sender_temp(reply, n, r);
	if (r == 0) {
		log_msg(LOG_INFO, s->srv->name,
			"sid=%s event=reject ip=%s helo=%s from=<%s> user=%s "
			"reason=sender-not-owned",
			conn_sid(s->c), conn_peer(s->c), smtp_log_helo(s),
			log_str(tx->from), log_str(user));
		return sender_refuse(user, tx->from, reply, n);
	}
	if (tx->as_user == NULL)
		tx->as_user = xstrdup(user);
	return 0;
}

int smtp_sender_check_header(struct smtp_session *s, char *reply, size_t n)
{
	struct smtp_tx *tx = s->tx;
	struct addr from[FROM_MAILBOXES_MAX];
	char addr[STORE_ADDR_MAX + 1];
	struct store_txn *txn = NULL;
	int count = -1, r = 0;

	if (tx->as_user == NULL ||
	    s->srv->cfg->sender_check == CONFIG_SENDER_OFF)
		return 0;
	/* A header section cut short may hold half a From: field. */
	if (!tx->head.cut)
		count = from_parse(tx->head.p, tx->head.len, tx->utf8, from);
	if (count < 0) {
		snprintf(reply, n,
			 "553 5.7.1 From: header missing or not understood");
		return -EPERM;
	}
	r = store_txn_begin(s->srv->st, false, &txn);
	for (int i = 0; r == 0 && i < count; i++) {
		/* (It fits: it came from a path no longer than this.) */
		addr[0] = '\0';
		addr_format_sent(&from[i], addr, sizeof addr);
		r = sender_owns(txn, tx->as_user, addr);
		if (r == 0)
			r = sender_refuse(tx->as_user, addr, reply, n);
		else if (r == 1)
			r = 0;
	}
	store_txn_abort(txn);
	if (r < 0 && r != -EPERM)
		sender_temp(reply, n, r);
	return r;
}
