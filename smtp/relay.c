/* relay.c - whose mail a recipient is: ours (a mailbox), or another
 * host's, relayed only for the clients core/relay.h allows, and queued.
 * see session.h
 *
 * Every open-relay trick comes down to this one question asked of the
 * parsed address, never of the text: "user%remote@ours", "remote!user@ours"
 * and "\"user@remote\"@ours" are local parts of ours (no such user: 550);
 * a source route or "user@remote@ours" never parses (501); case and a
 * trailing dot are gone before the domain is looked up; and an address
 * literal is ours only when it is the address the client reached. */
#include "smtp/session.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/conn.h"
#include "core/relay.h"

static void smtp_rcpt_found(const char *user, void *arg)
{
	smtp_list_add(arg, user);
}

/* Is a's domain ours? 1 (then a names the local mailbox), 0, or <0 when
 * the store cannot tell. An address literal (RFC 5321 4.1.3) is ours when
 * it is the address the client reached us on: "alice@[192.0.2.1]" is then
 * alice of the first configured domain (primary). Any other literal is a
 * remote host's, relayed only for clients allowed to relay. */
static int smtp_rcpt_local(struct smtp_session *s, struct store_txn *txn,
			   struct addr *a, const char *primary)
{
	const struct netaddr *ours = conn_local_net(s->c);
	char ip[NETADDR_TEXT_MAX];
	struct netaddr lit;

	if (!a->literal)
		return store_domain_exists(txn, a->domain);
	if (addr_literal_ip(a, ip, sizeof ip) < 0 ||
	    netaddr_parse(&lit, ip) < 0 || ours->family == 0 ||
	    !netaddr_equal(&lit, ours))
		return 0;
	snprintf(a->domain, sizeof a->domain, "%s", primary);
	a->literal = false;
	return 1;
}

/* A local recipient: its mailboxes join the transaction's. A mailbox at
 * or over its quota takes nothing more, so a recipient whose every
 * mailbox is full is refused now, when the client can still be told per
 * recipient; one with room in any of them (an alias) is taken, and its
 * full ones are refused at the commit, with a DSN to the sender. */
static enum smtp_rcpt_result smtp_rcpt_mailbox(struct smtp_session *s,
					       struct store_txn *txn,
					       const struct addr *a)
{
	char key[STORE_ADDR_MAX + 1];
	struct smtp_list found = {0};
	enum smtp_rcpt_result res = RCPT_FULL;
	struct store_user u;
	int r;

	if (addr_format(a, key, sizeof key) < 0)
		return RCPT_UNKNOWN; /* too long for any user's name */
	r = store_rcpt_resolve(txn, key, smtp_rcpt_found, &found);
	/* The store refuses a name with a space, a comma or a control ("a
	 * b"@, "a,b"@): no such user can ever exist, which is a permanent
	 * answer, not a 4xx to retry for days. */
	if (r < 0)
		res = r == -ENOENT || r == -EINVAL ? RCPT_UNKNOWN : RCPT_TEMP;
	for (unsigned i = 0; r >= 0 && i < found.n; i++) {
		if ((r = store_user_get(txn, found.v[i], &u)) < 0)
			res = RCPT_TEMP; /* resolved in this very txn */
		else if (!store_user_full(&u))
			res = RCPT_OK;
	}
	for (unsigned i = 0; res == RCPT_OK && i < found.n; i++)
		smtp_list_add(&s->tx->users, found.v[i]);
	smtp_list_cut(&found, 0);
	free(found.v);
	return res;
}

/* see session.h */
enum smtp_rcpt_result smtp_rcpt_decide(struct smtp_session *s, struct addr *a,
				       const char *rcpt, const char *primary,
				       char *reply)
{
	struct store_txn *txn = NULL;
	struct relay_decision d;
	enum smtp_rcpt_result res = RCPT_TEMP;
	int local, r;

	if (store_txn_begin(s->srv->st, false, &txn) < 0 ||
	    (local = smtp_rcpt_local(s, txn, a, primary)) < 0)
		goto done;
	relay_decide(conn_peer_net(s->c), s->auth_user, local > 0, &d);
	relay_log_decision(conn_sid(s->c), conn_peer_net(s->c), rcpt, &d);
	if (d.verdict == RELAY_DENY) {
		res = RCPT_RELAY_DENIED;
		goto done;
	}
	/* Rights that are a user's (SMTP AUTH, a POP-before-SMTP grant) are
	 * for mail from that user: the sender check, once per user. */
	if (d.user != NULL &&
	    (s->tx->as_user == NULL || strcmp(s->tx->as_user, d.user) != 0)) {
		r = smtp_sender_check(s, txn, d.user, reply, SMTP_REPLY_MAX);
		if (r < 0) {
			res = r == -EPERM ? RCPT_SENDER : RCPT_TEMP;
			goto done;
		}
	}
	if (local > 0) {
		res = smtp_rcpt_mailbox(s, txn, a);
	} else {
		smtp_list_add(&s->tx->remote, rcpt);
		res = RCPT_OK;
	}
done:
	store_txn_abort(txn);
	return res;
}
