/*
 * conn.c - connections: how they are born (accept, connect), read, write,
 * time out and die. see conn.h
 *
 * A connection's life is one small state machine. The timer's meaning is
 * given by the state:
 *
 *   state       entered by               timer                leaves to
 *   CONNECTING  conn_connect             connect timeout      OPEN, CLOSED
 *   OPEN        accept, or connected     idle or lifetime,    DRAINING
 *                                        whichever is first
 *   DRAINING    conn_close               CONN_CLOSE_GRACE     CLOSED
 *   CLOSED      conn_finish              none                 (freed once
 *                                                             both handles
 *                                                             are closed)
 *
 * Beside the state, these flags:
 *   paused       the protocol waits on an operation (a commit, a password
 *                check): no input is delivered, the timer is stopped (the
 *                wait is ours, not the peer's), and the connection is never
 *                finished, since the operation's callback still holds it;
 *   dispatching  the protocol's code is running: a close it asks for
 *                completes when it returns;
 *   skip_line    the line reader is discarding the rest of an over-long
 *                line;
 *   tls_up       (with tls) the handshake is done: until then input is
 *                held back, plaintext output waits in `out`, and the timer
 *                also bounds the handshake (CONN_TLS_HANDSHAKE).
 * Whether the socket is read follows from these (see conn_settle).
 *
 * TLS sits between the plaintext and the socket: conn_tls_pump() is the
 * one place the BearSSL engine is driven. Ciphertext read goes into it
 * and the plaintext it yields is appended to the input; queued plaintext
 * output goes into it and the records it yields are queued in `cout`,
 * which then takes the place of `out` on the way to the socket.
 */
#include "core/conn.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "base/log.h"
#include "core/tls.h"

#define IP_BUCKETS                                                             \
	256		/* per-listener table of clients: a hash, so a         \
			 * few thousand clients stay a short walk */
#define OUT_KEEP   4096 /* a drained output buffer up to this is kept */
#define IN_MIN	   1024 /* first size of a connection's own input buffer */
#define IN_KEEP	   4096 /* an emptied input buffer up to this is kept */
#define PRINTF_MAX 1024 /* one conn_printf reply, at most */

enum conn_state { C_CONNECTING, C_OPEN, C_DRAINING, C_CLOSED };

/* Bytes queued for the socket, p[off..len). */
struct outq {
	char *p;
	size_t off, len, cap;
};

/* A listener and the count of connections per client on it. */
struct listener {
	uv_tcp_t tcp;
	struct conn_listen_opts opts;
	size_t nconns; /* its connections: it is freed after the last */
	bool closed;   /* its socket is closed */
	char addr[NETADDR_TEXT_MAX + 18]; /* "[v6]:port" as bound */
	struct ipcount *ips[IP_BUCKETS];
	struct listener *next;
};

struct ipcount {
	struct ipcount *next;
	unsigned count;
	struct netaddr ip; /* netaddr_client */
};

/* The one write in flight; it owns the bytes it sends. */
struct write_req {
	uv_write_t req;
	struct conn *c;
	char *buf;
};

struct conn {
	uv_tcp_t tcp;
	uv_timer_t timer; /* see the table above */
	enum conn_state state;
	const struct conn_proto *proto;
	void *session;
	struct listener *lis; /* NULL for an outbound connection */
	struct conn *prev, *next;
	uint64_t idle_ms;
	uint64_t expires; /* loop time the session's lifetime ends; 0: never */
	int error;	  /* why an outbound connection ended */

	/* Input being parsed: either the shared buffer or `in`. */
	char *rp;
	size_t rn;
	char *in; /* own buffer: what was left unconsumed */
	size_t in_len, in_cap;

	/* Output: plaintext queued in out; with TLS, the records made of
	 * it in cout; and what the one write in flight (wreq) still has to
	 * send. */
	struct outq out, cout;
	struct write_req *wreq;
	size_t inflight;
	bool (*more)(struct conn *c, void *arg); /* a stream (conn_stream) */
	void *more_arg;

	struct tls *tls;      /* NULL for plaintext */
	uint64_t tls_expires; /* loop time the handshake must end by */

	unsigned paused : 1, dispatching : 1, skip_line : 1, reading : 1;
	unsigned tls_up : 1, tls_closed : 1;
	int handles;		   /* open uv handles, freed at 0 */
	struct netaddr net, local; /* the peer's address and ours */
	char peer_text[NETADDR_TEXT_MAX];
	char sid[13];
};

static struct listener *listeners;
static struct conn *conns;
static size_t nconns;	 /* connections not yet CLOSED */
static size_t ninbound;	 /* of which accepted ones, for the global cap */
static size_t max_conns; /* conn_set_max; 0: no cap */
static size_t nalloc;	 /* connections whose memory is not yet freed */
static void (*all_closed)(void *arg); /* set by conn_shutdown */
static void *all_closed_arg;
static char shared_buf[CONN_READ_BUF];

static void conn_dispatch(struct conn *c, enum conn_event ev);
static void conn_settle(struct conn *c);
static void conn_flush(struct conn *c);
static bool conn_tls_pump(struct conn *c, const char *in, size_t n);
static bool conn_tls_begin(struct conn *c, struct tls *t);
static void listener_free(struct listener *l);
static void on_timer(uv_timer_t *t);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void conn_finish(struct conn *c);

/* --- birth --------------------------------------------------------------- */

static void conn_make_sid(char sid[13])
{
	static uint64_t base, next;

	if (base == 0 && getrandom(&base, sizeof base, 0) != sizeof base)
		base = (uint64_t)uv_hrtime();
	snprintf(sid, 13, "%012llx",
		 (unsigned long long)((base + next++) & 0xffffffffffffULL));
}

static void on_handle_closed(uv_handle_t *h)
{
	struct conn *c = h->data;

	if (--c->handles > 0)
		return;
	/* Its write was cancelled by now, and the callback ran. */
	free(c->in);
	free(c->out.p);
	free(c->cout.p);
	tls_free(c->tls);
	free(c);
	if (--nalloc == 0 && all_closed != NULL) {
		void (*done)(void *) = all_closed;
		all_closed = NULL; /* once */
		done(all_closed_arg);
	}
}

/* A connection in state, with its handles, in the list of connections. */
static struct conn *conn_new(uv_loop_t *loop, const struct conn_proto *proto,
			     enum conn_state state)
{
	struct conn *c = xcalloc(1, sizeof *c);

	nalloc++;
	c->proto = proto;
	c->state = state;
	uv_tcp_init(loop, &c->tcp);
	uv_timer_init(loop, &c->timer);
	c->tcp.data = c->timer.data = c;
	c->handles = 2;
	conn_make_sid(c->sid);
	c->next = conns;
	if (conns != NULL)
		conns->prev = c;
	conns = c;
	nconns++;
	return c;
}

static void conn_set_peer(struct conn *c, const struct sockaddr *sa)
{
	netaddr_from_sockaddr(&c->net, sa);
	netaddr_format(&c->net, c->peer_text, sizeof c->peer_text);
}

/* Adds delta to the count of the peer's client on l; the new count. */
static unsigned ip_count(struct listener *l, const struct netaddr *peer,
			 int delta)
{
	struct netaddr ip = netaddr_client(peer);
	struct ipcount **pp, *e;

	for (pp = &l->ips[netaddr_hash(&ip) % IP_BUCKETS]; (e = *pp) != NULL;
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

/* Idle timeout or the end of the session's lifetime, or of a handshake,
 * whichever is first. */
static void conn_arm(struct conn *c)
{
	uint64_t now = uv_now(c->tcp.loop), due = now + c->idle_ms;

	if (c->expires != 0 && c->expires < due)
		due = c->expires;
	if (c->tls != NULL && !c->tls_up && c->tls_expires < due)
		due = c->tls_expires;
	uv_timer_start(&c->timer, on_timer, due > now ? due - now : 0, 0);
}

static void on_connection(uv_stream_t *server, int status)
{
	struct listener *l = server->data;
	const struct config_listener *cfg = l->opts.cfg;
	struct sockaddr_storage ss;
	int len = sizeof ss;
	struct conn *c;
	unsigned n;

	if (status < 0) {
		log_msg(LOG_WARN, "core", "event=accept-error error=%s",
			uv_err_name(status));
		return;
	}
	c = conn_new(server->loop, l->opts.proto, C_OPEN);
	if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0 ||
	    uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) < 0) {
		c->state = C_DRAINING; /* nothing to drain: closes at once */
		conn_settle(c);
		return;
	}
	c->lis = l;
	l->nconns++;
	ninbound++;
	conn_set_peer(c, (struct sockaddr *)&ss);
	len = sizeof ss;
	if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
		netaddr_from_sockaddr(&c->local, (struct sockaddr *)&ss);
	uv_tcp_nodelay(&c->tcp, 1);
	c->idle_ms = cfg->timeout * 1000ull;
	if (cfg->max_session_time > 0)
		c->expires =
		    uv_now(server->loop) + cfg->max_session_time * 1000ull;
	conn_arm(c);
	n = ip_count(l, &c->net, +1);
	if ((max_conns > 0 && ninbound > max_conns) ||
	    (cfg->max_conn_per_ip > 0 && n > cfg->max_conn_per_ip)) {
		bool global = max_conns > 0 && ninbound > max_conns;
		log_msg(LOG_WARN, c->proto->name,
			"sid=%s event=refused ip=%s reason=%s count=%zu",
			c->sid, c->peer_text,
			global ? "global-limit" : "per-ip-limit",
			global ? ninbound : (size_t)n);
		/* A TLS client could read the reply only after a handshake
		 * we do not want to spend on it: it just gets the close. */
		if (!l->opts.tls)
			conn_puts(c, global ? l->opts.full_reply
					    : l->opts.busy_reply);
		conn_close(c);
		return;
	}
	log_msg(LOG_INFO, c->proto->name, "sid=%s event=connect ip=%s%s",
		c->sid, c->peer_text, l->opts.tls ? " tls=implicit" : "");
	/* Implicit TLS: the greeting open() queues waits for the engine. */
	if (l->opts.tls && !conn_tls_begin(c, tls_server_new()))
		return;
	c->session = c->proto->open(c, l->opts.ctx);
	conn_settle(c);
}

int conn_listen(uv_loop_t *loop, const struct conn_listen_opts *opts)
{
	struct listener *l = xcalloc(1, sizeof *l);
	struct sockaddr_storage ss;
	struct netaddr na;
	char name[NETADDR_TEXT_MAX + 8];
	int len = sizeof ss, r;

	l->opts = *opts;
	uv_tcp_init(loop, &l->tcp);
	l->tcp.data = l;
	r = config_parse_listen(opts->cfg->listen, &ss) < 0 ? UV_EINVAL : 0;
	if (r == 0)
		r = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0);
	if (r == 0)
		r = uv_listen((uv_stream_t *)&l->tcp, CONN_BACKLOG,
			      on_connection);
	if (r == 0)
		r = uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &len);
	if (r < 0) {
		log_msg(LOG_ERROR, opts->proto->name,
			"event=listen-error addr=%s error=%s",
			opts->cfg->listen, uv_strerror(r));
		uv_close((uv_handle_t *)&l->tcp, (uv_close_cb)free);
		return r;
	}
	/* The address as bound: a v4-mapped one stays as written. */
	if (ss.ss_family == AF_INET6) {
		name[0] = '[';
		uv_ip6_name((struct sockaddr_in6 *)&ss, name + 1,
			    sizeof name - 1);
		strcat(name, "]");
	} else {
		netaddr_from_sockaddr(&na, (struct sockaddr *)&ss);
		netaddr_format(&na, name, sizeof name);
	}
	snprintf(l->addr, sizeof l->addr, "%s:%u", name,
		 ntohs(((struct sockaddr_in *)&ss)->sin_port));
	log_msg(LOG_INFO, opts->proto->name, "event=listening proto=%s addr=%s",
		opts->name != NULL ? opts->name : opts->proto->name, l->addr);
	l->next = listeners;
	listeners = l;
	return 0;
}

static void on_connect(uv_connect_t *req, int status)
{
	struct conn *c = req->data;

	free(req);
	if (c->state != C_CONNECTING)
		return; /* timed out, closed: it was cancelled */
	if (status < 0) {
		c->error = status;
		log_msg(LOG_INFO, c->proto->name,
			"sid=%s event=connect-failed ip=%s error=%s", c->sid,
			c->peer_text, uv_err_name(status));
		c->state = C_DRAINING;
		conn_settle(c);
		return;
	}
	c->state = C_OPEN;
	uv_tcp_nodelay(&c->tcp, 1);
	conn_arm(c);
	log_msg(LOG_INFO, c->proto->name, "sid=%s event=connected ip=%s",
		c->sid, c->peer_text);
	conn_dispatch(c, CONN_OPEN);
}

struct conn *conn_connect(uv_loop_t *loop, const struct sockaddr *addr,
			  const struct conn_proto *proto, void *session,
			  unsigned connect_timeout, unsigned idle_timeout)
{
	struct conn *c = conn_new(loop, proto, C_CONNECTING);
	uv_connect_t *req = xmalloc(sizeof *req);
	int r;

	c->session = session;
	c->idle_ms = idle_timeout * 1000ull;
	conn_set_peer(c, addr);
	req->data = c;
	r = uv_tcp_connect(req, &c->tcp, addr, on_connect);
	if (r < 0) {
		/* Reported from the loop, as promised: the timer fires now. */
		free(req);
		c->error = r;
		uv_timer_start(&c->timer, on_timer, 0, 0);
	} else {
		uv_timer_start(&c->timer, on_timer, connect_timeout * 1000ull,
			       0);
	}
	return c;
}

void conn_set_max(size_t max)
{
	max_conns = max;
}

/* --- reading -------------------------------------------------------------- */

static bool conn_held(struct conn *c)
{
	return c->state != C_OPEN || c->paused || c->more != NULL ||
	       conn_out_full(c) || (c->tls != NULL && !c->tls_up);
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

	if (conn_held(c) || c->rn == 0)
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
		/* Give back a grown buffer; with TLS every input passes
		 * through it, and an idle connection keeps none. */
		if (c->in_cap > (c->tls != NULL ? 0 : IN_KEEP)) {
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
			c->in_cap = c->rn < IN_MIN ? IN_MIN : c->rn;
			free(c->in);
			c->in = xmalloc(c->in_cap);
		}
		memcpy(c->in, c->rp, c->rn);
	}
	c->in_len = c->rn;
	c->rp = c->in;
}

/* Appends input to the connection's own buffer. Never while a handler
 * runs: it holds pointers into that buffer. */
static void conn_take(struct conn *c, const void *data, size_t n)
{
	assert(!c->dispatching);
	if (c->in_len + n > c->in_cap) {
		c->in_cap = c->in_len + n;
		c->in = xrealloc(c->in, c->in_cap);
	}
	memcpy(c->in + c->in_len, data, n);
	c->in_len += n;
	c->rp = c->in;
	c->rn = c->in_len;
}

/* Plaintext arrives here (conn_tls_pump takes TLS's decrypted input). */
static void conn_feed(struct conn *c, char *data, size_t n)
{
	if (c->in_len == 0) {
		c->rp = data; /* parse straight from the shared buffer */
		c->rn = n;
	} else {
		conn_take(c, data, n);
	}
	conn_dispatch(c, CONN_DATAIN);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	(void)h, (void)hint;
	*buf = uv_buf_init(shared_buf, sizeof shared_buf);
}

/* Forgets output not yet handed to the socket (the peer is gone). */
static void conn_drop_output(struct conn *c)
{
	c->out.off = c->out.len = 0;
	c->cout.off = c->cout.len = 0;
	c->more = NULL;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = s->data;

	if (nread == 0 || c->state != C_OPEN)
		return;
	if (nread < 0) {
		if (nread != UV_EOF)
			log_msg(LOG_INFO, c->proto->name,
				"sid=%s event=read-error error=%s", c->sid,
				uv_err_name((int)nread));
		conn_drop_output(c);
		conn_close(c);
		return;
	}
	/* The idle clock restarts on input, unless we are the slow one (a
	 * pause) or output is waiting: then only its progress counts, so a
	 * client that trickles bytes but never reads still times out. */
	if (!c->paused && c->wreq == NULL)
		conn_arm(c);
	if (c->tls == NULL) {
		conn_feed(c, buf->base, (size_t)nread);
		return;
	}
	if (!conn_tls_pump(c, buf->base, (size_t)nread))
		return;
	if (!c->tls_up && (br_ssl_engine_current_state(tls_engine(c->tls)) &
			   BR_SSL_SENDAPP)) {
		const char *d = tls_describe(c->tls), *sp = strchr(d, ' ');

		c->tls_up = 1;
		log_msg(LOG_INFO, c->proto->name,
			"sid=%s event=tls version=%.*s cipher=%s", c->sid,
			(int)(sp != NULL ? sp - d : 0), d,
			sp != NULL ? sp + 1 : d);
		conn_arm(c); /* the idle clock, no longer the handshake's */
		conn_dispatch(c, CONN_TLS_READY);
	}
	conn_dispatch(c, CONN_DATAIN);
	/* The peer's close_notify: an EOF, after what came before it. */
	if (c->state == C_OPEN &&
	    br_ssl_engine_current_state(tls_engine(c->tls)) == BR_SSL_CLOSED) {
		conn_drop_output(c);
		conn_close(c);
	}
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
	if (c->state == C_OPEN)
		conn_arm(c); /* fires at once if the lifetime ran out */
	else if (c->state == C_DRAINING)
		uv_timer_start(&c->timer, on_timer, CONN_CLOSE_GRACE * 1000ull,
			       0);
	conn_dispatch(c, CONN_DATAIN);
}

/* --- writing -------------------------------------------------------------- */

/* Output collects until the handler returns, then goes to the socket in
 * one write: pipelined replies cost one system call, not one each. What
 * the kernel does not take at once leaves with the one write request in
 * flight, which owns those bytes; output queued meanwhile follows when it
 * completes. This is where a TLS engine encrypts. */

static void on_write(uv_write_t *req, int status)
{
	struct write_req *w = (struct write_req *)req;
	struct conn *c = w->c;

	free(w->buf);
	free(w);
	if (c->state == C_CLOSED)
		return; /* cancelled by the close */
	c->wreq = NULL;
	c->inflight = 0;
	if (status < 0) {
		log_msg(LOG_INFO, c->proto->name,
			"sid=%s event=write-error error=%s", c->sid,
			uv_err_name(status));
		conn_drop_output(c);
		conn_close(c);
		return;
	}
	if (c->state == C_OPEN && !c->paused)
		conn_arm(c); /* output progressed */
	/* Output drained: take the input held back, go on with a stream. */
	conn_dispatch(c, CONN_DATAIN);
}

static void outq_add(struct outq *q, const void *p, size_t n)
{
	if (n == 0)
		return;
	if (q->len + n > q->cap) {
		q->cap = q->len + n < 512 ? 512 : 2 * (q->len + n);
		q->p = xrealloc(q->p, q->cap);
	}
	memcpy(q->p + q->len, p, n);
	q->len += n;
}

/* All of q was sent: it starts anew, keeping a small buffer (none for
 * ciphertext: an idle TLS connection must stay small). */
static void outq_sent(struct outq *q, size_t keep)
{
	q->off = q->len = 0;
	if (q->cap > keep) {
		free(q->p);
		q->p = NULL;
		q->cap = 0;
	}
}

/* The TLS pump: the one place the engine is driven. in[0..n) is
 * ciphertext just read (NULL when called to send). Loops while the engine
 * makes progress:
 *   - records it has made go to cout;
 *   - decrypted input is appended to the connection's input (only from
 *     the read side, so never under a running handler);
 *   - ciphertext read goes in as the engine asks for it;
 *   - queued plaintext goes in once the handshake is done, then is
 *     flushed into a record (a reply must not wait for more).
 * The engine takes a record at a time, so all of in[] is taken before
 * this returns: the shared read buffer is free again. Returns false when
 * the engine has failed: the connection is then closing, its output
 * dropped. */
static bool conn_tls_pump(struct conn *c, const char *in, size_t n)
{
	br_ssl_engine_context *eng = tls_engine(c->tls);
	unsigned st;
	bool more = true;
	int err;

	/* Each step asks the engine whether it may be taken now: a _buf
	 * call answers NULL when not, and an _ack must not be for 0. */
	while (more) {
		unsigned char *buf;
		size_t len, left = c->out.len - c->out.off;

		more = false;
		if ((buf = br_ssl_engine_sendrec_buf(eng, &len)) != NULL) {
			outq_add(&c->cout, buf, len);
			br_ssl_engine_sendrec_ack(eng, len);
			more = true;
		}
		if (in != NULL &&
		    (buf = br_ssl_engine_recvapp_buf(eng, &len)) != NULL) {
			conn_take(c, buf, len);
			br_ssl_engine_recvapp_ack(eng, len);
			more = true;
		}
		if (n > 0 &&
		    (buf = br_ssl_engine_recvrec_buf(eng, &len)) != NULL) {
			len = len < n ? len : n;
			memcpy(buf, in, len);
			br_ssl_engine_recvrec_ack(eng, len);
			in += len, n -= len;
			more = true;
		}
		if (left > 0 &&
		    (buf = br_ssl_engine_sendapp_buf(eng, &len)) != NULL) {
			len = len < left ? len : left;
			memcpy(buf, c->out.p + c->out.off, len);
			br_ssl_engine_sendapp_ack(eng, len);
			c->out.off += len;
			if (len == left) {
				outq_sent(&c->out, 0); /* idle: keep none */
				br_ssl_engine_flush(eng, 0);
			}
			more = true;
		}
	}
	st = br_ssl_engine_current_state(eng);
	err = br_ssl_engine_last_error(eng);
	/* Open, or closed by the peer's close_notify (error 0): the input
	 * before it is delivered first (on_read). Bytes left unread can
	 * only follow the closure. */
	if ((st != BR_SSL_CLOSED && n == 0) ||
	    (st == BR_SSL_CLOSED && err == BR_ERR_OK))
		return true;
	/* A failure: a bad record, plaintext on a TLS port, no shared
	 * cipher, a certificate refused. */
	if (c->state == C_OPEN) {
		char name[32];
		log_msg(LOG_INFO, c->proto->name,
			"sid=%s event=tls-error error=%s handshake=%s", c->sid,
			st != BR_SSL_CLOSED
			    ? "stuck"
			    : tls_error_name(err, name, sizeof name),
			c->tls_up ? "done" : "failed");
	}
	conn_drop_output(c);
	conn_close(c);
	return false;
}

static void conn_flush(struct conn *c)
{
	struct outq *q = c->tls != NULL ? &c->cout : &c->out;
	struct write_req *w;
	uv_buf_t b;
	int r;

	if (c->state == C_CLOSED || c->state == C_CONNECTING)
		return;
	if (c->tls != NULL && !conn_tls_pump(c, NULL, 0))
		return;
	if (q->off == q->len || c->wreq != NULL)
		return;
	b.base = q->p + q->off;
	b.len = q->len - q->off;
	r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
	if (r < 0 && r != UV_EAGAIN) {
		conn_drop_output(c);
		conn_close(c);
		return;
	}
	if (r > 0)
		q->off += (size_t)r;
	if (q->off == q->len) { /* all written: the common case */
		outq_sent(q, c->tls != NULL ? 0 : OUT_KEEP);
		return;
	}
	/* The request takes the buffer along; the queue starts anew. */
	b.base = q->p + q->off;
	b.len = q->len - q->off;
	w = xmalloc(sizeof *w);
	*w = (struct write_req){.c = c, .buf = q->p};
	*q = (struct outq){0};
	c->wreq = w;
	c->inflight = b.len;
	r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
	if (r < 0)
		on_write(&w->req, r);
}

void conn_write(struct conn *c, const void *p, size_t n)
{
	if (c->state == C_CLOSED || n == 0)
		return;
	outq_add(&c->out, p, n);
	if (c->out.len - c->out.off >= CONN_OUT_HIGH)
		conn_flush(c);
}

void conn_puts(struct conn *c, const char *s)
{
	conn_write(c, s, strlen(s));
}

void conn_printf(struct conn *c, const char *fmt, ...)
{
	char buf[PRINTF_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	conn_write(c, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

void conn_stream(struct conn *c, bool (*more)(struct conn *c, void *arg),
		 void *arg)
{
	assert(c->more == NULL && more != NULL);
	if (c->state == C_CLOSED || c->state == C_DRAINING)
		return;
	c->more = more;
	c->more_arg = arg;
}

bool conn_out_full(struct conn *c)
{
	return c->inflight + (c->out.len - c->out.off) +
		   (c->cout.len - c->cout.off) >
	       CONN_OUT_HIGH;
}

/* Produces a stream while output has room, and sends output only once it
 * is over the mark (the rest leaves in conn_settle, so a pipelined batch
 * of replies is still one write). True when input was held back (by the
 * stream, or by output over the mark) and can be taken now: the handler
 * gets it at once, since no write completion may come to deliver it (the
 * kernel may have taken it all). */
static bool conn_step(struct conn *c)
{
	bool held = conn_held(c);

	if (conn_out_full(c))
		conn_flush(c);
	while (c->more != NULL && c->state == C_OPEN && !conn_out_full(c)) {
		c->dispatching = 1;
		if (c->more(c, c->more_arg))
			c->more = NULL;
		c->dispatching = 0;
		if (conn_out_full(c))
			conn_flush(c);
	}
	return held && c->rn > 0 && !conn_held(c);
}

/* --- dispatch --------------------------------------------------------------
 */

/* Runs the protocol's handler (DATAIN only for input it may take now),
 * then settles the connection. The only caller of proto->event. A loop,
 * not a recursion: thousands of pipelined commands that each end a stream
 * must not each cost a stack frame. */
static void conn_dispatch(struct conn *c, enum conn_event ev)
{
	if (c->dispatching || c->state == C_CLOSED)
		return;
	do {
		if (ev != CONN_DATAIN || (c->rn > 0 && !conn_held(c))) {
			c->dispatching = 1;
			c->proto->event(c, c->session, ev);
			c->dispatching = 0;
		}
		ev = CONN_DATAIN;
	} while (conn_step(c));
	conn_settle(c);
}

/* After any event: keep unconsumed input, send output, then either finish
 * a close or decide whether to read on. */
static void conn_settle(struct conn *c)
{
	bool want;

	if (c->state == C_CLOSED || c->dispatching)
		return;
	conn_stash(c);
	conn_flush(c);
	if (c->state == C_DRAINING) {
		if (c->tls != NULL && !c->paused) {
			/* Plaintext that no handshake will carry is dropped;
			 * after the last of it, a close_notify, so the peer
			 * knows it has everything (RFC 5246 7.2.1). */
			if (!c->tls_up)
				c->out.off = c->out.len = 0;
			if (c->tls_up && !c->tls_closed &&
			    c->out.off == c->out.len) {
				c->tls_closed = 1;
				br_ssl_engine_close(tls_engine(c->tls));
				conn_flush(c);
			}
		}
		if (!c->paused && c->wreq == NULL && c->out.off == c->out.len &&
		    c->cout.off == c->cout.len)
			conn_finish(c);
		return;
	}
	/* Reading goes on while input is held back (a pause, full output),
	 * up to CONN_IN_MAX buffered: a client that waits for its reply sends
	 * nothing meanwhile, and stopping and restarting the socket's poll for
	 * every command would cost two system calls each time. */
	want = c->state == C_OPEN && c->rn < CONN_IN_MAX;
	if (want && !c->reading)
		uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
	else if (!want && c->reading)
		uv_read_stop((uv_stream_t *)&c->tcp);
	c->reading = want;
}

/* --- timers ----------------------------------------------------------------
 */

static void on_timer(uv_timer_t *t)
{
	struct conn *c = t->data;
	bool lifetime;

	switch (c->state) {
	case C_CONNECTING:
		if (c->error == 0) {
			c->error = UV_ETIMEDOUT;
			log_msg(LOG_INFO, c->proto->name,
				"sid=%s event=connect-failed ip=%s error=%s",
				c->sid, c->peer_text, uv_err_name(c->error));
		}
		c->state = C_DRAINING;
		conn_settle(c);
		break;
	case C_OPEN:
		if (c->tls != NULL && !c->tls_up) {
			/* A stalled handshake: the protocol has nothing to
			 * say that could reach the peer. */
			log_msg(LOG_INFO, c->proto->name,
				"sid=%s event=tls-error error=timeout "
				"handshake=failed",
				c->sid);
			conn_drop_output(c);
			conn_close(c);
			break;
		}
		lifetime = c->expires != 0 && uv_now(t->loop) >= c->expires;
		log_msg(LOG_INFO, c->proto->name, "sid=%s event=%s", c->sid,
			lifetime ? "lifetime-exceeded" : "timeout");
		conn_dispatch(c, lifetime ? CONN_LIFETIME : CONN_TIMEOUT);
		break;
	case C_DRAINING:
		/* The peer did not read its last replies in time. */
		conn_finish(c);
		break;
	case C_CLOSED:
		break;
	}
}

/* --- death -----------------------------------------------------------------
 */

void conn_close(struct conn *c)
{
	if (c->state == C_DRAINING || c->state == C_CLOSED)
		return;
	if (c->state == C_CONNECTING)
		c->error = UV_ECANCELED;
	c->state = C_DRAINING;
	c->more = NULL; /* a stream ends here; what is queued still goes */
	if (c->reading)
		uv_read_stop((uv_stream_t *)&c->tcp);
	c->reading = 0;
	/* Inside a handler, or with an operation pending, the close completes
	 * when that returns (conn_settle) or resumes (conn_resume). */
	if (!c->paused)
		uv_timer_start(&c->timer, on_timer, CONN_CLOSE_GRACE * 1000ull,
			       0);
	if (!c->dispatching && !c->paused)
		conn_settle(c);
}

bool conn_closing(struct conn *c)
{
	return c->state != C_OPEN;
}

/* Really closes: the session goes, the handles follow. Never while paused:
 * the pending operation still holds the connection. */
static void conn_finish(struct conn *c)
{
	assert(!c->paused);
	if (c->state == C_CLOSED)
		return;
	c->state = C_CLOSED;
	c->more = NULL;
	if (c->session != NULL)
		c->proto->free(c->session);
	c->session = NULL;
	if (c->lis != NULL) {
		ip_count(c->lis, &c->net, -1);
		ninbound--;
		if (--c->lis->nconns == 0 && c->lis->closed)
			listener_free(c->lis);
	}
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

static void listener_free(struct listener *l)
{
	for (int i = 0; i < IP_BUCKETS; i++)
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
		if (c->state != C_OPEN && c->state != C_CONNECTING)
			continue;
		/* A paused connection awaits a reply (a 250 after its commit):
		 * no farewell may come before it, so it just closes after. */
		if (!c->paused && c->state == C_OPEN)
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

/* --- TLS ------------------------------------------------------------------ */

/* Puts t between the connection and its socket: a handshake begins, to
 * end within CONN_TLS_HANDSHAKE seconds. t NULL (no credentials) closes. */
static bool conn_tls_begin(struct conn *c, struct tls *t)
{
	if (t == NULL) {
		log_msg(LOG_ERROR, c->proto->name,
			"sid=%s event=tls-error error=no-engine", c->sid);
		conn_drop_output(c);
		conn_close(c);
		return false;
	}
	c->tls = t;
	c->tls_expires = uv_now(c->tcp.loop) + CONN_TLS_HANDSHAKE * 1000ull;
	if (!c->paused && c->state == C_OPEN)
		conn_arm(c);
	return true;
}

/* Before a STARTTLS handshake: what was queued (the "220 Ready") goes
 * out in clear, ahead of every record: it moves to cout, whose bytes go
 * to the socket as they are (a write in flight may still be sending
 * earlier ones). Input read so far is forgotten: what a client sent
 * behind its STARTTLS is not protected by the handshake to come and must
 * not be taken as if it were (CVE-2011-0411, RFC 3207 4.2). */
static void conn_tls_switch(struct conn *c)
{
	assert(c->tls == NULL && !c->paused && c->more == NULL);
	if (c->out.off < c->out.len)
		outq_add(&c->cout, c->out.p + c->out.off,
			 c->out.len - c->out.off);
	outq_sent(&c->out, OUT_KEEP);
	c->rn = 0;
	c->skip_line = 0;
}

void conn_starttls(struct conn *c)
{
	if (c->state != C_OPEN)
		return;
	conn_tls_switch(c);
	if (conn_tls_begin(c, tls_server_new()))
		conn_flush(c);
}

void conn_starttls_client(struct conn *c, const char *server_name, bool verify)
{
	assert(server_name != NULL || !verify);
	if (c->state != C_OPEN)
		return;
	conn_tls_switch(c);
	if (conn_tls_begin(c, tls_client_new(server_name, verify)))
		conn_flush(c); /* the ClientHello */
}

bool conn_tls(struct conn *c)
{
	return c->tls != NULL;
}

const char *conn_tls_info(struct conn *c)
{
	return c->tls != NULL && c->tls_up ? tls_describe(c->tls) : NULL;
}

void conn_listeners_each(void (*fn)(const struct conn_listener_info *li,
				    void *arg),
			 void *arg)
{
	for (struct listener *l = listeners; l != NULL; l = l->next) {
		struct conn_listener_info li = {
		    l->opts.name != NULL ? l->opts.name : l->opts.proto->name,
		    l->addr, l->nconns};
		fn(&li, arg);
	}
}

/* --- who -------------------------------------------------------------------
 */

const char *conn_sid(struct conn *c)
{
	return c->sid;
}

const char *conn_peer(struct conn *c)
{
	return c->peer_text;
}

const struct netaddr *conn_peer_net(struct conn *c)
{
	return &c->net;
}

const struct netaddr *conn_local_net(struct conn *c)
{
	return &c->local;
}

bool conn_peer_is_local(struct conn *c)
{
	return c->local.family != 0 && netaddr_equal(&c->net, &c->local);
}

int conn_error(struct conn *c)
{
	return c->error;
}
