/* dns.c - c-ares on the loop: MX and address lookups, and the records of
 * one name and type as text. see dns.h
 *
 * c-ares tells us which sockets it wants watched (ARES_OPT_SOCK_STATE_CB):
 * each gets a uv_poll, whose events go to ares_process_fd(); one loop
 * timer follows ares_timeout() for retransmissions and timeouts. A mail
 * lookup is a struct dns_query that counts the c-ares queries it still
 * waits for (one MX, then an AAAA and an A per exchanger); when the count
 * reaches zero its result is put together. A struct dns_lookup is one
 * c-ares query. Either kind, once finished, goes on one list that a zero
 * timer hands over, so a callback never runs inside the call that started
 * the lookup. */
#include "core/dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <assert.h>
#include <ctype.h>
#include <idn2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <uv.h>

#include "base/log.h"
#include "core/loop.h"

/* Addresses taken from one A or AAAA answer: a host with more is a
 * cluster behind one name, and DNS_ADDRS_MAX bounds the list anyway. */
#define DNS_HOST_ADDRS 8
/* c-ares's own retry policy, shortened: 3 tries per server, the first
 * waiting 2 s and each next one twice as long, 14 s in all with one
 * server (its defaults are 4 tries from 5 s); a lookup that fails is
 * retried with the whole delivery, minutes later. */
#define DNS_TIMEOUT_MS 2000
#define DNS_TRIES      3

struct dns_sock {
	uv_poll_t poll;
	ares_socket_t fd;
	struct dns_sock *next;
};

struct dns_host {
	char name[DNS_NAME_MAX + 1];
	unsigned pref;
};

/* A finished lookup of either kind, on the list on_finish hands over. */
struct dns_done {
	struct dns_done *next;
	void (*hand_over)(struct dns_done *d); /* calls back, then frees */
};

struct dns_query {
	struct dns_done done; /* first: the finished list holds this */
	void (*cb)(const struct dns_result *r, void *arg);
	void *arg;
	bool cancelled, finished;
	int pending; /* c-ares queries not yet answered */
	bool temp;   /* one of them failed for now (timeout, SERVFAIL) */
	struct dns_result res;
	char domain[DNS_NAME_MAX + 1];
	size_t nhosts;
	struct dns_host hosts[DNS_MX_MAX];
	/* every address found, ordered and cut to DNS_ADDRS_MAX at the end */
	size_t nall;
	struct dns_target all[DNS_MX_MAX * 2 * DNS_HOST_ADDRS];
};

/* One name and type (dns_lookup). */
struct dns_lookup {
	struct dns_done done; /* first: the finished list holds this */
	void (*cb)(const struct dns_records *r, void *arg);
	void *arg;
	enum dns_rr type;
	struct dns_records res;
};

/* One address query of a lookup: which host, which family. */
struct dns_addr_req {
	struct dns_query *q;
	size_t host;
	int family;
};

static struct {
	bool up;
	ares_channel ch;
	uv_timer_t timer;  /* ares_timeout() */
	uv_timer_t finish; /* hands finished queries over */
	struct dns_sock *socks;
	struct dns_done *finished, **finished_tail;
	size_t live; /* queries and lookups not yet freed */
} dns;

/* --- c-ares on the loop ------------------------------------------------- */

static void on_dns_timer(uv_timer_t *h);

/* Follows c-ares's next timeout with the one timer. */
static void dns_arm(void)
{
	struct timeval tv, *t = ares_timeout(dns.ch, NULL, &tv);

	if (t == NULL) {
		uv_timer_stop(&dns.timer);
		return;
	}
	uv_timer_start(&dns.timer, on_dns_timer,
		       (uint64_t)t->tv_sec * 1000 +
			   ((uint64_t)t->tv_usec + 999) / 1000,
		       0);
}

static void on_dns_timer(uv_timer_t *h)
{
	(void)h;
	ares_process_fd(dns.ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	dns_arm();
}

static void on_dns_poll(uv_poll_t *h, int status, int events)
{
	struct dns_sock *s = h->data;
	ares_socket_t fd = s->fd;

	/* An error: let c-ares read and write, and so find it. */
	if (status < 0)
		events = UV_READABLE | UV_WRITABLE;
	ares_process_fd(dns.ch, (events & UV_READABLE) ? fd : ARES_SOCKET_BAD,
			(events & UV_WRITABLE) ? fd : ARES_SOCKET_BAD);
	dns_arm();
}

/* c-ares opens, watches and closes sockets: follow it with uv_polls. */
static void on_sock_state(void *data, ares_socket_t fd, int readable,
			  int writable)
{
	struct dns_sock **pp, *s;
	int events =
	    (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0);

	(void)data;
	for (pp = &dns.socks; *pp != NULL && (*pp)->fd != fd; pp = &(*pp)->next)
		;
	s = *pp;
	if (events == 0) {
		/* c-ares closes fd right after this: stop watching it now. */
		if (s != NULL) {
			*pp = s->next;
			uv_close((uv_handle_t *)&s->poll, (uv_close_cb)free);
		}
		return;
	}
	if (s == NULL) {
		s = xcalloc(1, sizeof *s);
		s->fd = fd;
		if (uv_poll_init_socket(loop_get(), &s->poll, fd) != 0)
			fatal("event=dns-poll-init-failed fd=%d", fd);
		s->poll.data = s;
		s->next = dns.socks;
		dns.socks = s;
	}
	uv_poll_start(&s->poll, events, on_dns_poll);
}

/* --- results ------------------------------------------------------------ */

static void on_finish(uv_timer_t *h)
{
	(void)h;
	while (dns.finished != NULL) {
		struct dns_done *d = dns.finished;
		dns.finished = d->next;
		if (dns.finished == NULL)
			dns.finished_tail = &dns.finished;
		d->hand_over(d);
		dns.live--;
	}
}

/* Puts d on the finished list: handed over from the loop. */
static void dns_done_add(struct dns_done *d)
{
	d->next = NULL;
	*dns.finished_tail = d;
	dns.finished_tail = &d->next;
	uv_timer_start(&dns.finish, on_finish, 0, 0);
}

static void dns_query_hand_over(struct dns_done *d)
{
	struct dns_query *q = (struct dns_query *)d;

	if (!q->cancelled)
		q->cb(&q->res, q->arg);
	free(q);
}

/* Every answer is in (or the lookup ended early): put the result
 * together and hand it over from the loop. */
static void dns_finish(struct dns_query *q)
{
	struct dns_result *r = &q->res;
	uint64_t seed;

	assert(q->pending == 0 && !q->finished);
	q->finished = true;
	if (r->status == DNS_OK) {
		if (getrandom(&seed, sizeof seed, 0) != sizeof seed)
			seed = uv_hrtime();
		dns_order(q->all, q->nall, seed);
		r->n = q->nall < DNS_ADDRS_MAX ? q->nall : DNS_ADDRS_MAX;
		memcpy(r->t, q->all, r->n * sizeof *r->t);
		if (r->n == 0 && q->temp) {
			r->status = DNS_TEMP; /* r->error says why */
		} else if (r->n == 0) {
			r->status = DNS_NO_ADDR;
			r->error = "no address for the mail exchangers";
		}
	}
	dns_done_add(&q->done);
}

/* A failure c-ares reported, as our status; error says what it was. */
static enum dns_status dns_classify(int status, const char **error)
{
	switch (status) {
	case ARES_ENOTFOUND:
		*error = "NXDOMAIN (domain not found)";
		return DNS_NXDOMAIN;
	case ARES_ENODATA:
		*error = "no such record";
		return DNS_NO_ADDR;
	case ARES_ESERVFAIL:
		*error = "SERVFAIL";
		return DNS_TEMP;
	case ARES_ETIMEOUT:
		*error = "DNS timeout";
		return DNS_TEMP;
	case ARES_ECONNREFUSED:
		*error = "SERVFAIL or refused by every DNS server";
		return DNS_TEMP;
	case ARES_EREFUSED:
		*error = "DNS query refused";
		return DNS_TEMP;
	case ARES_EBADNAME:
		*error = "bad domain name";
		return DNS_NXDOMAIN;
	default:
		*error = ares_strerror(status);
		return DNS_TEMP;
	}
}

static void on_addr(void *arg, int status, int timeouts, unsigned char *abuf,
		    int alen)
{
	struct dns_addr_req *rq = arg;
	struct dns_query *q = rq->q;
	const struct dns_host *h = &q->hosts[rq->host];
	const char *error;
	int n = DNS_HOST_ADDRS;

	(void)timeouts;
	if (status == ARES_SUCCESS && rq->family == AF_INET6) {
		struct ares_addr6ttl a[DNS_HOST_ADDRS];
		status = ares_parse_aaaa_reply(abuf, alen, NULL, a, &n);
		for (int i = 0; status == ARES_SUCCESS && i < n; i++) {
			struct dns_target *t = &q->all[q->nall++];
			struct sockaddr_in6 *sa =
			    (struct sockaddr_in6 *)&t->addr;
			memset(t, 0, sizeof *t);
			strcpy(t->host, h->name);
			t->pref = h->pref;
			sa->sin6_family = AF_INET6;
			memcpy(&sa->sin6_addr, &a[i].ip6addr, 16);
		}
	} else if (status == ARES_SUCCESS) {
		struct ares_addrttl a[DNS_HOST_ADDRS];
		status = ares_parse_a_reply(abuf, alen, NULL, a, &n);
		for (int i = 0; status == ARES_SUCCESS && i < n; i++) {
			struct dns_target *t = &q->all[q->nall++];
			struct sockaddr_in *sa = (struct sockaddr_in *)&t->addr;
			memset(t, 0, sizeof *t);
			strcpy(t->host, h->name);
			t->pref = h->pref;
			sa->sin_family = AF_INET;
			sa->sin_addr = a[i].ipaddr;
		}
	}
	/* NXDOMAIN or no record for one exchanger and family: it has no
	 * address of that kind, which is final; anything else may pass. */
	if (status != ARES_SUCCESS &&
	    dns_classify(status, &error) == DNS_TEMP) {
		q->temp = true;
		q->res.error = error;
	}
	free(rq);
	if (--q->pending == 0)
		dns_finish(q);
}

/* Asks for the AAAA and A records of every host of q. */
static void dns_ask_addrs(struct dns_query *q)
{
	for (size_t i = 0; i < q->nhosts; i++)
		for (int f = 0; f < 2; f++) {
			struct dns_addr_req *rq = xmalloc(sizeof *rq);
			*rq = (struct dns_addr_req){
			    q, i, f == 0 ? AF_INET6 : AF_INET};
			q->pending++;
			ares_query(dns.ch, q->hosts[i].name, ns_c_in,
				   f == 0 ? ns_t_aaaa : ns_t_a, on_addr, rq);
		}
}

static int mx_pref_cmp(const void *a, const void *b)
{
	const struct ares_mx_reply *x = *(struct ares_mx_reply *const *)a;
	const struct ares_mx_reply *y = *(struct ares_mx_reply *const *)b;

	return (x->priority > y->priority) - (x->priority < y->priority);
}

static void on_mx(void *arg, int status, int timeouts, unsigned char *abuf,
		  int alen)
{
	struct dns_query *q = arg;
	struct ares_mx_reply *mx = NULL, *m;
	struct ares_mx_reply *sorted[64];
	size_t n = 0, nnull = 0;

	(void)timeouts;
	if (status == ARES_SUCCESS)
		status = ares_parse_mx_reply(abuf, alen, &mx);
	if (status == ARES_ENODATA) {
		/* RFC 5321 5.1: no MX, the domain is its own exchanger. */
		strcpy(q->hosts[0].name, q->domain);
		q->nhosts = 1;
	} else if (status != ARES_SUCCESS) {
		q->res.status = dns_classify(status, &q->res.error);
	} else {
		for (m = mx; m != NULL && n < sizeof sorted / sizeof *sorted;
		     m = m->next) {
			/* RFC 7505: "." (c-ares gives "") takes no mail. */
			if (m->host[0] == '\0' || strcmp(m->host, ".") == 0)
				nnull++;
			else
				sorted[n++] = m;
		}
		qsort(sorted, n, sizeof *sorted, mx_pref_cmp);
		for (size_t i = 0; i < n && q->nhosts < DNS_MX_MAX; i++) {
			struct dns_host *h = &q->hosts[q->nhosts];
			if (strlen(sorted[i]->host) > DNS_NAME_MAX)
				continue;
			strcpy(h->name, sorted[i]->host);
			h->pref = sorted[i]->priority;
			q->nhosts++;
		}
		if (q->nhosts == 0 && nnull > 0) {
			q->res.status = DNS_NULL_MX;
			q->res.error = "null MX: the domain accepts no mail";
		}
	}
	ares_free_data(mx);
	q->pending--;
	if (q->res.status == DNS_OK && q->nhosts > 0)
		dns_ask_addrs(q);
	else if (q->res.status == DNS_OK)
		q->res.status = DNS_NO_ADDR, q->res.error = "no usable MX";
	if (q->pending == 0)
		dns_finish(q);
}

static struct dns_query *
dns_start(const char *name, bool mx,
	  void (*cb)(const struct dns_result *r, void *arg), void *arg)
{
	struct dns_query *q = xcalloc(1, sizeof *q);

	assert(dns.up);
	q->done.hand_over = dns_query_hand_over;
	q->cb = cb;
	q->arg = arg;
	dns.live++;
	if (dns_to_ascii(name, q->domain) < 0) {
		q->res.status = DNS_NXDOMAIN;
		q->res.error = "bad domain name";
		dns_finish(q);
		return q;
	}
	if (mx) {
		q->pending = 1;
		ares_query(dns.ch, q->domain, ns_c_in, ns_t_mx, on_mx, q);
	} else {
		strcpy(q->hosts[0].name, q->domain);
		q->nhosts = 1;
		dns_ask_addrs(q);
	}
	dns_arm();
	return q;
}

struct dns_query *dns_mx(const char *domain,
			 void (*cb)(const struct dns_result *r, void *arg),
			 void *arg)
{
	return dns_start(domain, true, cb, arg);
}

struct dns_query *dns_host(const char *host,
			   void (*cb)(const struct dns_result *r, void *arg),
			   void *arg)
{
	return dns_start(host, false, cb, arg);
}

void dns_cancel(struct dns_query *q)
{
	if (q != NULL)
		q->cancelled = true; /* freed once its answers are in */
}

/* --- one name, one type ------------------------------------------------- */

static const int dns_rr_types[] = {
    [DNS_RR_A] = ns_t_a,	 [DNS_RR_AAAA] = ns_t_aaaa,
    [DNS_RR_MX] = ns_t_mx,	 [DNS_RR_TXT] = ns_t_txt,
    [DNS_RR_CNAME] = ns_t_cname, [DNS_RR_SRV] = ns_t_srv,
};

static const char *const dns_rr_names[] = {
    [DNS_RR_A] = "A",	  [DNS_RR_AAAA] = "AAAA",   [DNS_RR_MX] = "MX",
    [DNS_RR_TXT] = "TXT", [DNS_RR_CNAME] = "CNAME", [DNS_RR_SRV] = "SRV",
};

const char *dns_rr_name(enum dns_rr type)
{
	assert((size_t)type < sizeof dns_rr_names / sizeof *dns_rr_names);
	return dns_rr_names[type];
}

/* A query c-ares could not answer (status is not ARES_SUCCESS), as r. */
static void dns_records_fail(int status, struct dns_records *r)
{
	r->n = 0;
	switch (status) {
	case ARES_ENODATA:
		r->status = DNS_ANSWER_NODATA;
		r->error = "no such record";
		break;
	case ARES_ENOTFOUND:
		r->status = DNS_ANSWER_NXDOMAIN;
		r->error = "NXDOMAIN (no such name)";
		break;
	case ARES_EBADNAME:
		r->status = DNS_ANSWER_NXDOMAIN;
		r->error = "bad domain name";
		break;
	default:
		r->status = DNS_ANSWER_TEMP;
		dns_classify(status, &r->error);
		break;
	}
}

static void dns_lookup_hand_over(struct dns_done *d)
{
	struct dns_lookup *l = (struct dns_lookup *)d;

	l->cb(&l->res, l->arg);
	free(l);
}

static void on_lookup(void *arg, int status, int timeouts, unsigned char *abuf,
		      int alen)
{
	struct dns_lookup *l = arg;

	(void)timeouts;
	if (status == ARES_SUCCESS)
		dns_records_parse(l->type, abuf, alen, &l->res);
	else
		dns_records_fail(status, &l->res);
	dns_done_add(&l->done);
}

struct dns_lookup *
dns_lookup(const char *name, enum dns_rr type,
	   void (*cb)(const struct dns_records *r, void *arg), void *arg)
{
	struct dns_lookup *l = xcalloc(1, sizeof *l);
	char ascii[DNS_NAME_MAX + 1];

	assert(dns.up &&
	       (size_t)type < sizeof dns_rr_types / sizeof *dns_rr_types);
	l->done.hand_over = dns_lookup_hand_over;
	l->cb = cb;
	l->arg = arg;
	l->type = type;
	dns.live++;
	if (dns_to_ascii(name, ascii) < 0) {
		dns_records_fail(ARES_EBADNAME, &l->res);
		dns_done_add(&l->done);
		return l;
	}
	ares_query(dns.ch, ascii, ns_c_in, dns_rr_types[type], on_lookup, l);
	dns_arm();
	return l;
}

/* --- setup --------------------------------------------------------------- */

int dns_init(const char *resolver)
{
	struct ares_options o = {0};
	int r;

	assert(!dns.up);
	if ((r = ares_library_init(ARES_LIB_INIT_ALL)) != ARES_SUCCESS)
		goto fail;
	o.sock_state_cb = on_sock_state;
	o.timeout = DNS_TIMEOUT_MS;
	o.tries = DNS_TRIES;
	/* No search list: a mail domain is always fully qualified. */
	o.flags = ARES_FLAG_NOSEARCH;
	r = ares_init_options(&dns.ch, &o,
			      ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS |
				  ARES_OPT_TRIES | ARES_OPT_FLAGS);
	if (r != ARES_SUCCESS) {
		ares_library_cleanup();
		goto fail;
	}
	if (resolver[0] != '\0' && (r = ares_set_servers_ports_csv(
					dns.ch, resolver)) != ARES_SUCCESS) {
		ares_destroy(dns.ch);
		ares_library_cleanup();
		goto fail;
	}
	uv_timer_init(loop_get(), &dns.timer);
	uv_timer_init(loop_get(), &dns.finish);
	dns.finished = NULL;
	dns.finished_tail = &dns.finished;
	dns.up = true;
	return 0;
fail:
	log_msg(LOG_ERROR, "core", "event=dns-error error=%s",
		log_str(ares_strerror(r)));
	return -1;
}

void dns_cleanup(void)
{
	if (!dns.up)
		return;
	/* Every pending query's callbacks run now with ARES_ECANCELLED,
	 * which finishes its lookup as DNS_TEMP. */
	ares_cancel(dns.ch);
	on_finish(&dns.finish);
	ares_destroy(dns.ch); /* closes its sockets: on_sock_state(0, 0) */
	ares_library_cleanup();
	while (dns.socks != NULL) {
		struct dns_sock *s = dns.socks;
		dns.socks = s->next;
		uv_close((uv_handle_t *)&s->poll, (uv_close_cb)free);
	}
	uv_close((uv_handle_t *)&dns.timer, NULL);
	uv_close((uv_handle_t *)&dns.finish, NULL);
	assert(dns.live == 0);
	dns.up = false;
}

/* --- pure parts ---------------------------------------------------------- */

/* A host's place among those of equal preference: a hash of its name
 * keyed by seed (splitmix64 over FNV-1a), so each exchanger's addresses
 * stay together and a new seed draws a new order. */
static uint64_t dns_host_rank(const char *host, uint64_t seed)
{
	uint64_t h = 1469598103934665603ull ^ seed;

	for (; *host; host++)
		h = (h ^ (unsigned char)*host) * 1099511628211ull;
	h += 0x9e3779b97f4a7c15ull;
	h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
	h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
	return h ^ (h >> 31);
}

/* Does a go before b? */
static bool dns_before(const struct dns_target *a, const struct dns_target *b,
		       uint64_t seed)
{
	uint64_t ra, rb;

	if (a->pref != b->pref)
		return a->pref < b->pref;
	if (strcmp(a->host, b->host) != 0) {
		ra = dns_host_rank(a->host, seed);
		rb = dns_host_rank(b->host, seed);
		return ra != rb ? ra < rb : strcmp(a->host, b->host) < 0;
	}
	/* One host: IPv6 first (RFC 6724's default preference). */
	return a->addr.ss_family == AF_INET6 && b->addr.ss_family == AF_INET;
}

void dns_order(struct dns_target *t, size_t n, uint64_t seed)
{
	/* Insertion sort: stable (a family keeps the server's order), and n
	 * is at most a few dozen. */
	for (size_t i = 1; i < n; i++) {
		struct dns_target x = t[i];
		size_t j = i;
		for (; j > 0 && dns_before(&x, &t[j - 1], seed); j--)
			t[j] = t[j - 1];
		t[j] = x;
	}
}

/* Records written into r->text one after the other: each is begun at
 * start, appended to, then ended (kept, or left out when it does not fit). */
struct dns_text {
	struct dns_records *r;
	size_t used, start;
	bool full; /* the record being written does not fit */
};

static void dns_text_put(struct dns_text *t, const char *s, size_t n)
{
	/* One octet stays free for the record's NUL. */
	if (t->full || t->used + n + 1 > sizeof t->r->text) {
		t->full = true;
		return;
	}
	memcpy(t->r->text + t->used, s, n);
	t->used += n;
}

static void dns_text_printf(struct dns_text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void dns_text_printf(struct dns_text *t, const char *fmt, ...)
{
	char buf[64];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	assert(n >= 0 && (size_t)n < sizeof buf);
	dns_text_put(t, buf, (size_t)n);
}

/* A name as c-ares gives it ("" or "." for the root), lower-cased, with
 * its trailing dot. */
static void dns_text_name(struct dns_text *t, const char *name)
{
	size_t n = strlen(name);

	for (size_t i = 0; i < n; i++) {
		char c = (char)tolower((unsigned char)name[i]);
		dns_text_put(t, &c, 1);
	}
	if (n == 0 || name[n - 1] != '.')
		dns_text_put(t, ".", 1);
}

/* TXT octets: printable ASCII as it is, '\' and the rest escaped. */
static void dns_text_txt(struct dns_text *t, const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\\')
			dns_text_put(t, "\\\\", 2);
		else if (s[i] >= 0x20 && s[i] < 0x7f)
			dns_text_put(t, (const char *)&s[i], 1);
		else
			dns_text_printf(t, "\\%03u", s[i]);
	}
}

static void dns_text_end(struct dns_text *t)
{
	struct dns_records *r = t->r;

	if (t->full || r->n == DNS_RECORDS_MAX) {
		r->cut = true;
		t->used = t->start;
	} else {
		r->text[t->used++] = '\0';
		r->rr[r->n++] = r->text + t->start;
	}
	t->start = t->used;
	t->full = false;
}

static int dns_str_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void dns_records_parse(enum dns_rr type, const unsigned char *abuf, int alen,
		       struct dns_records *r)
{
	struct dns_text t = {r, 0, 0, false};
	struct ares_addrttl a4[DNS_RECORDS_MAX];
	struct ares_addr6ttl a6[DNS_RECORDS_MAX];
	struct ares_mx_reply *mx = NULL;
	struct ares_txt_ext *txt = NULL;
	struct ares_srv_reply *srv = NULL;
	struct hostent *h = NULL;
	char ip[INET6_ADDRSTRLEN];
	int st, n = DNS_RECORDS_MAX;

	r->status = DNS_ANSWER_OK;
	r->error = NULL;
	r->n = 0;
	r->cut = false;
	switch (type) {
	case DNS_RR_A:
		st = ares_parse_a_reply(abuf, alen, NULL, a4, &n);
		for (int i = 0; st == ARES_SUCCESS && i < n; i++) {
			inet_ntop(AF_INET, &a4[i].ipaddr, ip, sizeof ip);
			dns_text_put(&t, ip, strlen(ip));
			dns_text_end(&t);
		}
		break;
	case DNS_RR_AAAA:
		st = ares_parse_aaaa_reply(abuf, alen, NULL, a6, &n);
		for (int i = 0; st == ARES_SUCCESS && i < n; i++) {
			inet_ntop(AF_INET6, &a6[i].ip6addr, ip, sizeof ip);
			dns_text_put(&t, ip, strlen(ip));
			dns_text_end(&t);
		}
		break;
	case DNS_RR_MX:
		st = ares_parse_mx_reply(abuf, alen, &mx);
		for (struct ares_mx_reply *m = mx; st == ARES_SUCCESS && m;
		     m = m->next) {
			dns_text_printf(&t, "%u ", m->priority);
			dns_text_name(&t, m->host);
			dns_text_end(&t);
		}
		break;
	case DNS_RR_TXT:
		/* A record is one or more strings, the first marked
		 * record_start. */
		st = ares_parse_txt_reply_ext(abuf, alen, &txt);
		for (struct ares_txt_ext *x = txt; st == ARES_SUCCESS && x;
		     x = x->next) {
			dns_text_txt(&t, x->txt, x->length);
			if (x->next == NULL || x->next->record_start)
				dns_text_end(&t);
		}
		break;
	case DNS_RR_CNAME:
		/* c-ares 1.18 has no CNAME parser; its A parser follows
		 * the aliases: h_aliases names them, h_name is where they
		 * lead. A resolver asked for a CNAME answers that one
		 * record, so h_name is its target. */
		st = ares_parse_a_reply(abuf, alen, &h, a4, &n);
		if (st == ARES_SUCCESS && h->h_aliases[0] == NULL)
			st = ARES_ENODATA;
		if (st == ARES_SUCCESS) {
			dns_text_name(&t, h->h_name);
			dns_text_end(&t);
		}
		break;
	case DNS_RR_SRV:
		st = ares_parse_srv_reply(abuf, alen, &srv);
		for (struct ares_srv_reply *v = srv; st == ARES_SUCCESS && v;
		     v = v->next) {
			dns_text_printf(&t, "%u %u %u ", v->priority, v->weight,
					v->port);
			dns_text_name(&t, v->host);
			dns_text_end(&t);
		}
		break;
	default:
		st = ARES_ENOTIMP;
		break;
	}
	ares_free_data(mx);
	ares_free_data(txt);
	ares_free_data(srv);
	if (h != NULL)
		ares_free_hostent(h);
	if (st == ARES_SUCCESS && r->n == 0 && !r->cut)
		st = ARES_ENODATA;
	if (st == ARES_ENODATA) {
		dns_records_fail(st, r);
		return;
	}
	if (st != ARES_SUCCESS) { /* EBADRESP, EBADNAME: cut short, looped */
		r->n = 0;
		r->status = DNS_ANSWER_TEMP;
		r->error = "malformed DNS answer";
		return;
	}
	qsort(r->rr, r->n, sizeof *r->rr, dns_str_cmp);
}

int dns_to_ascii(const char *domain, char *out)
{
	char *a = NULL;
	size_t n = strlen(domain);
	bool ascii = true;

	for (size_t i = 0; i < n; i++)
		ascii &= (unsigned char)domain[i] < 0x80;
	if (n > 0 && domain[n - 1] == '.')
		n--; /* a trailing dot: the same name */
	if (n == 0 || n > DNS_NAME_MAX)
		return -1;
	if (ascii) {
		for (size_t i = 0; i < n; i++)
			out[i] = (char)tolower((unsigned char)domain[i]);
		out[n] = '\0';
		return 0;
	}
	/* U-label to A-label (IDNA2008 with UTS #46 mapping, libidn2's
	 * default): "bücher.example" -> "xn--bcher-kva.example". */
	if (idn2_to_ascii_8z(domain, &a, IDN2_NONTRANSITIONAL) != IDN2_OK)
		return -1;
	n = strlen(a);
	if (n > 0 && a[n - 1] == '.')
		n--;
	if (n == 0 || n > DNS_NAME_MAX) {
		idn2_free(a);
		return -1;
	}
	memcpy(out, a, n);
	out[n] = '\0';
	idn2_free(a);
	return 0;
}
