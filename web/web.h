/*
 * web.h - the web console: an HTTP/1.1 server on the connection layer,
 * serving the admin's pages (compiled into the binary), a JSON API under
 * /api/, /metrics (Prometheus), /healthz, and Mozilla autoconfig for mail
 * clients. See README.md ("Web console") for the routes.
 *
 * Security, in one place (web.c): logins check the account's password off
 * the loop (core/auth, throttled like POP3); a login is a random session
 * id in a cookie (HttpOnly; SameSite=Strict) with a CSRF token that every
 * state-changing request must carry in X-CSRF-Token; every /api/ route
 * names who may call it (anyone, a logged-in user, the user the path
 * names, an admin) and the dispatcher checks it, re-reading the account
 * each time, before any handler runs. Pages run no inline script
 * (Content-Security-Policy), and build the page from text, never markup.
 */
#ifndef PILLARBOX_WEB_H
#define PILLARBOX_WEB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/config.h"
#include "core/conn.h"
#include "store/store.h"

#define WEB_LOGINS_MAX	 256  /* sessions at once; the oldest goes first */
#define WEB_LOG_LINES	 1000 /* log lines kept for the console */
#define WEB_LOG_LINE_MAX 400  /* octets kept of each (the rest is cut) */

struct web_login;
struct web_dns_check;
struct logring;

/* What the console's queue page asks of outbound delivery, whose header
 * web/ may not include (smtp/ and web/ stand side by side): app/main.c
 * hands over smtp/deliver.h's functions, whose contracts these are. */
struct web_queue_hooks {
	/* Loop thread: retry message id now (deliver_flush): its entries
	 * found, 0 when it is not queued, <0 when that cannot be told now. */
	int (*flush)(uint64_t id);
	/* Commit thread, inside its write transaction: remove every entry
	 * of message id, returned to its sender first with bounce
	 * (deliver_remove): *n entries; 1 when a bounce was queued (call
	 * wake), 0, -ENOENT when id is not queued, <0 on a store error. */
	int (*remove)(struct store_txn *txn, const struct config *cfg,
		      uint64_t id, bool bounce, size_t *n);
	/* Loop thread: look at the queue now (a bounce waits in it). */
	void (*wake)(void);
};

struct web_server {
	const struct config *cfg;
	struct store *st;
	const struct web_queue_hooks *queue;
	const char *version;
	time_t started;
	char busy_reply[160], full_reply[160];
	struct web_login *logins; /* most recently used first */
	size_t nlogins;
	struct logring *ring;
	struct web_dns_check *dns_checks; /* running, answered or not */
	size_t ndns_checks;
	bool stopping; /* web_server_stop ran: every reply closes its
			* connection, and no DNS check starts */
};

extern const struct conn_proto web_proto;

/* Prepares srv (ctx of the listener) and starts keeping the last
 * WEB_LOG_LINES log lines (log_tap). queue (kept) must outlive srv. */
void web_server_init(struct web_server *srv, const struct config *cfg,
		     struct store *st, const char *version,
		     const struct web_queue_hooks *queue);
/* The server stops (call before conn_shutdown): what waits on a DNS check
 * is answered now (503), not when its lookups end. */
void web_server_stop(struct web_server *srv);
/* Drops every login and the log ring (after the loop ended, so after
 * dns_cleanup: no DNS check is left). */
void web_server_cleanup(struct web_server *srv);

#endif
