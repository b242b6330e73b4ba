/*
 * web_priv.h - what the files of web/ share: the connection's session,
 * the login, the reply helpers (web.c) and the API handlers (api.c).
 */
#ifndef PILLARBOX_WEB_PRIV_H
#define PILLARBOX_WEB_PRIV_H

#include <jansson.h>
#include <stdbool.h>

#include "store/store.h"
#include "web/http.h"
#include "web/web.h"

#define WEB_TOKEN_HEX 64 /* session ids and CSRF tokens: 32 random octets */
#define WEB_COOKIE    "pb_session"

/* One login: what the session cookie names. */
struct web_login {
	struct web_login *next;
	char id[WEB_TOKEN_HEX + 1];
	char csrf[WEB_TOKEN_HEX + 1];
	char user[STORE_ADDR_MAX + 1];
	bool admin;	    /* as the account said at this request */
	uint64_t last_used; /* monotonic seconds */
};

/* A connection's session: one request at a time. */
struct web_conn {
	struct conn *c;
	struct web_server *srv;
	struct http_reader rd;
	struct http_request *req;	 /* being answered; NULL between */
	struct web_login *login;	 /* the request's login, or NULL */
	char param[STORE_ALIAS_MAX + 1]; /* the route's "*" segment, decoded */
	const char *path;		 /* the route's pattern, for logs */
	bool head;			 /* HEAD: headers only */
	bool waiting;			 /* on an operation: web_wait */
};

/* --- replies (web.c) ------------------------------------------------------ */

/* Writes a whole response: status line, the common headers (security
 * headers, Date, Content-Length, Connection), headers (each ending in
 * CRLF; NULL for none), then body (not for HEAD). */
void web_reply(struct web_conn *w, int status, const char *type,
	       const void *body, size_t len, const char *headers);
/* A JSON response; takes the reference to j. */
void web_json(struct web_conn *w, int status, json_t *j);
void web_json_h(struct web_conn *w, int status, json_t *j, const char *headers);
/* {"error": msg} with status. */
void web_error(struct web_conn *w, int status, const char *msg);

/* The request's JSON body, unpacked strictly with jansson's fmt (every
 * field named, types checked, unknown fields refused): 0, or -1 after
 * answering 400 with what is wrong. The unpacked strings live as long as
 * *root (json_decref it). */
int web_body(struct web_conn *w, json_t **root, const char *fmt, ...);

/* The query parameter name, percent-decoded into buf: true if present. */
bool web_query(struct web_conn *w, const char *name, char *buf, size_t n);

/* For a handler that answers later: input waits (conn_pause) until
 * web_resume, which the completion calls after its reply. */
void web_wait(struct web_conn *w);
void web_resume(struct web_conn *w);

/* Logins (web.c): the logins of user end (a password changed, the
 * account deleted or renamed), except the one whose id is keep_id (NULL:
 * none). */
void web_logins_drop_user(struct web_server *srv, const char *user,
			  const char *keep_id);
size_t web_logins_count(struct web_server *srv);

/* --- the API (api.c) ------------------------------------------------------ */

#define WEB_API_HANDLERS(X)                                                    \
	X(api_status)                                                          \
	X(api_users)                                                           \
	X(api_user_add)                                                        \
	X(api_user_del)                                                        \
	X(api_user_passwd)                                                     \
	X(api_user_rename)                                                     \
	X(api_user_quota)                                                      \
	X(api_user_admin)                                                      \
	X(api_aliases)                                                         \
	X(api_alias_add)                                                       \
	X(api_alias_del)                                                       \
	X(api_domains)                                                         \
	X(api_domain_add)                                                      \
	X(api_domain_del)                                                      \
	X(api_grants)                                                          \
	X(api_queue)                                                           \
	X(api_queue_retry)                                                     \
	X(api_queue_bounce)                                                    \
	X(api_queue_delete)                                                    \
	X(api_queue_unknown)                                                   \
	X(api_log)                                                             \
	X(api_dns)                                                             \
	X(api_dns_check)                                                       \
	X(web_metrics)                                                         \
	X(web_autoconfig)

#define X(fn) void fn(struct web_conn *w);
WEB_API_HANDLERS(X)
#undef X

/* For /metrics and the dashboard (api.c). */
uint64_t api_disk_free(struct web_server *srv);

/* Runs fill(txn, ctx) in a read transaction of its own (a list, into the
 * JSON array ctx holds). 0, or -1 once the client has its 503: the store
 * could not be read now (api.c). */
int api_read(struct web_conn *w, int (*fill)(struct store_txn *txn, void *ctx),
	     void *ctx);

/* The listeners' ports, for the DNS records and autoconfig: a
 * conn_listeners_each callback filling a struct api_ports (and, when arr
 * is not NULL, appending each listener to it), api.c. */
struct api_ports {
	json_t *arr;
	unsigned smtp, submission, pop3; /* the first of each; 0: none */
	size_t total;			 /* connections */
};
void api_listener_each(const struct conn_listener_info *li, void *arg);

/* The server stops (web_server_stop): every DNS check still waiting is
 * answered 503 at once; their lookups end in dns_cleanup (dnscheck.c). */
void api_dns_stop(struct web_server *srv);

#endif
