/*
 * conn.h - the connection layer: TCP listeners and outbound connections,
 * the line reader, the write path, timeouts, per-IP and global limits and
 * an orderly close.
 *
 * It is the only code that knows libuv sockets and BearSSL (through
 * core/tls.h): a TLS engine sits in the write path, between the plaintext
 * queue and the socket, and in front of the reader, so protocols read and
 * write plaintext either way. A connection owns its protocol and session;
 * protocols see events and these calls, never a socket.
 *
 * TLS: a listener with `tls` (implicit TLS, ports 465 and 995) starts every
 * connection with a handshake; conn_starttls() (STARTTLS, STLS) and
 * conn_starttls_client() (outbound) begin one on an open connection.
 * Until it is done input is held back and output waits; then the protocol
 * gets CONN_TLS_READY. A handshake that fails closes the connection (logged
 * event=tls-error); one that takes longer than CONN_TLS_HANDSHAKE seconds
 * or the idle timeout, whichever is shorter, too. A TLS connection costs
 * about 23 KiB more than a plaintext one (core/tls.h), allocated only for
 * it.
 *
 * Input: bytes are read into one buffer shared by every connection; only
 * what a protocol leaves unconsumed (an unfinished line, or input behind a
 * paused command) is copied into a buffer of the connection's own, created
 * on demand and given back when it empties. So an idle connection holds no
 * read buffer.
 *
 * Output: conn_write() copies into the connection's plaintext queue; the
 * queue goes to the transport when the handler returns (one writev for a
 * whole pipelined batch of replies), and keeps its place across write
 * completions. A long reply (a POP3 RETR) is produced piece by piece with
 * conn_stream(), so it never holds more than CONN_OUT_HIGH of output, nor
 * anything of the store, while the peer is slow to read.
 *
 * Flow control (PIPELINING by backpressure): conn_getline() and conn_peek()
 * answer "again" while the connection is paused (the protocol waits on
 * async work: a commit, a password check), while a stream is being
 * produced, or while its output is over CONN_OUT_HIGH; input is buffered
 * meanwhile (reading from the socket stops at CONN_IN_MAX), and a new
 * CONN_DATAIN delivers it when that ends.
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

#define CONN_READ_BUF	 (64u << 10) /* the shared read buffer: one read */
#define CONN_IN_MAX	 (64u << 10) /* own buffer cap: one read + a line */
#define CONN_OUT_HIGH	 (64u << 10) /* stop reading above this much output */
#define CONN_CLOSE_GRACE 10	     /* seconds to drain output on close */
#define CONN_TLS_HANDSHAKE                                                     \
	30 /* seconds a handshake may take: a few round trips; a client        \
	    * that stalls in it holds 23 KiB */
#define CONN_BACKLOG                                                           \
	511 /* listen(2) backlog: nginx's default,                             \
	     * the kernel caps it at somaxconn */

struct conn;

enum conn_event {
	CONN_OPEN,	/* an outbound connection is established */
	CONN_DATAIN,	/* input is buffered: read it with conn_getline/peek */
	CONN_TIMEOUT,	/* idle too long: write a farewell and conn_close() */
	CONN_LIFETIME,	/* the session's time is up (max_session_time): the
			 * same, with its own farewell */
	CONN_SHUTDOWN,	/* the server stops: write a farewell (not sent to a
			 * paused connection, whose reply is still due) */
	CONN_TLS_READY, /* the TLS handshake is done (conn_tls_info says what
			 * was agreed): after STARTTLS, forget everything
			 * learnt before it (RFC 3207 4.2, RFC 2595 4). On an
			 * implicit-TLS listener it comes after open(), whose
			 * greeting has just gone out. */
};

struct conn_proto {
	const char *name; /* "smtp", "pop3": for logs */
	/* An inbound connection was accepted: create the session, write the
	 * greeting. ctx is the listener's. Never NULL. Unused for outbound
	 * connections, whose caller brings the session. */
	void *(*open)(struct conn *c, void *ctx);
	void (*event)(struct conn *c, void *session, enum conn_event ev);
	/* Frees the session; the connection is gone (no conn_* calls but
	 * conn_sid, conn_peer and conn_error on it). */
	void (*free)(void *session);
};

struct conn_listen_opts {
	const struct conn_proto *proto;
	void *ctx; /* handed to proto->open */
	const struct config_listener *cfg;
	const char *busy_reply; /* written when over max_conn_per_ip */
	const char *full_reply; /* written when over the global cap */
	bool tls;		/* implicit TLS: a handshake first (no busy or
				 * full reply: a refused client is just closed) */
	const char *name; /* for event=listening ("smtps"); NULL: proto's */
};

/* Starts listening on cfg->listen ("host:port", "[v6]:port"; port 0 picks
 * one) and logs event=listening with the real address. Returns 0 or a
 * negative libuv error (logged). */
int conn_listen(uv_loop_t *loop, const struct conn_listen_opts *opts);

/* Connects to addr (outbound: a mail exchanger, a smarthost). The session
 * is the caller's; proto->event(c, session, CONN_OPEN) runs once the
 * connection is up, and from then on it is like any other. If it cannot be
 * made within connect_timeout seconds it closes: proto->free(session) runs
 * (from the loop, never from inside this call) and conn_error() says why.
 * idle_timeout applies once open. */
struct conn *conn_connect(uv_loop_t *loop, const struct sockaddr *addr,
			  const struct conn_proto *proto, void *session,
			  unsigned connect_timeout, unsigned idle_timeout);

/* At most max connections at once, all listeners together (0: no cap);
 * a connection over it gets its listener's full_reply and is closed. */
void conn_set_max(size_t max);

/* Closes every listener and sends CONN_SHUTDOWN to every connection, which
 * closes once its pending operation has finished and its output drained
 * (CONN_CLOSE_GRACE at most). done(arg) runs when the last one is gone. */
void conn_shutdown(void (*done)(void *arg), void *arg);

/* Number of open connections (all listeners and outbound). */
size_t conn_count(void);

/* One listener, as conn_listeners_each() shows it. */
struct conn_listener_info {
	const char *proto;  /* its protocol's name */
	const char *addr;   /* the address as bound, "127.0.0.1:2525" */
	size_t connections; /* open now */
};

/* Calls fn(li, arg) for every listener (pointers valid during the call;
 * fn must not listen or close). */
void conn_listeners_each(void (*fn)(const struct conn_listener_info *li,
				    void *arg),
			 void *arg);

/* --- reading ----------------------------------------------------------- */

enum conn_line {
	CONN_AGAIN = 0,	   /* no complete line yet (or input held back) */
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
 * returns false (and *n = 0) when there is none or input is held back.
 * Consume what was used with conn_consume(). */
bool conn_peek(struct conn *c, const char **p, size_t *n);
void conn_consume(struct conn *c, size_t n);

/* Holds input back until conn_resume(); the idle clock stops meanwhile
 * (the wait is ours, not the client's). */
void conn_pause(struct conn *c);
/* Delivers buffered input again, or completes a close requested while
 * paused. Call from the pending operation's callback, not from inside the
 * connection's own event handler. */
void conn_resume(struct conn *c);

/* --- writing ----------------------------------------------------------- */

/* Queue bytes (copied); sent when the handler returns. */
void conn_write(struct conn *c, const void *p, size_t n);
void conn_puts(struct conn *c, const char *s);
void conn_printf(struct conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Produces a long reply piece by piece: more(c, arg) is called whenever the
 * queued output is below CONN_OUT_HIGH, writes the next piece with
 * conn_write, and returns true once the reply is complete. Input is held
 * back until then. If the connection closes first, more is simply not
 * called again (the session's free releases what arg holds). One stream
 * at a time. */
void conn_stream(struct conn *c, bool (*more)(struct conn *c, void *arg),
		 void *arg);

/* True while queued output (plaintext not yet written) is over
 * CONN_OUT_HIGH. */
bool conn_out_full(struct conn *c);

/* Closes after queued output is written. Idempotent. */
void conn_close(struct conn *c);
bool conn_closing(struct conn *c);

/* --- TLS ---------------------------------------------------------------- */

/* STARTTLS / STLS, server side: call from the handler after queuing the
 * "220 Ready to start TLS" / "+OK Begin TLS negotiation" reply, then
 * return. That reply goes out in clear; every input octet buffered so far
 * (a command pipelined behind STARTTLS) is discarded (CVE-2011-0411); the
 * handshake follows, then CONN_TLS_READY. Not on a connection that is
 * already TLS, paused or streaming. Without credentials (tls_setup not
 * run) the connection closes. */
void conn_starttls(struct conn *c);

/* The client side, for outbound connections (after the server's "220
 * Ready", or at CONN_OPEN for implicit TLS): as conn_starttls, with a
 * client engine. verify: the server's certificate must chain to the trust
 * store and name server_name (required then); else any certificate is
 * taken (opportunistic TLS). server_name is also sent as SNI. A failed
 * handshake closes the connection (the protocol's free runs; a delivery
 * may then retry without TLS if its policy allows). */
void conn_starttls_client(struct conn *c, const char *server_name, bool verify);

/* True once TLS has begun on c (implicit, or after conn_starttls*). */
bool conn_tls(struct conn *c);

/* "TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256": version and cipher suite
 * (OpenSSL's names) once the handshake is done, for Received: headers
 * ("(using %s)") and logs; NULL on plaintext or before the handshake.
 * Static storage. */
const char *conn_tls_info(struct conn *c);

/* --- who ---------------------------------------------------------------- */

const char *conn_sid(struct conn *c);  /* session id for logs */
const char *conn_peer(struct conn *c); /* peer IP as text (normalised) */
/* The peer normalised (v4-mapped -> IPv4): what limits and rules use. */
const struct netaddr *conn_peer_net(struct conn *c);
/* Our own address on an accepted connection (normalised). */
const struct netaddr *conn_local_net(struct conn *c);
/* True when the peer's address is our own address on this connection: a
 * tool on the same host (as Dovecot exempts local logins from TLS rules);
 * 127.0.0.9 connecting to 127.0.0.1 is not. */
bool conn_peer_is_local(struct conn *c);
/* Why an outbound connection ended: 0, or a negative libuv error
 * (UV_ETIMEDOUT, UV_ECONNREFUSED, ...). */
int conn_error(struct conn *c);

#endif
