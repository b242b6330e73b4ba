/* relay.c - the relay decision and POP-before-SMTP grants. see relay.h
 *
 * Every grant lasts the same pop_before_smtp seconds, so a list in the
 * order grants were made (or refreshed: a refresh moves a grant to the
 * end) is also the order they expire in. Expiry pops the head, the cap
 * evicts the head, a listing walks it; a hash on the client finds the
 * grant of an RCPT's peer. */
#include "core/relay.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "core/event.h"
#include "store/store.h"

#define RELAY_BUCKETS 1024 /* a short walk even with RELAY_GRANTS_MAX */

struct grant {
	struct grant *hnext;	   /* in its hash bucket */
	struct grant *prev, *next; /* in expiry order */
	struct netaddr client;	   /* netaddr_client */
	uint64_t expires;	   /* relay clock, seconds */
	char user[STORE_ADDR_MAX + 1];
};

static struct config_network nets[CONFIG_NETWORKS_MAX];
static size_t nnets;
static unsigned window; /* pop_before_smtp; 0 = no grants */

static struct grant *buckets[RELAY_BUCKETS];
static struct grant *oldest, *newest; /* the expiry-ordered list */
static size_t ngrants;

static uint64_t monotonic_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec;
}

static uint64_t (*relay_now)(void) = monotonic_now;

void relay_set_clock(uint64_t (*now)(void))
{
	relay_now = now != NULL ? now : monotonic_now;
}

/* --- the grant table ---------------------------------------------------- */

static struct grant **bucket_of(const struct netaddr *client)
{
	return &buckets[netaddr_hash(client) % RELAY_BUCKETS];
}

static void list_unlink(struct grant *g)
{
	if (g->prev != NULL)
		g->prev->next = g->next;
	else
		oldest = g->next;
	if (g->next != NULL)
		g->next->prev = g->prev;
	else
		newest = g->prev;
	g->prev = g->next = NULL;
}

static void list_append(struct grant *g)
{
	g->prev = newest;
	g->next = NULL;
	if (newest != NULL)
		newest->next = g;
	else
		oldest = g;
	newest = g;
}

static void grant_drop(struct grant *g)
{
	struct grant **pp = bucket_of(&g->client);

	while (*pp != g)
		pp = &(*pp)->hnext;
	*pp = g->hnext;
	list_unlink(g);
	free(g);
	ngrants--;
}

/* Drops the grants that have ended by now: they are at the head. */
static void grants_expire(uint64_t now)
{
	while (oldest != NULL && oldest->expires <= now)
		grant_drop(oldest);
}

static struct grant *grant_find(const struct netaddr *client)
{
	struct grant *g;

	for (g = *bucket_of(client); g != NULL; g = g->hnext)
		if (netaddr_equal(&g->client, client))
			return g;
	return NULL;
}

static void grant_log(enum log_level lvl, const char *what,
		      const struct grant *g)
{
	char ip[NETADDR_TEXT_MAX];

	netaddr_format(&g->client, ip, sizeof ip);
	log_msg(lvl, "relay", "event=%s ip=%s%s user=%s seconds=%u", what, ip,
		g->client.family == AF_INET6 ? "/64" : "", log_str(g->user),
		window);
}

/* EVENT_LOGIN: a POP3 login grants (or refreshes) its client's rights. */
static void relay_on_login(const struct event *ev, void *arg)
{
	struct netaddr client;
	uint64_t now = relay_now();
	struct grant *g;

	(void)arg;
	assert(ev != NULL && ev->peer != NULL && ev->user != NULL);
	/* Only mailbox logins make grants: an SMTP AUTH login already
	 * carries its own rights, for its own session, and must not open
	 * its address to every other session from there. */
	if (ev->kind != EVENT_LOGIN || strcmp(ev->proto, "pop3") != 0)
		return;
	if (strlen(ev->user) > STORE_ADDR_MAX)
		return; /* not an account name: no store key is this long */
	grants_expire(now);
	client = netaddr_client(ev->peer);
	g = grant_find(&client);
	if (g != NULL) {
		list_unlink(g);
	} else {
		if (ngrants == RELAY_GRANTS_MAX) {
			grant_log(LOG_WARN, "relay-grant-evicted", oldest);
			grant_drop(oldest);
		}
		g = xcalloc(1, sizeof *g);
		g->client = client;
		g->hnext = *bucket_of(&client);
		*bucket_of(&client) = g;
		ngrants++;
	}
	g->expires = now + window;
	list_append(g);
	/* A refresh by the same user is the login line's business alone. */
	if (strcmp(g->user, ev->user) != 0) {
		strcpy(g->user, ev->user);
		grant_log(LOG_INFO, "relay-grant", g);
	}
}

/* --- setup -------------------------------------------------------------- */

void relay_init(const struct config *cfg)
{
	assert(cfg->nrelay_networks <= CONFIG_NETWORKS_MAX);
	nnets = cfg->nrelay_networks;
	memcpy(nets, cfg->relay_networks, nnets * sizeof nets[0]);
	window = cfg->pop_before_smtp;
	if (window > 0)
		event_subscribe(relay_on_login, NULL);
}

void relay_cleanup(void)
{
	while (oldest != NULL)
		grant_drop(oldest);
	nnets = 0;
	window = 0;
}

/* --- the decision ------------------------------------------------------- */

static bool relay_network_has(const struct netaddr *peer)
{
	for (size_t i = 0; i < nnets; i++)
		if (netaddr_in(peer, &nets[i].net, nets[i].bits))
			return true;
	return false;
}

enum relay_verdict relay_decide(const struct netaddr *peer,
				const char *auth_user, bool rcpt_is_local,
				struct relay_decision *d)
{
	struct netaddr client;
	struct grant *g;

	assert(peer != NULL && d != NULL);
	if (auth_user != NULL && auth_user[0] == '\0')
		auth_user = NULL;
	*d = (struct relay_decision){RELAY_ALLOW, NULL, auth_user};
	if (rcpt_is_local) {
		d->reason = "local";
		return d->verdict;
	}
	if (auth_user != NULL) {
		d->reason = "auth";
		return d->verdict;
	}
	if (relay_network_has(peer)) {
		d->reason = "network";
		return d->verdict;
	}
	grants_expire(relay_now());
	client = netaddr_client(peer);
	g = grant_find(&client);
	if (g != NULL) {
		d->reason = "pop-before-smtp";
		d->user = g->user;
		return d->verdict;
	}
	d->verdict = RELAY_DENY;
	d->reason = "denied";
	return d->verdict;
}

void relay_log_decision(const char *sid, const struct netaddr *peer,
			const char *rcpt, const struct relay_decision *d)
{
	char ip[NETADDR_TEXT_MAX];
	bool allow = d->verdict == RELAY_ALLOW;

	netaddr_format(peer, ip, sizeof ip);
	log_msg(allow ? LOG_INFO : LOG_WARN, "relay",
		"sid=%s event=relay-decision ip=%s to=%s verdict=%s reason=%s "
		"user=%s",
		sid, ip, log_str(rcpt), allow ? "allow" : "deny", d->reason,
		d->user != NULL ? log_str(d->user) : "-");
}

void relay_grants_each(void (*fn)(const struct relay_grant_info *g, void *arg),
		       void *arg)
{
	uint64_t now = relay_now();
	time_t wall = time(NULL);

	grants_expire(now);
	for (const struct grant *g = oldest; g != NULL; g = g->next) {
		struct relay_grant_info info = {
		    g->client, g->user, wall + (time_t)(g->expires - now),
		    g->expires - now};
		fn(&info, arg);
	}
}
