/*
 * event.h - events one protocol reports for others to act on, without the
 * protocols knowing each other. A POP3 login is one: the relay code turns
 * it into POP-before-SMTP rights for that address.
 */
#ifndef PILLARBOX_EVENT_H
#define PILLARBOX_EVENT_H

#include "core/netaddr.h"

enum event_kind {
	EVENT_LOGIN, /* a user proved their password */
};

struct event {
	enum event_kind kind;
	const char *proto;	     /* "pop3", "smtp" */
	const char *user;	     /* the account */
	const struct netaddr *peer; /* the client's address */
};

#define EVENT_SUBSCRIBERS_MAX 8 /* a handful of core modules at most */

/* Calls fn(ev, arg) for every event from now on (loop thread). */
void event_subscribe(void (*fn)(const struct event *ev, void *arg), void *arg);
/* Drops every subscriber (at shutdown and in tests). */
void event_reset(void);
/* Reports ev to the subscribers, in subscription order; pointers in ev are
 * valid only during the call. */
void event_emit(const struct event *ev);

#endif
