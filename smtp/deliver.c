/* deliver.c - the queue runner: jobs, attempts, results, bounces. see
 * deliver.h
 *
 * Three structs, three lifetimes:
 *   struct dl_job    one destination: its DNS lookup, its exchangers, the
 *                    one connection open at a time; ends when every
 *                    exchanger was tried or nothing is left to send;
 *   struct dl_msg    one message on its way to that destination: its
 *                    recipients there, their results, and the commit that
 *                    records them; it outlives its job until that commit
 *                    is done;
 *   struct dl_entry  one queue entry (a recipient) of a message; it stays
 *                    in the in-flight table from the moment a scan takes
 *                    it until its result is committed, so no scan takes it
 *                    twice.
 */
#include "smtp/deliver.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "base/log.h"
#include "base/metrics.h"
#include "core/dns.h"
#include "core/loop.h"
#include "smtp/client.h"

#define DL_BUCKETS 1024 /* in-flight table: a short walk for thousands */

enum dl_state {
	DL_TODO,      /* not yet tried in this attempt */
	DL_DELIVERED, /* the peer took it */
	DL_FAILED,    /* for good: bounce */
	DL_DEFERRED,  /* tried, failed for now */
};

struct dl_entry {
	struct store_queue_entry e; /* strings below */
	char *recipient, *last_error;
	enum dl_state state;
	char reply[CLIENT_REPLY_MAX]; /* the last reply or reason */
	char remote[CLIENT_PEER_MAX]; /* who gave it; "" for ourselves */
	bool gone; /* removed from the queue meanwhile (found by the commit) */
	struct dl_entry *hnext; /* in the in-flight table */
};

struct dl_job;

struct dl_msg {
	struct dl_msg *next; /* in its job */
	struct dl_job *job;  /* NULL once the job is gone */
	uint64_t id;
	char *sender;
	uint64_t arrival;
	size_t n, cap;
	struct dl_entry **ents; /* each its own allocation: the in-flight
				 * table points at them */
	/* The attempt on the current connection. */
	unsigned tried;		      /* connection serial it was tried on */
	bool loaded;		      /* size, skip, utf8 known */
	size_t skip;		      /* a Return-Path: not sent */
	uint64_t size;		      /* octets sent */
	bool utf8, eightbit, looping; /* see dl_load */
	struct client_rcpt *cr; /* this connection's recipients (n at most) */
	size_t *map;		/* cr[k] is ents[map[k]] */
	struct client_msg cm;
	/* The commit of this attempt's outcome. */
	struct store_job job_commit;
	uint64_t now; /* seconds since the epoch, as the queue's times */
	int bounced;  /* deliver_bounce's result */
	bool committing;
};

struct dl_job {
	struct dl_job *prev, *next;
	char dest[DNS_NAME_MAX + 1]; /* the domain; "" for the smarthost */
	struct dl_msg *msgs;	     /* undecided, in order */
	size_t nmsgs;
	struct dns_query *q;
	struct dns_result targets;
	size_t ti; /* the target being tried */
	unsigned serial;
	struct client *cl;
	struct client_params params;
	char peer_name[DNS_NAME_MAX + 1];
	bool accepting; /* the scan may add messages */
	char error[CLIENT_REPLY_MAX + CLIENT_PEER_MAX];
};

static struct {
	const struct config *cfg;
	struct store *st;
	struct timer *timer;
	bool running, stopping;
	/* A flush (`pillarbox queue flush [ID]`): the entries queued at
	 * that moment (not under way), due whatever their time says until a
	 * scan takes each; one tried since keeps its own time. */
	struct dl_flush *flush[DL_BUCKETS];
	size_t nflush;
	uint64_t hold_until_ms; /* after a failed commit */
	/* What the next look at the queue covers (see dl_scan). */
	uint64_t fresh_ids[DELIVER_FRESH_MAX]; /* messages just queued */
	size_t nfresh_ids;
	bool scan_all;	      /* the whole queue is to be looked at */
	uint64_t all_not_before_ms; /* ... but not before this */
	uint64_t due_ms;	    /* when an entry falls due (or a rescan) */
	struct dl_job *jobs;
	size_t njobs;
	size_t inflight;
	struct dl_entry *table[DL_BUCKETS];
	char password[CONFIG_STR_MAX];
	char smarthost[CONFIG_STR_MAX]; /* its host part */
	unsigned smarthost_port;
	unsigned serial;
	size_t live_msgs;
} dl;

static void dl_job_connect(struct dl_job *j);
static void dl_job_end(struct dl_job *j);
static void dl_msg_commit(struct dl_msg *m);

/* --- the in-flight table ------------------------------------------------- */

static size_t dl_hash(uint64_t id, const char *rcpt)
{
	uint64_t h = id * 0x9e3779b97f4a7c15ull;

	for (; *rcpt; rcpt++)
		h = (h ^ (unsigned char)*rcpt) * 1099511628211ull;
	return (size_t)(h % DL_BUCKETS);
}

static bool dl_inflight(uint64_t id, const char *rcpt)
{
	for (struct dl_entry *x = dl.table[dl_hash(id, rcpt)]; x != NULL;
	     x = x->hnext)
		if (x->e.id == id && strcmp(x->recipient, rcpt) == 0)
			return true;
	return false;
}

static void dl_inflight_add(struct dl_entry *x)
{
	size_t h = dl_hash(x->e.id, x->recipient);

	x->hnext = dl.table[h];
	dl.table[h] = x;
	dl.inflight++;
}

static void dl_inflight_del(struct dl_entry *x)
{
	struct dl_entry **pp = &dl.table[dl_hash(x->e.id, x->recipient)];

	while (*pp != x)
		pp = &(*pp)->hnext;
	*pp = x->hnext;
	dl.inflight--;
}

/* --- the flush set ---------------------------------------------------------
 */

struct dl_flush {
	struct dl_flush *next;
	uint64_t id;
	char rcpt[];
};

static void dl_flush_add(uint64_t id, const char *rcpt)
{
	size_t n = strlen(rcpt) + 1, h = dl_hash(id, rcpt);
	struct dl_flush *f = xmalloc(sizeof *f + n);

	f->id = id;
	memcpy(f->rcpt, rcpt, n);
	f->next = dl.flush[h];
	dl.flush[h] = f;
	dl.nflush++;
}

/* True (and forgotten) when (id, rcpt) was flushed and not yet taken. */
static bool dl_flush_take(uint64_t id, const char *rcpt)
{
	struct dl_flush **pp = &dl.flush[dl_hash(id, rcpt)], *f;

	for (; (f = *pp) != NULL; pp = &f->next)
		if (f->id == id && strcmp(f->rcpt, rcpt) == 0) {
			*pp = f->next;
			free(f);
			dl.nflush--;
			return true;
		}
	return false;
}

static void dl_flush_clear(void)
{
	for (size_t i = 0; i < DL_BUCKETS; i++)
		while (dl.flush[i] != NULL) {
			struct dl_flush *f = dl.flush[i];
			dl.flush[i] = f->next;
			free(f);
		}
	dl.nflush = 0;
}

/* --- messages ------------------------------------------------------------- */

static void dl_msg_free(struct dl_msg *m)
{
	for (size_t i = 0; i < m->n; i++) {
		dl_inflight_del(m->ents[i]);
		free(m->ents[i]->recipient);
		free(m->ents[i]->last_error);
		free(m->ents[i]);
	}
	free(m->ents);
	free(m->cr);
	free(m->map);
	free(m->sender);
	free(m);
	dl.live_msgs--;
}

/* Reads what the client must know about the message before MAIL: its
 * size less a Return-Path, whether it needs SMTPUTF8 (a non-ASCII
 * address or header, RFC 6531/6532) or 8BITMIME, and whether it loops
 * (more than DSN_HOPS_MAX Received: fields). One read transaction. */
static int dl_load(struct dl_msg *m)
{
	struct store_txn *txn = NULL;
	const void *v;
	const unsigned char *p;
	size_t len, hl;
	int r;

	if (m->loaded)
		return 0;
	r = store_txn_begin(dl.st, false, &txn);
	if (r == 0)
		r = store_msg_get(txn, m->id, &v, &len);
	if (r == 0) {
		m->skip = dsn_return_path_len(v, len);
		m->size = len - m->skip;
		p = (const unsigned char *)v + m->skip;
		hl = dsn_header_len((const char *)p, (size_t)m->size);
		for (size_t i = 0; i < m->size && !m->eightbit; i++)
			if (p[i] >= 0x80) {
				m->eightbit = true;
				m->utf8 |= i < hl;
			}
		m->looping = dsn_count_received((const char *)p,
						(size_t)m->size) > DSN_HOPS_MAX;
		for (const char *s = m->sender; *s; s++)
			m->utf8 |= (unsigned char)*s >= 0x80;
		for (size_t i = 0; i < m->n; i++)
			for (const char *s = m->ents[i]->recipient; *s; s++)
				m->utf8 |= (unsigned char)*s >= 0x80;
		m->loaded = true;
	}
	store_txn_abort(txn);
	return r;
}

/* Copies s into dst (n octets), cut to fit. */
static void dl_copy(char *dst, size_t n, const char *s)
{
	size_t len = strnlen(s, n - 1);

	memcpy(dst, s, len);
	dst[len] = '\0';
}

/* Sets an entry's outcome for this attempt. */
static void dl_entry_set(struct dl_entry *x, enum dl_state st,
			 const char *reply, const char *remote)
{
	x->state = st;
	dl_copy(x->reply, sizeof x->reply, reply);
	dl_copy(x->remote, sizeof x->remote, remote ? remote : "");
}

/* Entries still to try (never tried, or deferred by an earlier
 * exchanger of this attempt). */
static bool dl_msg_open(const struct dl_msg *m)
{
	for (size_t i = 0; i < m->n; i++)
		if (m->ents[i]->state == DL_TODO ||
		    m->ents[i]->state == DL_DEFERRED)
			return true;
	return false;
}

/* Takes m out of its job (its outcome is settled) and commits it. */
static void dl_msg_settle(struct dl_msg *m)
{
	struct dl_job *j = m->job;
	struct dl_msg **pp;

	if (j != NULL) {
		for (pp = &j->msgs; *pp != m; pp = &(*pp)->next)
			;
		*pp = m->next;
		j->nmsgs--;
		m->job = NULL;
	}
	dl_msg_commit(m);
}

/* --- the client's callbacks ---------------------------------------------- */

static struct client_msg *dl_next(void *arg)
{
	struct dl_job *j = arg;

	if (dl.stopping)
		return NULL;
	for (struct dl_msg *m = j->msgs; m != NULL; m = m->next) {
		size_t k = 0;
		if (m->tried == j->serial || !dl_msg_open(m))
			continue;
		m->tried = j->serial;
		if (dl_load(m) < 0) {
			for (size_t i = 0; i < m->n; i++)
				if (m->ents[i]->state != DL_DELIVERED &&
				    m->ents[i]->state != DL_FAILED)
					dl_entry_set(m->ents[i], DL_DEFERRED,
						     "451 4.3.0 local error "
						     "reading the message",
						     NULL);
			continue;
		}
		if (m->looping) {
			for (size_t i = 0; i < m->n; i++)
				dl_entry_set(m->ents[i], DL_FAILED,
					     "554 5.4.6 mail forwarding loop "
					     "(too many Received: headers)",
					     NULL);
			dl_msg_settle(m);
			return dl_next(arg);
		}
		/* Recipients may have joined since the last connection. */
		free(m->cr);
		free(m->map);
		m->cr = xcalloc(m->n, sizeof *m->cr);
		m->map = xcalloc(m->n, sizeof *m->map);
		for (size_t i = 0; i < m->n; i++) {
			if (m->ents[i]->state == DL_DELIVERED ||
			    m->ents[i]->state == DL_FAILED)
				continue;
			m->cr[k] =
			    (struct client_rcpt){.addr = m->ents[i]->recipient};
			m->map[k++] = i;
		}
		m->cm = (struct client_msg){
		    .id = m->id,
		    .sender = m->sender,
		    .rcpts = m->cr,
		    .nrcpts = k,
		    .skip = m->skip,
		    .size = m->size,
		    .utf8 = m->utf8,
		    .eightbit = m->eightbit,
		};
		return &m->cm;
	}
	j->accepting = false; /* QUIT follows: later arrivals take a new job */
	return NULL;
}

static void dl_done(void *arg, struct client_msg *cm)
{
	struct dl_job *j = arg;
	struct dl_msg *m =
	    (struct dl_msg *)((char *)cm - offsetof(struct dl_msg, cm));

	for (size_t k = 0; k < cm->nrcpts; k++) {
		struct client_rcpt *r = &cm->rcpts[k];
		struct dl_entry *x = m->ents[m->map[k]];
		enum dl_state st = r->result == CLIENT_DELIVERED ? DL_DELIVERED
				   : r->result == CLIENT_PERM	 ? DL_FAILED
								 : DL_DEFERRED;
		dl_entry_set(x, st, r->reply,
			     r->remote ? client_peer(j->cl) : NULL);
	}
	/* Settled for every recipient: commit now, not when the job ends
	 * (the 250 to the sender and this commit are the whole latency). */
	if (!dl_msg_open(m))
		dl_msg_settle(m);
}

static void dl_closed(void *arg, const char *error, bool tls_failed)
{
	struct dl_job *j = arg;
	bool open = false;

	j->cl = NULL;
	/* Opportunistic TLS that fails is no reason not to deliver: the
	 * same exchanger again, in clear (as Postfix's "may" level). */
	if (tls_failed && j->params.tls == CLIENT_TLS_OPPORTUNISTIC &&
	    !j->params.no_starttls && !dl.stopping) {
		j->params.no_starttls = true;
		for (struct dl_msg *m = j->msgs; m != NULL; m = m->next)
			m->tried = 0; /* again on the new connection */
		dl_job_connect(j);
		return;
	}
	if (error != NULL) {
		snprintf(j->error, sizeof j->error, "%s", error);
		/* Messages never handed to this connection share its fate. */
		for (struct dl_msg *m = j->msgs; m != NULL; m = m->next)
			for (size_t i = 0; i < m->n; i++)
				if (m->ents[i]->state == DL_TODO &&
				    m->tried != j->serial)
					dl_entry_set(m->ents[i], DL_DEFERRED,
						     error, NULL);
	}
	for (struct dl_msg *m = j->msgs; m != NULL; m = m->next)
		open |= dl_msg_open(m);
	/* RFC 5321 5.1: a 4xx or a failed connection, try the next one. */
	if (open && !dl.stopping && j->ti + 1 < j->targets.n) {
		j->ti++;
		dl_job_connect(j);
		return;
	}
	dl_job_end(j);
}

static const struct client_ops dl_ops = {dl_next, dl_done, dl_closed};

/* --- jobs -------------------------------------------------------------------
 */

static void dl_job_connect(struct dl_job *j)
{
	struct dns_target *t = &j->targets.t[j->ti];
	unsigned port = dl.cfg->delivery.smarthost[0] != '\0'
			    ? dl.smarthost_port
			    : dl.cfg->delivery.mx_port;

	if (t->addr.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&t->addr)->sin6_port =
		    htons((uint16_t)port);
	else
		((struct sockaddr_in *)&t->addr)->sin_port =
		    htons((uint16_t)port);
	if (strcmp(j->peer_name, t->host) != 0)
		j->params.no_starttls = false; /* a new exchanger: TLS again */
	snprintf(j->peer_name, sizeof j->peer_name, "%s", t->host);
	j->serial = ++dl.serial;
	j->cl =
	    client_start((struct sockaddr *)&t->addr, &j->params, &dl_ops, j);
}

/* Every message still in the job gets the outcome of the lookup. */
static void dl_job_fail_all(struct dl_job *j, enum dl_state st,
			    const char *reply)
{
	while (j->msgs != NULL) {
		struct dl_msg *m = j->msgs;
		for (size_t i = 0; i < m->n; i++)
			if (m->ents[i]->state == DL_TODO)
				dl_entry_set(m->ents[i], st, reply, NULL);
		dl_msg_settle(m);
	}
}

static void dl_dns_done(const struct dns_result *r, void *arg)
{
	struct dl_job *j = arg;
	char reply[CLIENT_REPLY_MAX];
	const char *what = j->dest[0] ? j->dest : dl.smarthost;

	j->q = NULL;
	switch (r->status) {
	case DNS_OK:
		j->targets = *r;
		j->ti = 0;
		dl_job_connect(j);
		return;
	case DNS_NULL_MX: /* RFC 7505 3: 556 5.1.10 */
		snprintf(reply, sizeof reply,
			 "556 5.1.10 %s: domain does not accept mail "
			 "(null MX)",
			 what);
		dl_job_fail_all(j, DL_FAILED, reply);
		break;
	case DNS_NXDOMAIN:
	case DNS_NO_ADDR:
		snprintf(reply, sizeof reply,
			 "550 5.%s %s: host or domain name not found (%s)",
			 r->status == DNS_NXDOMAIN ? "1.2" : "4.4", what,
			 r->error);
		dl_job_fail_all(j, DL_FAILED, reply);
		break;
	case DNS_TEMP:
		snprintf(reply, sizeof reply,
			 "451 4.4.3 %s: name service error (%s)", what,
			 r->error);
		dl_job_fail_all(j, DL_DEFERRED, reply);
		break;
	}
	dl_job_end(j);
}

static struct dl_job *dl_job_new(const char *dest)
{
	struct dl_job *j = xcalloc(1, sizeof *j);
	const struct config_delivery *d = &dl.cfg->delivery;

	snprintf(j->dest, sizeof j->dest, "%s", dest);
	j->accepting = true;
	j->params = (struct client_params){
	    .st = dl.st,
	    .helo = dl.cfg->hostname,
	    .peer_name = j->peer_name,
	    .tls = dest[0] ? CLIENT_TLS_OPPORTUNISTIC : CLIENT_TLS_REQUIRED,
	    .connect_timeout = d->connect_timeout,
	    .command_timeout = d->command_timeout,
	};
	if (dest[0] == '\0' && d->smarthost_user[0] != '\0') {
		j->params.auth_user = d->smarthost_user;
		j->params.auth_pass = dl.password;
	}
	j->next = dl.jobs;
	if (dl.jobs != NULL)
		dl.jobs->prev = j;
	dl.jobs = j;
	dl.njobs++;
	return j;
}

/* Begins a job's work once the scan has filled it. */
static void dl_job_go(struct dl_job *j)
{
	struct sockaddr_storage ss;

	if (j->dest[0] == '\0' &&
	    config_parse_listen(dl.cfg->delivery.smarthost, &ss) == 0) {
		/* The smarthost is an address: no lookup. */
		j->targets.n = 1;
		j->targets.status = DNS_OK;
		j->targets.t[0].addr = ss;
		snprintf(j->targets.t[0].host, sizeof j->targets.t[0].host,
			 "%s", dl.smarthost);
		dl_job_connect(j);
	} else if (j->dest[0] == '\0') {
		j->q = dns_host(dl.smarthost, dl_dns_done, j);
	} else {
		j->q = dns_mx(j->dest, dl_dns_done, j);
	}
}

static void dl_job_end(struct dl_job *j)
{
	/* What is still open was tried everywhere: deferred. */
	while (j->msgs != NULL) {
		struct dl_msg *m = j->msgs;
		for (size_t i = 0; i < m->n; i++)
			if (m->ents[i]->state == DL_TODO && j->error[0] != '\0')
				dl_entry_set(m->ents[i], DL_DEFERRED, j->error,
					     NULL);
		dl_msg_settle(m);
	}
	if (j->prev != NULL)
		j->prev->next = j->next;
	else
		dl.jobs = j->next;
	if (j->next != NULL)
		j->next->prev = j->prev;
	dl.njobs--;
	free(j);
	if (!dl.stopping)
		deliver_wake(); /* a slot is free: more may be waiting */
}

/* --- the commit of an attempt's outcome ------------------------------------
 */

/* Collects the users a local sender resolves to (the store must not be
 * written while it resolves). */
struct dl_users {
	char **u;
	size_t n;
};

static void dl_users_add(const char *user, void *arg)
{
	struct dl_users *us = arg;

	us->u = xrealloc(us->u, (us->n + 1) * sizeof *us->u);
	us->u[us->n++] = xstrdup(user);
}

/* A bounce's own trace in a local mailbox: a final delivery adds the
 * Return-Path, <> for a bounce. */
#define DL_BOUNCE_TRACE "Return-Path: <>\r\n"

/* Drops from us the mailboxes an entry of size octets would take past
 * their quota. A hard quota holds for our own mail too, as Dovecot's does
 * for a bounce Postfix hands it; the bounce then goes to nobody, since
 * its own sender is <>. Logged, as nobody else will hear of it. */
static int dl_users_fit(struct store_txn *txn, uint64_t id, struct dl_users *us,
			uint64_t size)
{
	struct store_user u;
	size_t k = 0;
	int r = 0;

	for (size_t i = 0; i < us->n; i++) {
		if (r == 0 && (r = store_user_get(txn, us->u[i], &u)) == 0 &&
		    store_user_fits(&u, size)) {
			us->u[k++] = us->u[i];
			continue;
		}
		if (r == 0)
			log_msg(LOG_WARN, "deliver",
				"event=bounce-dropped msg=%016" PRIx64
				" to=<%s> reason=quota",
				id, log_str(us->u[i]));
		free(us->u[i]);
	}
	us->n = k;
	return r;
}

int deliver_bounce(struct store_txn *txn, const struct config *cfg, uint64_t id,
		   const char *sender, time_t arrival,
		   const struct dsn_rcpt *rcpts, size_t n)
{
	const char *at = strrchr(sender, '@');
	struct dl_users us = {0};
	char idtext[24], *text;
	const void *msg;
	size_t len, tlen;
	uint64_t bid;
	void *dst;
	int r, local;

	/* RFC 5321 6.1: never a bounce to the null sender: no loops. */
	if (sender[0] == '\0' || at == NULL || n == 0)
		return 0;
	if ((r = store_msg_get(txn, id, &msg, &len)) < 0)
		return r;
	if ((local = store_domain_exists(txn, at + 1)) < 0)
		return local;
	if (local) {
		r = store_rcpt_resolve(txn, sender, dl_users_add, &us);
		if (r == -ENOENT || r == -EINVAL)
			return 0; /* no such local user: nobody to tell */
		if (r < 0)
			goto out;
	}
	snprintf(idtext, sizeof idtext, "%016" PRIx64, id);
	text = dsn_build(&(struct dsn){.hostname = cfg->hostname,
				       .sender = sender,
				       .id = idtext,
				       .arrival = arrival,
				       .now = time(NULL),
				       .msg = msg,
				       .msg_len = len,
				       .rcpts = rcpts,
				       .nrcpts = n},
			 &tlen);
	r = 0; /* (a local sender's r was its number of mailboxes) */
	if (local)
		r = dl_users_fit(txn, id, &us,
				 tlen + sizeof DL_BOUNCE_TRACE - 1);
	/* No mailbox left: no body either (it would have no reference). */
	if (r == 0 && (!local || us.n > 0) &&
	    (r = store_msg_put(txn, tlen, &bid, &dst)) == 0)
		memcpy(dst, text, tlen);
	if (local) {
		/* Straight into the sender's mailbox, in this very commit,
		 * with the Return-Path a final delivery adds. */
		for (size_t i = 0; r == 0 && i < us.n; i++)
			r = store_mailbox_add_trace(txn, us.u[i], bid,
						    DL_BOUNCE_TRACE, NULL);
	} else if (r == 0) {
		/* Queued like any relayed message, from <>. */
		r = store_queue_add(txn, bid, sender, "", (uint64_t)time(NULL));
	}
	free(text);
out:
	for (size_t i = 0; i < us.n; i++)
		free(us.u[i]);
	free(us.u);
	return r < 0 ? r : local ? 0 : 1;
}

/* The entries of one message, copied out of a walk (the store must not
 * change under a cursor). */
struct dl_pick {
	uint64_t id;
	char **rcpts;
	size_t n;
	char *sender;
	uint64_t arrival; /* the earliest of its entries */
};

static int dl_pick_one(const struct store_queue_entry *e, void *arg)
{
	struct dl_pick *p = arg;

	p->rcpts = xrealloc(p->rcpts, (p->n + 1) * sizeof *p->rcpts);
	p->rcpts[p->n++] = xstrdup(e->recipient);
	if (p->sender == NULL) {
		p->sender = xstrdup(e->sender);
		p->arrival = e->arrival;
	}
	if (e->arrival < p->arrival)
		p->arrival = e->arrival;
	return 0;
}

int deliver_remove(struct store_txn *txn, const struct config *cfg, uint64_t id,
		   bool bounce, size_t *n)
{
	struct dl_pick p = {.id = id};
	struct dsn_rcpt *rcpts = NULL;
	int r, queued = 0;

	*n = 0;
	r = store_queue_list_id(txn, id, dl_pick_one, &p);
	if (r == 0 && p.n == 0)
		r = -ENOENT;
	if (r == 0 && bounce) {
		rcpts = xcalloc(p.n, sizeof *rcpts);
		for (size_t i = 0; i < p.n; i++)
			rcpts[i] = (struct dsn_rcpt){p.rcpts[i], NULL,
						     DELIVER_RETURNED};
		r = queued = deliver_bounce(txn, cfg, id, p.sender,
					    (time_t)p.arrival, rcpts, p.n);
	}
	for (size_t i = 0; r >= 0 && i < p.n; i++)
		r = store_queue_del(txn, id, p.rcpts[i]);
	if (r >= 0)
		*n = p.n;
	for (size_t i = 0; i < p.n; i++)
		free(p.rcpts[i]);
	free(p.rcpts);
	free(p.sender);
	free(rcpts);
	return r < 0 ? r : queued;
}

/* Commit thread: records the attempt - removes what was delivered,
 * bounces and removes what failed, moves the rest to its next attempt.
 * The bounce is built first: the last removal may take the body.
 *
 * An entry may have gone while it was tried: `queue delete` or `bounce`
 * (the CLI, in its own process, or the console) removed it. Whoever did
 * has told the sender, or was not to: such an entry is neither bounced
 * again nor moved to a next attempt (which would bring it back), and a
 * message whose every entry went may have lost its body too. */
static int dl_commit_run(struct store_txn *txn, void *arg)
{
	struct dl_msg *m = arg;
	const struct config_delivery *d = &dl.cfg->delivery;
	struct dsn_rcpt fails[DELIVER_RCPTS_MAX];
	char expired[DELIVER_RCPTS_MAX][CLIENT_REPLY_MAX];
	size_t nf = 0;
	int r = 0;

	m->bounced = 0;
	for (size_t i = 0; i < m->n; i++) {
		struct dl_entry *x = m->ents[i];
		bool old = m->now >= x->e.arrival + d->bounce_after;
		x->gone = false; /* this run's finding (a job may run twice) */
		if (x->state != DL_FAILED && !(x->state == DL_DEFERRED && old))
			continue;
		if ((r = store_queue_has(txn, m->id, x->recipient)) < 0)
			return r;
		if (r == 0) {
			x->gone = true;
			continue;
		}
		r = 0;
		if (x->state == DL_FAILED) {
			fails[nf++] = (struct dsn_rcpt){
			    x->recipient, x->remote[0] ? x->remote : NULL,
			    x->reply};
		} else if (x->state == DL_DEFERRED && old) {
			/* bounce_after: it has had its chance. */
			snprintf(expired[nf], sizeof expired[nf],
				 "delivery time expired; last error: %.400s",
				 x->reply);
			fails[nf] = (struct dsn_rcpt){
			    x->recipient, x->remote[0] ? x->remote : NULL,
			    expired[nf]};
			nf++;
		}
	}
	if (nf > 0 &&
	    (m->bounced = deliver_bounce(txn, dl.cfg, m->id, m->sender,
					 (time_t)m->arrival, fails, nf)) < 0)
		return m->bounced;
	for (size_t i = 0; r == 0 && i < m->n; i++) {
		struct dl_entry *x = m->ents[i];
		bool old = m->now >= x->e.arrival + d->bounce_after;
		if (x->state == DL_TODO || x->gone)
			continue; /* untried (the server stopped), or gone */
		if (x->state == DL_DEFERRED && !old)
			r = store_queue_retry(
			    txn, m->id, x->recipient,
			    m->now + config_retry_delay(d, x->e.attempts + 1),
			    x->reply);
		else
			r = store_queue_del(txn, m->id, x->recipient);
		if (r == -ENOENT) { /* removed meanwhile: it stays gone */
			x->gone = true;
			r = 0;
		}
	}
	return r;
}

static const char *dl_state_name(enum dl_state st, bool old)
{
	switch (st) {
	case DL_DELIVERED:
		return "delivered";
	case DL_FAILED:
		return "bounced";
	case DL_DEFERRED:
		return old ? "expired" : "deferred";
	case DL_TODO:
		break;
	}
	return "untried";
}

/* Loop thread: the outcome is on disk (or not); one log line per
 * recipient, counted per recipient (as Postfix logs status=sent,
 * bounced, deferred), and the entries leave the in-flight table. An
 * entry removed meanwhile logs event=removed with what the peer said,
 * unless the peer took it: then it was delivered all the same. */
static void dl_commit_done(void *arg, int rc)
{
	struct dl_msg *m = arg;
	const struct config_delivery *d = &dl.cfg->delivery;
	bool rescan = m->bounced > 0 || rc < 0;

	for (size_t i = 0; i < m->n; i++) {
		struct dl_entry *x = m->ents[i];
		bool old = m->now >= x->e.arrival + d->bounce_after;
		bool dropped = rc == 0 && x->gone && x->state != DL_DELIVERED;
		if (x->state == DL_TODO)
			continue;
		/* A deferred entry has a new time: the timer must know it. */
		rescan |= x->state == DL_DEFERRED;
		log_msg(
		    x->state == DL_DELIVERED || dropped ? LOG_INFO : LOG_WARN,
		    "deliver",
		    "event=%s id=%016" PRIx64 " from=<%s> to=<%s> "
		    "relay=%s attempts=%" PRIu32 " delay=%llus reply=%s%s%s",
		    dropped ? "removed" : dl_state_name(x->state, old), m->id,
		    log_str(m->sender), log_str(x->recipient),
		    x->remote[0] ? log_str(x->remote) : "none",
		    x->e.attempts + 1,
		    (unsigned long long)(m->now - x->e.arrival),
		    log_str(x->reply), rc < 0 ? " commit-error=" : "",
		    rc < 0 ? strerror(-rc) : "");
		if (rc < 0 || dropped)
			continue;
		if (x->state == DL_DELIVERED)
			metrics_inc(METRIC_DELIVERED);
		else if (x->state == DL_FAILED || old)
			metrics_inc(METRIC_BOUNCED);
		else
			metrics_inc(METRIC_DEFERRED);
	}
	if (rc < 0) {
		/* Nothing was recorded: the entries are as they were, due.
		 * Let the store recover before trying them again. */
		dl.hold_until_ms = loop_now_ms() + DELIVER_STORE_BACKOFF_MS;
	}
	dl_msg_free(m);
	if (rescan)
		deliver_wake();
}

static void dl_msg_commit(struct dl_msg *m)
{
	assert(!m->committing);
	m->committing = true;
	m->now = (uint64_t)time(NULL);
	m->job_commit = (struct store_job){
	    .run = dl_commit_run, .done = dl_commit_done, .arg = m};
	store_commit_submit(dl.st, &m->job_commit);
}

/* --- the scan ---------------------------------------------------------------
 */

struct dl_scan {
	uint64_t now;
	uint64_t next_due;	  /* the soonest entry not yet due; 0: none */
	struct dl_job *fresh[64]; /* jobs made by this scan */
	size_t nfresh;
};

/* The destination of a recipient: its domain (lower-cased), or "" when
 * everything goes to the smarthost. */
static void dl_dest(const char *rcpt, char *out, size_t n)
{
	const char *at = strrchr(rcpt, '@');

	if (dl.cfg->delivery.smarthost[0] != '\0' || at == NULL) {
		out[0] = '\0';
		return;
	}
	snprintf(out, n, "%s", at + 1);
	for (char *p = out; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p + 32);
}

/* The job's last message, if it is message id and can take one more
 * recipient (not yet handed to a connection). */
static struct dl_msg *dl_tail_open(struct dl_job *j, uint64_t id)
{
	struct dl_msg *m = j->msgs;

	while (m != NULL && m->next != NULL)
		m = m->next;
	if (m == NULL || m->id != id || m->tried != 0 || m->committing ||
	    m->n == DELIVER_RCPTS_MAX)
		return NULL;
	return m;
}

/* A job for dest that can take one more entry: the least loaded one
 * accepting; a new one when every one is busy and the limits allow. */
static struct dl_job *dl_job_for(struct dl_scan *sc, const char *dest)
{
	const struct config_delivery *d = &dl.cfg->delivery;
	struct dl_job *best = NULL;
	size_t count = 0;

	for (struct dl_job *j = dl.jobs; j != NULL; j = j->next) {
		if (strcmp(j->dest, dest) != 0)
			continue;
		count++;
		if (j->accepting && j->nmsgs < DELIVER_BACKLOG_MAX &&
		    (best == NULL || j->nmsgs < best->nmsgs))
			best = j;
	}
	/* A job that has not handed out all it has is busy: open another
	 * connection while the limits allow (max_concurrent counts jobs,
	 * each of which has at most one connection). */
	if ((best == NULL || best->nmsgs > 0) && count < d->max_per_domain &&
	    dl.njobs < d->max_concurrent &&
	    sc->nfresh < sizeof sc->fresh / sizeof *sc->fresh) {
		struct dl_job *j = dl_job_new(dest);
		sc->fresh[sc->nfresh++] = j;
		return j;
	}
	return best;
}

static int dl_scan_entry(const struct store_queue_entry *e, void *arg)
{
	struct dl_scan *sc = arg;
	char dest[DNS_NAME_MAX + 1];
	struct dl_job *j;
	struct dl_msg *m, **tail;
	struct dl_entry *x;
	bool flushed = dl.nflush > 0 && dl_flush_take(e->id, e->recipient);

	if (e->next_attempt > sc->now && !flushed) {
		if (sc->next_due == 0 || e->next_attempt < sc->next_due)
			sc->next_due = e->next_attempt;
		return 0;
	}
	if (dl_inflight(e->id, e->recipient))
		return 0;
	dl_dest(e->recipient, dest, sizeof dest);
	/* Another recipient of a message a job just took, at the same
	 * destination: the same transaction (entries of one message queued
	 * together are next to each other in the queue). */
	m = NULL;
	for (j = dl.jobs; j != NULL && m == NULL; j = j->next)
		if (strcmp(j->dest, dest) == 0 && j->accepting)
			m = dl_tail_open(j, e->id);
	if (m != NULL) {
		j = m->job;
	} else if ((j = dl_job_for(sc, dest)) == NULL) {
		if (flushed) /* still flushed when a slot is free */
			dl_flush_add(e->id, e->recipient);
		return 0; /* limits reached: it waits for a free slot */
	}
	for (tail = &j->msgs; *tail != NULL && (*tail)->next != NULL;
	     tail = &(*tail)->next)
		;
	if (m == NULL) {
		m = xcalloc(1, sizeof *m);
		dl.live_msgs++;
		m->id = e->id;
		m->sender = xstrdup(e->sender);
		m->arrival = e->arrival;
		m->job = j;
		if (*tail != NULL)
			(*tail)->next = m;
		else
			j->msgs = m;
		j->nmsgs++;
	}
	if (m->n == m->cap) {
		m->cap = m->cap ? 2 * m->cap : 4;
		m->ents = xrealloc(m->ents, m->cap * sizeof *m->ents);
	}
	x = m->ents[m->n++] = xcalloc(1, sizeof *x);
	x->e = *e;
	x->recipient = xstrdup(e->recipient);
	x->last_error = xstrdup(e->last_error);
	x->e.recipient = x->recipient;
	x->e.last_error = x->last_error;
	x->e.sender = m->sender;
	if (x->e.arrival < m->arrival)
		m->arrival = x->e.arrival;
	dl_inflight_add(x);
	return 0;
}

static uint64_t dl_clock_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Looks at the queue: starts what is due, and sets the timer for what
 * will be. A look covers either
 *   - the messages just queued (deliver_queued): a walk of their own
 *     keys, so a busy server does not walk the whole queue per commit;
 *   - or the whole queue (deliver_wake: a slot set free, a flush, a
 *     result recorded; or the timer, when an entry falls due). That costs
 *     time in proportion to the queue, so after a walk that took T the
 *     next waits until 9 T have passed: however long the queue grows (a
 *     long outage somewhere), walking it takes at most a tenth of the
 *     loop, while a short one is looked at again at once.
 * The timer serves both: it is set for the sooner of the next whole walk
 * wanted and the next entry due. */
static void dl_scan(void *arg)
{
	struct dl_scan sc = {.now = (uint64_t)time(NULL)};
	struct store_txn *txn = NULL;
	uint64_t now_ms = loop_now_ms(), wait_ms, t0 = 0, at;
	bool all;
	int r;

	(void)arg;
	if (dl.stopping)
		return;
	if (now_ms < dl.hold_until_ms) {
		timer_start(dl.timer, dl.hold_until_ms - now_ms);
		return;
	}
	if (now_ms >= dl.due_ms)
		dl.scan_all = true;
	all = dl.scan_all && now_ms >= dl.all_not_before_ms;
	r = store_txn_begin(dl.st, false, &txn);
	if (r == 0 && all) {
		t0 = dl_clock_us();
		r = store_queue_list(txn, dl_scan_entry, &sc);
		metrics_inc(METRIC_QUEUE_WALKS);
	}
	for (size_t i = 0; r == 0 && !all && i < dl.nfresh_ids; i++)
		r = store_queue_list_id(txn, dl.fresh_ids[i], dl_scan_entry,
					&sc);
	store_txn_abort(txn);
	dl.nfresh_ids = 0;
	if (r < 0) {
		log_msg(LOG_ERROR, "deliver", "event=scan-failed error=%s",
			strerror(-r));
		dl.scan_all = true;
		dl.all_not_before_ms = now_ms + 1000;
	} else if (all) {
		dl.scan_all = false;
		dl.all_not_before_ms = now_ms + 9 * (dl_clock_us() - t0) / 1000;
		wait_ms = DELIVER_RESCAN_MS;
		if (sc.next_due != 0 && (sc.next_due - sc.now) * 1000 < wait_ms)
			wait_ms = (sc.next_due - sc.now) * 1000;
		dl.due_ms = now_ms + wait_ms;
	} else if (sc.next_due != 0 &&
		   now_ms + (sc.next_due - sc.now) * 1000 < dl.due_ms) {
		dl.due_ms = now_ms + (sc.next_due - sc.now) * 1000;
	}
	for (size_t i = 0; i < sc.nfresh; i++)
		dl_job_go(sc.fresh[i]);
	at = dl.due_ms;
	if (dl.scan_all && dl.all_not_before_ms < at)
		at = dl.all_not_before_ms;
	timer_start(dl.timer, at > now_ms ? at - now_ms : 0);
}

/* --- the interface -------------------------------------------------------- */

int deliver_start(const struct config *cfg, struct store *st)
{
	const struct config_delivery *d = &cfg->delivery;
	const char *colon;

	dl.cfg = cfg;
	dl.st = st;
	if (d->mx_port > 65535) {
		fprintf(stderr, "pillarbox: [delivery] mx_port %u is no port\n",
			d->mx_port);
		return -1;
	}
	if (d->smarthost[0] != '\0') {
		colon = strrchr(d->smarthost, ':');
		dl.smarthost_port = (unsigned)atoi(colon + 1);
		snprintf(dl.smarthost, sizeof dl.smarthost, "%.*s",
			 (int)(colon - d->smarthost), d->smarthost);
		if (dl.smarthost[0] == '[') /* "[::1]" -> "::1" */
			snprintf(dl.smarthost, sizeof dl.smarthost, "%.*s",
				 (int)(colon - d->smarthost - 2),
				 d->smarthost + 1);
	}
	if (d->smarthost_user[0] != '\0') {
		FILE *f = fopen(d->smarthost_password_file, "r");
		if (f == NULL ||
		    fgets(dl.password, sizeof dl.password, f) == NULL) {
			fprintf(stderr,
				"pillarbox: smarthost_password_file %s: %s\n",
				d->smarthost_password_file,
				f == NULL ? strerror(errno) : "empty");
			if (f != NULL)
				fclose(f);
			return -1;
		}
		fclose(f);
		dl.password[strcspn(dl.password, "\r\n")] = '\0';
	}
	dl.timer = timer_new(dl_scan, NULL);
	dl.running = true;
	deliver_wake(); /* what a previous run left is due now */
	return 0;
}

void deliver_wake(void)
{
	if (dl.running && !dl.stopping) {
		dl.scan_all = true;
		timer_start(dl.timer, 0);
	}
}

void deliver_queued(uint64_t id)
{
	if (!dl.running || dl.stopping)
		return;
	if (dl.nfresh_ids < DELIVER_FRESH_MAX)
		dl.fresh_ids[dl.nfresh_ids++] = id;
	else
		dl.scan_all = true; /* more than a look by keys is worth */
	timer_start(dl.timer, 0);
}

struct dl_flush_walk {
	uint64_t id;
	int found;
};

static int dl_flush_each(const struct store_queue_entry *e, void *arg)
{
	struct dl_flush_walk *w = arg;

	w->found++;
	if (!dl_inflight(e->id, e->recipient)) {
		dl_flush_take(e->id, e->recipient); /* once in the set */
		dl_flush_add(e->id, e->recipient);
	}
	return 0;
}

int deliver_flush(uint64_t id)
{
	struct dl_flush_walk w = {id, 0};
	struct store_txn *txn = NULL;
	int r;

	if (!dl.running || dl.stopping)
		return -ESHUTDOWN;
	r = store_txn_begin(dl.st, false, &txn);
	if (r == 0)
		r = id != 0 ? store_queue_list_id(txn, id, dl_flush_each, &w)
			    : store_queue_list(txn, dl_flush_each, &w);
	store_txn_abort(txn);
	if (r < 0)
		return r;
	dl.hold_until_ms = 0;
	if (id != 0)
		deliver_queued(id);
	else
		deliver_wake();
	return w.found;
}

void deliver_stop(void)
{
	if (!dl.running || dl.stopping)
		return;
	dl.stopping = true;
	timer_free(dl.timer);
	dl.timer = NULL;
	/* Connections end (their results are committed); lookups are
	 * dropped with what waits on them: those entries were not tried. */
	for (struct dl_job *j = dl.jobs, *next; j != NULL; j = next) {
		next = j->next;
		if (j->cl != NULL) {
			client_abort(j->cl);
		} else if (j->q != NULL) {
			dns_cancel(j->q);
			j->q = NULL;
			dl_job_end(j);
		}
	}
}

void deliver_cleanup(void)
{
	assert(dl.jobs == NULL && dl.live_msgs == 0);
	dl_flush_clear();
	explicit_bzero(dl.password, sizeof dl.password);
	dl.running = false;
}
