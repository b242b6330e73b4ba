/*
 * relay.h - who may relay: the one decision taken for every RCPT, and the
 * POP-before-SMTP grants behind it.
 *
 * Relaying (taking mail for a domain that is not ours, to send it on) is
 * only ever for
 *   - a session that logged in with SMTP AUTH:           "auth"
 *   - a client inside [smtp] relay_networks:             "network"
 *   - a client whose POP3 login is under [smtp]
 *     pop_before_smtp seconds old:                       "pop-before-smtp"
 * and for nobody else ("denied"): pillarbox is never an open relay. Mail
 * for a local recipient is taken from anyone ("local"): the MX role.
 *
 * POP-before-SMTP: relay_init() subscribes to EVENT_LOGIN (core/event.h).
 * Each successful POP3 login grants its client - netaddr_client(): the
 * IPv4 address, or the IPv6 /64; a v4-mapped address is already IPv4 -
 * relay rights for pop_before_smtp seconds, remembering the user; a new
 * login from the client refreshes the grant (and takes it over, if another
 * user logged in). A failed login emits no event, so it grants nothing.
 * Grants live in memory only: a restart forgets them, and clients log in
 * again on their next poll. Expired grants are dropped as time passes
 * (every call looks at the clock), and the table holds RELAY_GRANTS_MAX
 * at most.
 *
 * Everything here runs on the loop thread.
 *
 * ---- What the SMTP side calls -------------------------------------------
 *
 *   startup   relay_init(cfg) once, relay_cleanup() at exit: app/main.c
 *             does both.
 *   AUTH      nothing here: keep the authenticated user in the session.
 *             (An EVENT_LOGIN with proto "smtp" makes no grant: only
 *             POP3 logins do.)
 *   RCPT      after the address is parsed and known to be local or not:
 *
 *               struct relay_decision d;
 *               relay_decide(conn_peer_net(c), s->auth_user,
 *                            rcpt_is_local, &d);
 *               relay_log_decision(conn_sid(c), conn_peer_net(c), rcpt, &d);
 *               if (d.verdict == RELAY_DENY)
 *                       reply "554 5.7.1 <rcpt>: Relay access denied";
 *
 *             once per RCPT, even when an earlier RCPT of the transaction
 *             was allowed: a grant may lapse in between, and every
 *             recipient gets its own log line. rcpt_is_local is "the
 *             domain is ours" (store_domain_exists() > 0); such a
 *             recipient is then resolved as before (an unknown user is
 *             still 550 5.1.1). With sender_check = strict, d.user (when
 *             not NULL) is the user whose address MAIL FROM must be; for
 *             reason "network" there is nobody to check against.
 */
#ifndef PILLARBOX_RELAY_H
#define PILLARBOX_RELAY_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "core/config.h"
#include "core/netaddr.h"

/* Grants held at most. An office has tens of clients; each grant needs a
 * real password, so this only bounds what a flood of logins from many
 * addresses can hold (about 400 octets each: 4096 are 1.6 MiB). At the cap
 * the grant closest to its end makes room: its client, if still polling,
 * gets it back at its next login. */
#define RELAY_GRANTS_MAX 4096

/* Reads relay_networks and pop_before_smtp from cfg (copied: cfg may go)
 * and, unless pop_before_smtp is 0, subscribes to EVENT_LOGIN. Once. */
void relay_init(const struct config *cfg);

/* Drops every grant and forgets the config (at exit and in tests; the
 * event subscription is event_reset()'s to drop). */
void relay_cleanup(void);

/* Tests only: the clock grants expire by, in seconds; it must never go
 * back. NULL restores the default, CLOCK_MONOTONIC (so a change of the
 * wall clock neither ends nor extends a grant). */
void relay_set_clock(uint64_t (*now)(void));

enum relay_verdict {
	RELAY_DENY,
	RELAY_ALLOW,
};

struct relay_decision {
	enum relay_verdict verdict;
	/* "local", "auth", "network", "pop-before-smtp" or "denied": a
	 * static string, also the reason= of the log line. */
	const char *reason;
	/* Who the rights are for: auth_user (reasons "auth", and "local"
	 * when given), the user whose POP3 login made the grant
	 * ("pop-before-smtp"), else NULL. A grant's user is valid until the
	 * next call into relay or the return to the loop (a login may replace
	 * it, time may end it): copy it to keep it. */
	const char *user;
};

/* Decides whether a client at peer (conn_peer_net(): normalised) may give
 * this RCPT, and why, into *d; returns d->verdict. In order: a local
 * recipient is allowed to anyone; else the SMTP AUTH user auth_user
 * (NULL or "" when the session has not logged in); else peer inside
 * relay_networks; else a live grant for peer's client; else denied. */
enum relay_verdict relay_decide(const struct netaddr *peer,
				const char *auth_user, bool rcpt_is_local,
				struct relay_decision *d);

/* Writes the one log line of a decision, the same for every caller:
 *   relay info sid=SID event=relay-decision ip=PEER to=RCPT verdict=allow
 *   reason=REASON user=USER
 * (warn and verdict=deny when denied; user=- when there is none; rcpt and
 * user go through log_str). */
void relay_log_decision(const char *sid, const struct netaddr *peer,
			const char *rcpt, const struct relay_decision *d);

/* One live grant, as relay_grants_each() shows it. */
struct relay_grant_info {
	struct netaddr client; /* netaddr_client() of the login's address */
	const char *user;      /* valid during the callback only */
	time_t expires;	       /* when it ends, wall clock (UTC) */
	uint64_t left;	       /* seconds until then (> 0) */
};

/* Calls fn(g, arg) for every live grant, soonest to expire first. fn must
 * not call into relay. */
void relay_grants_each(void (*fn)(const struct relay_grant_info *g, void *arg),
		       void *arg);

#endif
