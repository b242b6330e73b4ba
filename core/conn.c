/*
 * conn.c - listeners, connections, the line reader and the write queue.
 * see conn.h
 */
#include "core/conn.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "base/log.h"
#include "core/netaddr.h"

/* A listener and the count of connections per client IP on it. */
struct listener {
	uv_tcp_t tcp;
	struct conn_listen_opts opts;
	size_t nconns; /* its connections: it is freed after the last */
	bool closed;   /* its socket is closed */
	struct ipcount *ips[256]; /* hash buckets */
	struct listener *next;
};

struct ipcount {
	struct ipcount *next;
	unsigned count;
	struct netaddr ip; /* netaddr_client */
};

/* A piece of pending output: c->out[off..off+len), or base[0..len). */
struct out_seg {
	const char *base;
	size_t off, len;
};

struct out_done {
	void (*done)(void *arg);
	void *arg;
};

struct conn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	struct listener *lis;
	void *session;
	struct conn *prev, *next; /* all connections, for shutdown */

	/* Input being parsed: either the shared buffer or `in`. */
	char *rp;
	size_t rn;
	char *in; /* own buffer: what was left unconsumed */
	size_t in_len, in_cap;

	/* Output not yet handed to the socket, in order: bytes copied into
	 * `out`, and references to callers' memory (see conn_write_ref). */
	char *out;
	size_t out_len, out_cap, pending;
	struct out_seg *segs;
	unsigned nsegs, cap_segs;
	struct out_done *dones;
	unsigned ndones, cap_dones;
	uv_buf_t *iov; /* scratch for conn_flush */
	unsigned cap_iov;

	unsigned paused : 1, closing : 1, closed : 1, dispatching : 1,
	    skip_line : 1, reading : 1, busy : 1;
	int handles; /* open uv handles, freed at 0 */
	struct sockaddr_storage peer;
	struct netaddr net; /* peer, normalised */
	char peer_text[NETADDR_TEXT_MAX];
	char sid[13];
};

static struct listener *listeners;
static struct conn *conns;
static size_t nconns; /* open connections */
static size_t nalloc; /* connections whose memory is not yet freed */
static void (*all_closed)(void *arg); /* set by conn_shutdown */
static void *all_closed_arg;
static char shared_buf[CONN_READ_BUF];

static void conn_dispatch(struct conn *c, enum conn_event ev);
static void listener_free(struct listener *l);
static void conn_settle(struct conn *c);
static void conn_flush(struct conn *c);
static void conn_finish_close(struct conn *c);

/* --- per-IP counting ---------------------------------------------------- */

/* Adds delta to the count of the peer's client address; returns the new
 * count. */
static unsigned ip_count(struct listener *l, const struct netaddr *peer,
			 int delta)
{
	struct netaddr ip = netaddr_client(peer);
	struct ipcount **pp, *e;

	for (pp = &l->ips[netaddr_hash(&ip) % 256]; (e = *pp) != NULL;
	     pp = &e->next)
		if (netaddr_equal(&e->ip, &ip))
			break;
	if (e == NULL) {
		assert(delta > 0);
		e = xcalloc(1, sizeof *e);
		e->ip = ip;
		*pp = e;
	}
	e->count += (unsigned)delta;
	if (e->count == 0) {
		*pp = e->next;
		free(e);
		return 0;
	}
	return e->count;
}

/* --- close -------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
	struct conn *c = h->data;

	if (--c->handles == 0) {
		/* Its pending writes were cancelled by now, and their
		 * callbacks ran: no read of the store is held for it. */
		if (--nalloc == 0 && all_closed != NULL) {
			void (*done)(void *) = all_closed;
			all_closed = NULL; /* once */
			done(all_closed_arg);
		}
		free(c->in);
		free(c->out);
		free(c->segs);
		free(c->dones);
		free(c->iov);
		free(c);
	}
}

/* Really closes: the session goes, the handles follow. */
static void conn_finish_close(struct conn *c)
{
	if (c->closed)
		return;
	c->closed = 1;
	if (c->session != NULL)
		c->lis->opts.proto->free(c->session);
	c->session = NULL;
	ip_count(c->lis, &c->net, -1);
	if (--c->lis->nconns == 0 && c->lis->closed)
		listener_free(c->lis);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	nconns--;
	uv_close((uv_handle_t *)&c->timer, on_handle_closed);
	uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

static void on_timer(uv_timer_t *t)
{
	struct conn *c = t->data;

	if (c->closing) {
		/* The peer did not read its last replies in time. */
		conn_finish_close(c);
		return;
	}
	log_msg(LOG_INFO, c->lis->opts.proto->name, "sid=%s event=timeout",
		c->sid);
	conn_dispatch(c, CONN_TIMEOUT);
}

void conn_close(struct conn *c)
{
	if (c->closing)
		return;
	c->closing = 1;
	if (c->reading)
		uv_read_stop((uv_stream_t *)&c->tcp);
	c->reading = 0;
	/* Inside a handler, or with an operation pending, the close completes
	 * when that returns (conn_settle) or resumes (conn_resume). */
	if (!c->dispatching && !c->paused)
		conn_settle(c);
}

bool conn_closing(struct conn *c)
{
	return c->closing;
}

/* --- writing ------------------------------------------------------------ */

/* Output collects until the handler returns (or CONN_OUT_HIGH is passed),
 * then goes to the socket in one writev: pipelined replies and messages
 * cost one system call, not one each. */

/* A written (or dropped) batch: the copied bytes it owned and the callbacks
 * of the memory it referenced. */
struct write_req {
	uv_write_t req;
	struct conn *c;
	char *out;
	struct out_done *dones;
	unsigned ndones;
};

static void run_dones(struct out_done *d, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		d[i].done(d[i].arg);
}

/* Forgets output not yet handed to the socket (the peer is gone). */
static void conn_drop_output(struct conn *c)
{
	run_dones(c->dones, c->ndones);
	c->ndones = c->nsegs = 0;
	c->out_len = c->pending = 0;
}

static void on_write(uv_write_t *req, int status)
{
	struct write_req *w = (struct write_req *)req;
	struct conn *c = w->c;

	run_dones(w->dones, w->ndones);
	free(w->dones);
	free(w->out);
	free(w);
	c->busy = c->tcp.write_queue_size != 0;
	if (status == 0 && !c->paused && !c->closing)
		uv_timer_again(&c->timer); /* output progressed */
	if (status < 0 && !c->closing) {
		log_msg(LOG_INFO, c->lis->opts.proto->name,
			"sid=%s event=write-error error=%s", c->sid,
			uv_err_name(status));
		conn_drop_output(c);
		conn_close(c);
	}
	/* Output drained below the mark: take the input held back. */
	if (c->closing || !conn_out_full(c))
		conn_dispatch(c, CONN_DATAIN);
}

/* Hands the collected output to the socket: written now as far as the
 * kernel takes it, the rest queued with the buffers it needs. This is
 * where a TLS engine would encrypt. */
static void conn_flush(struct conn *c)
{
	struct write_req *w;
	uv_buf_t *bufs;
	unsigned n = c->nsegs;
	size_t done;
	int r = UV_EAGAIN;

	if (n == 0)
		return;
	if (c->closed) {
		conn_drop_output(c);
		return;
	}
	if (n > c->cap_iov) {
		c->cap_iov = n;
		c->iov = xrealloc(c->iov, n * sizeof *c->iov);
	}
	bufs = c->iov;
	for (unsigned i = 0; i < n; i++) {
		struct out_seg *sg = &c->segs[i];
		bufs[i] =
		    uv_buf_init(sg->base ? (char *)sg->base : c->out + sg->off,
				(unsigned)sg->len);
	}
	if (c->tcp.write_queue_size == 0)
		r = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
	if (r < 0 && r != UV_EAGAIN) {
		conn_drop_output(c);
		conn_close(c);
		return;
	}
	done = r > 0 ? (size_t)r : 0;
	if (done == c->pending) { /* all written: the common case */
		conn_drop_output(c);
		return;
	}
	while (done >= bufs->len) { /* skip what the kernel took */
		done -= bufs->len;
		bufs++, n--;
	}
	bufs->base += done;
	bufs->len -= done;
	/* The request takes the copied bytes and the callbacks along. */
	w = xmalloc(sizeof *w);
	*w = (struct write_req){
	    .c = c, .out = c->out, .dones = c->dones, .ndones = c->ndones};
	c->out = NULL;
	c->dones = NULL;
	c->out_cap = c->cap_dones = 0;
	c->ndones = c->nsegs = 0;
	c->out_len = c->pending = 0;
	r = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, n, on_write);
	if (r < 0) {
		on_write(&w->req, r);
		return;
	}
	c->busy = 1;
}

static struct out_seg *conn_seg(struct conn *c)
{
	if (c->nsegs == c->cap_segs) {
		c->cap_segs = c->cap_segs ? 2 * c->cap_segs : 8;
		c->segs = xrealloc(c->segs, c->cap_segs * sizeof *c->segs);
	}
	return &c->segs[c->nsegs++];
}

void conn_write(struct conn *c, const void *p, size_t n)
{
	struct out_seg *last = c->nsegs ? &c->segs[c->nsegs - 1] : NULL;

	if (c->closed || n == 0)
		return;
	if (c->out_len + n > c->out_cap) {
		c->out_cap = c->out_len + n < 512 ? 512 : 2 * (c->out_len + n);
		c->out = xrealloc(c->out, c->out_cap);
	}
	memcpy(c->out + c->out_len, p, n);
	if (last != NULL && last->base == NULL &&
	    last->off + last->len == c->out_len)
		last->len += n; /* extends the copied run before it */
	else
		*conn_seg(c) = (struct out_seg){NULL, c->out_len, n};
	c->out_len += n;
	c->pending += n;
	if (c->pending >= CONN_OUT_HIGH)
		conn_flush(c);
}

void conn_puts(struct conn *c, const char *s)
{
	conn_write(c, s, strlen(s));
}

void conn_printf(struct conn *c, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	conn_write(c, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

void conn_write_ref(struct conn *c, const uv_buf_t *bufs, unsigned n,
		    void (*done)(void *arg), void *arg)
{
	assert(done != NULL);
	if (c->closed) {
		done(arg);
		return;
	}
	for (unsigned i = 0; i < n; i++) {
		if (bufs[i].len == 0)
			continue;
		*conn_seg(c) = (struct out_seg){bufs[i].base, 0, bufs[i].len};
		c->pending += bufs[i].len;
	}
	if (c->ndones == c->cap_dones) {
		c->cap_dones = c->cap_dones ? 2 * c->cap_dones : 4;
		c->dones = xrealloc(c->dones, c->cap_dones * sizeof *c->dones);
	}
	c->dones[c->ndones++] = (struct out_done){done, arg};
	if (c->pending >= CONN_OUT_HIGH)
		conn_flush(c);
}

bool conn_out_full(struct conn *c)
{
	return c->tcp.write_queue_size + c->pending > CONN_OUT_HIGH;
}

/* --- reading ------------------------------------------------------------ */

static bool conn_held(struct conn *c)
{
	return c->paused || c->closing || conn_out_full(c);
}

void conn_consume(struct conn *c, size_t n)
{
	assert(n <= c->rn);
	c->rp += n;
	c->rn -= n;
}

bool conn_peek(struct conn *c, const char **p, size_t *n)
{
	*p = c->rp;
	*n = conn_held(c) ? 0 : c->rn;
	return *n > 0;
}

enum conn_line conn_getline(struct conn *c, size_t max, char **line,
			    size_t *len)
{
	char *lf;
	size_t n;

	if (conn_held(c))
		return CONN_AGAIN;
	if (c->skip_line) { /* the rest of an over-long line */
		lf = memchr(c->rp, '\n', c->rn);
		if (lf == NULL) {
			conn_consume(c, c->rn);
			return CONN_AGAIN;
		}
		conn_consume(c, (size_t)(lf - c->rp) + 1);
		c->skip_line = 0;
	}
	lf = memchr(c->rp, '\n', c->rn < max ? c->rn : max);
	if (lf == NULL) {
		if (c->rn < max)
			return CONN_AGAIN;
		/* No LF within max octets: drop the line through its LF, now
		 * if it is buffered, else as it arrives. */
		lf = memchr(c->rp + max, '\n', c->rn - max);
		if (lf != NULL) {
			conn_consume(c, (size_t)(lf - c->rp) + 1);
		} else {
			c->skip_line = 1;
			conn_consume(c, c->rn);
		}
		return CONN_LINE_TOOLONG;
	}
	*line = c->rp;
	n = (size_t)(lf - c->rp);
	conn_consume(c, n + 1);
	if (n > 0 && (*line)[n - 1] == '\r') {
		(*line)[--n] = '\0';
		*len = n;
		return CONN_LINE;
	}
	(*line)[n] = '\0';
	*len = n;
	return CONN_LINE_BARELF;
}

/* Keeps what the protocol left unconsumed in the connection's own buffer,
 * so the shared buffer is free for the next read. */
static void conn_stash(struct conn *c)
{
	if (c->rn == 0) {
		c->in_len = 0;
		if (c->in_cap > 4096) { /* give back a grown buffer */
			free(c->in);
			c->in = NULL;
			c->in_cap = 0;
		}
		c->rp = NULL;
		return;
	}
	if (c->rp >= c->in && c->rp < c->in + c->in_cap) {
		memmove(c->in, c->rp, c->rn);
	} else {
		if (c->rn > c->in_cap) {
			c->in_cap = c->rn < 1024 ? 1024 : c->rn;
			free(c->in);
			c->in = xmalloc(c->in_cap);
		}
		memcpy(c->in, c->rp, c->rn);
	}
	c->in_len = c->rn;
	c->rp = c->in;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	(void)h, (void)hint;
	*buf = uv_buf_init(shared_buf, sizeof shared_buf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Runs the protocol's handler (DATAIN only for input it may take now),
 * then settles the connection. The only caller of proto->event. */
static void conn_dispatch(struct conn *c, enum conn_event ev)
{
	if (c->dispatching || c->closed)
		return;
	if (ev != CONN_DATAIN || (c->rn > 0 && !conn_held(c))) {
		c->dispatching = 1;
		c->lis->opts.proto->event(c, c->session, ev);
		c->dispatching = 0;
	}
	conn_settle(c);
}

/* After a handler: keep unconsumed input, send replies, and either finish
 * a close or decide whether to read on. */
static void conn_settle(struct conn *c)
{
	bool want;

	if (c->closed)
		return;
	conn_stash(c);
	conn_flush(c);
	if (c->closing) {
		if (c->paused)
			return; /* conn_resume() comes back here */
		if (!c->busy)
			conn_finish_close(c);
		else if (!uv_is_active((uv_handle_t *)&c->timer) ||
			 uv_timer_get_repeat(&c->timer) != 0)
			uv_timer_start(&c->timer, on_timer,
				       CONN_CLOSE_GRACE * 1000, 0);
		return;
	}
	/* Reading goes on while input is held back (a pause, full output),
	 * up to CONN_IN_MAX buffered: a client that waits for its reply sends
	 * nothing meanwhile, and stopping and restarting the socket's poll for
	 * every command would cost two system calls each time. */
	want = c->rn < CONN_IN_MAX;
	if (want && !c->reading)
		uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
	else if (!want && c->reading)
		uv_read_stop((uv_stream_t *)&c->tcp);
	c->reading = want;
}

/* Plaintext arrives here; a TLS engine would decrypt first. */
static void conn_feed(struct conn *c, char *data, size_t n)
{
	if (c->in_len == 0) {
		c->rp = data; /* parse straight from the shared buffer */
		c->rn = n;
	} else {
		if (c->in_len + n > c->in_cap) {
			c->in_cap = c->in_len + n;
			c->in = xrealloc(c->in, c->in_cap);
		}
		memcpy(c->in + c->in_len, data, n);
		c->in_len += n;
		c->rp = c->in;
		c->rn = c->in_len;
	}
	conn_dispatch(c, CONN_DATAIN);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = s->data;

	if (nread == 0)
		return;
	if (nread < 0) {
		if (nread != UV_EOF)
			log_msg(LOG_INFO, c->lis->opts.proto->name,
				"sid=%s event=read-error error=%s", c->sid,
				uv_err_name((int)nread));
		conn_drop_output(c);
		conn_close(c);
		return;
	}
	/* The idle clock restarts on input, unless we are the slow one (a
	 * pause) or output is waiting: then only its progress counts, so a
	 * client that trickles bytes but never reads still times out (and
	 * releases what its pending output holds, such as map reads). */
	if (!c->paused && !c->busy)
		uv_timer_again(&c->timer);
	conn_feed(c, buf->base, (size_t)nread);
}

void conn_pause(struct conn *c)
{
	assert(!c->paused);
	c->paused = 1;
	uv_timer_stop(&c->timer);
}

void conn_resume(struct conn *c)
{
	assert(c->paused);
	c->paused = 0;
	if (!c->closing)
		uv_timer_again(&c->timer);
	conn_dispatch(c, CONN_DATAIN);
}

/* --- accepting ---------------------------------------------------------- */

static void conn_make_sid(char sid[13])
{
	static uint64_t base, next;

	if (base == 0 && getrandom(&base, sizeof base, 0) != sizeof base)
		base = (uint64_t)uv_hrtime();
	snprintf(sid, 13, "%012llx",
		 (unsigned long long)((base + next++) & 0xffffffffffffULL));
}

static void on_connection(uv_stream_t *server, int status)
{
	struct listener *l = server->data;
	const struct config_listener *cfg = l->opts.cfg;
	struct conn *c;
	int len = sizeof(struct sockaddr_storage);
	unsigned n;

	if (status < 0) {
		log_msg(LOG_WARN, "core", "event=accept-error error=%s",
			uv_err_name(status));
		return;
	}
	c = xcalloc(1, sizeof *c);
	nalloc++;
	c->lis = l;
	l->nconns++;
	uv_tcp_init(server->loop, &c->tcp);
	uv_timer_init(server->loop, &c->timer);
	c->tcp.data = c->timer.data = c;
	c->handles = 2;
	if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0 ||
	    uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->peer, &len) <
		0) {
		l->nconns--;
		uv_close((uv_handle_t *)&c->timer, on_handle_closed);
		uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
		return;
	}
	netaddr_from_sockaddr(&c->net, (struct sockaddr *)&c->peer);
	netaddr_format(&c->net, c->peer_text, sizeof c->peer_text);
	conn_make_sid(c->sid);
	uv_tcp_nodelay(&c->tcp, 1);
	c->next = conns;
	if (conns != NULL)
		conns->prev = c;
	conns = c;
	nconns++;
	n = ip_count(l, &c->net, +1);
	uv_timer_start(&c->timer, on_timer, cfg->timeout * 1000ull,
		       cfg->timeout * 1000ull);
	if (cfg->max_conn_per_ip > 0 && n > cfg->max_conn_per_ip) {
		log_msg(
		    LOG_WARN, l->opts.proto->name,
		    "sid=%s event=refused ip=%s reason=per-ip-limit count=%u",
		    c->sid, c->peer_text, n);
		conn_puts(c, l->opts.busy_reply);
		conn_close(c);
		return;
	}
	log_msg(LOG_INFO, l->opts.proto->name, "sid=%s event=connect ip=%s",
		c->sid, c->peer_text);
	c->session = l->opts.proto->open(c, l->opts.ctx);
	conn_settle(c);
}

int conn_listen(uv_loop_t *loop, const struct conn_listen_opts *opts)
{
	struct listener *l = xcalloc(1, sizeof *l);
	struct sockaddr_storage ss;
	char name[64];
	int len = sizeof ss, r;

	l->opts = *opts;
	uv_tcp_init(loop, &l->tcp);
	l->tcp.data = l;
	r = config_parse_listen(opts->cfg->listen, &ss) < 0 ? UV_EINVAL : 0;
	if (r == 0)
		r = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0);
	if (r == 0)
		r = uv_listen((uv_stream_t *)&l->tcp, 511, on_connection);
	if (r == 0)
		r = uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &len);
	if (r < 0) {
		log_msg(LOG_ERROR, opts->proto->name,
			"event=listen-error addr=%s error=%s",
			opts->cfg->listen, uv_strerror(r));
		uv_close((uv_handle_t *)&l->tcp, (uv_close_cb)free);
		return r;
	}
	if (ss.ss_family == AF_INET6) {
		name[0] = '[';
		uv_ip6_name((struct sockaddr_in6 *)&ss, name + 1,
			    sizeof name - 8);
		snprintf(name + strlen(name), 8, "]:%u",
			 ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
	} else {
		uv_ip4_name((struct sockaddr_in *)&ss, name, sizeof name - 8);
		snprintf(name + strlen(name), 8, ":%u",
			 ntohs(((struct sockaddr_in *)&ss)->sin_port));
	}
	log_msg(LOG_INFO, opts->proto->name, "event=listening proto=%s addr=%s",
		opts->proto->name, name);
	l->next = listeners;
	listeners = l;
	return 0;
}

static void listener_free(struct listener *l)
{
	for (int i = 0; i < 256; i++)
		while (l->ips[i] != NULL) {
			struct ipcount *e = l->ips[i];
			l->ips[i] = e->next;
			free(e);
		}
	free(l);
}

static void on_listener_closed(uv_handle_t *h)
{
	struct listener *l = h->data;

	l->closed = true;
	if (l->nconns == 0)
		listener_free(l);
}

void conn_shutdown(void (*done)(void *arg), void *arg)
{
	struct conn *c, *next;

	while (listeners != NULL) {
		struct listener *l = listeners;
		listeners = l->next;
		uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
	}
	for (c = conns; c != NULL; c = next) {
		next = c->next;
		if (c->closing)
			continue;
		/* A paused connection awaits a reply (a 250 after its commit):
		 * no farewell may come before it, so it just closes after. */
		if (!c->paused)
			conn_dispatch(c, CONN_SHUTDOWN);
		conn_close(c);
	}
	/* Connections still closing report their end through done. */
	if (nalloc == 0)
		done(arg);
	else
		all_closed = done, all_closed_arg = arg;
}

size_t conn_count(void)
{
	return nconns;
}

/* --- who ---------------------------------------------------------------- */

const char *conn_sid(struct conn *c)
{
	return c->sid;
}

const char *conn_peer(struct conn *c)
{
	return c->peer_text;
}

const struct sockaddr *conn_peer_addr(struct conn *c)
{
	return (const struct sockaddr *)&c->peer;
}

const struct netaddr *conn_peer_net(struct conn *c)
{
	return &c->net;
}

uv_loop_t *conn_loop(struct conn *c)
{
	return c->tcp.loop;
}
