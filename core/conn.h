/*
 * conn.h - the connection layer: TCP listeners, per-connection line reader,
 * write queue, idle timeout, per-IP limit and orderly close.
 *
 * It is the only code that knows libuv sockets (and, in time, BearSSL: a TLS
 * engine slots in between the socket and conn_feed()/conn_send() in conn.c).
 * A protocol is a struct conn_proto: it gets a session per connection and
 * events, and reads with conn_getline()/conn_peek(), writes with
 * conn_write()/conn_printf()/conn_write_ref().
 *
 * Input: bytes are read into one buffer shared by every connection; only
 * what a protocol leaves unconsumed (an unfinished line, or input behind a
 * paused command) is copied into a buffer of the connection's own, created
 * on demand. So an idle connection holds no read buffer.
 *
 * Flow control (PIPELINING by backpressure): conn_getline() and conn_peek()
 * answer "again" while the connection is paused (the protocol waits on
 * async work: a commit, a password check) or while its queued output is over
 * CONN_OUT_HIGH; input is buffered meanwhile (reading from the socket stops
 * at CONN_IN_MAX), and a new CONN_DATAIN delivers it once conn_resume() is
 * called or the output drains.
 *
 * Lifetime: handlers never free. conn_close() closes once queued output has
 * been written; a paused connection is never freed: its pending operation
 * must call conn_resume(), and a close requested meanwhile (peer gone,
 * timeout, shutdown) completes then. proto->free(session) runs exactly once.
 */
#ifndef PILLARBOX_CONN_H
#define PILLARBOX_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

#include "core/config.h"
#include "core/netaddr.h"

#define CONN_READ_BUF	 (64u << 10) /* the shared read buffer */
#define CONN_IN_MAX	 (64u << 10) /* own buffer cap: one read + a line */
#define CONN_OUT_HIGH	 (64u << 10) /* stop reading above this much output */
#define CONN_CLOSE_GRACE 10	     /* seconds to drain output on close */

struct conn;

enum conn_event {
	CONN_DATAIN,   /* input is buffered: read it with conn_getline/peek */
	CONN_TIMEOUT,  /* idle too long: write a farewell and conn_close() */
	CONN_SHUTDOWN, /* the server stops: write a farewell (not sent to a
			* paused connection, whose reply is still due) */
};

struct conn_proto {
	const char *name; /* "smtp", "pop3": for logs */
	/* A connection was accepted: create the session, write the greeting.
	 * ctx is the listener's. Never NULL. */
	void *(*open)(struct conn *c, void *ctx);
	void (*event)(struct conn *c, void *session, enum conn_event ev);
	/* Frees the session; the connection is gone (no conn_* calls). */
	void (*free)(void *session);
};

struct conn_listen_opts {
	const struct conn_proto *proto;
	void *ctx; /* handed to proto->open */
	const struct config_listener *cfg;
	const char *busy_reply; /* written when over max_conn_per_ip */
};

/* Starts listening on cfg->listen ("host:port", "[v6]:port"; port 0 picks
 * one) and logs event=listening with the real address. Returns 0 or a
 * negative libuv error (logged). */
int conn_listen(uv_loop_t *loop, const struct conn_listen_opts *opts);

/* Closes every listener and sends CONN_SHUTDOWN to every connection, which
 * closes once its pending operation has finished and its output drained
 * (CONN_CLOSE_GRACE at most). done(arg) runs when the last one is gone,
 * its pending writes' callbacks run. */
void conn_shutdown(void (*done)(void *arg), void *arg);

/* Number of open connections (all listeners). */
size_t conn_count(void);

/* --- reading ----------------------------------------------------------- */

enum conn_line {
	CONN_AGAIN = 0,	   /* no complete line yet (or paused / output full) */
	CONN_LINE,	   /* a line ending in CRLF */
	CONN_LINE_BARELF,  /* a line ending in a bare LF */
	CONN_LINE_TOOLONG, /* longer than max: discarded up to its LF */
};

/* Takes the next line of at most max octets including its line end.
 * *line points into the input buffer, NUL-terminated in place without the
 * line end, *len its length; valid until the next conn_getline, conn_peek
 * or conn_consume call or the handler's return. A line over max is
 * discarded (through its LF, however long it runs) and reported once. */
enum conn_line conn_getline(struct conn *c, size_t max, char **line,
			    size_t *len);

/* Points *p at all buffered input (*n octets) for byte-level parsers;
 * returns false (and *n = 0) when there is none or reading is held back.
 * Consume what was used with conn_consume(). */
bool conn_peek(struct conn *c, const char **p, size_t *n);
void conn_consume(struct conn *c, size_t n);

/* Holds input back until conn_resume(); the idle timer stops meanwhile. */
void conn_pause(struct conn *c);
/* Delivers buffered input again, or completes a close requested while
 * paused. Call from the pending operation's callback, not from inside the
 * connection's own event handler. */
void conn_resume(struct conn *c);

/* --- writing ----------------------------------------------------------- */

/* Queue bytes (copied); sent when the handler returns or the queue grows. */
void conn_write(struct conn *c, const void *p, size_t n);
void conn_puts(struct conn *c, const char *s);
void conn_printf(struct conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Sends n buffers without copying them (after everything queued before).
 * done(arg) runs once they are written or dropped; it may run before this
 * returns. The memory must stay valid until then. */
void conn_write_ref(struct conn *c, const uv_buf_t *bufs, unsigned n,
		    void (*done)(void *arg), void *arg);

/* True while queued output is over CONN_OUT_HIGH. */
bool conn_out_full(struct conn *c);

/* Closes after queued output is written. Idempotent. */
void conn_close(struct conn *c);
bool conn_closing(struct conn *c);

/* --- who ---------------------------------------------------------------- */

const char *conn_sid(struct conn *c);  /* session id for logs */
const char *conn_peer(struct conn *c); /* client IP as text */
const struct sockaddr *conn_peer_addr(struct conn *c);
/* The peer normalised (v4-mapped -> IPv4): what limits and rules use. */
const struct netaddr *conn_peer_net(struct conn *c);
uv_loop_t *conn_loop(struct conn *c);

#endif
