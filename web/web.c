/*
 * web.c - the web console's HTTP side: requests off the connection, the
 * route table and the one dispatcher that checks login, role and CSRF
 * before any handler runs, logins and their cookies, the reply helpers,
 * the compiled-in pages, /healthz. see web.h
 */
#include "web/web.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "base/log.h"
#include "base/metrics.h"
#include "core/auth.h"
#include "core/loop.h"
#include "core/logring.h"
#include "web/ui.h"
#include "web/web_priv.h"

/* Who may call a route. */
enum web_role {
	R_ANYONE, /* no login needed */
	R_USER,	  /* any logged-in account */
	R_SELF,	  /* an admin, or the account the path names */
	R_ADMIN,  /* an admin account */
};

/* Whether a route takes a JSON body. */
enum web_body { B_NONE, B_JSON };

static void web_healthz(struct web_conn *w);
static void web_login_post(struct web_conn *w);
static void web_logout(struct web_conn *w);
static void web_session_get(struct web_conn *w);

/* The routes: method, path ("*" is one segment, handed to the handler
 * decoded in w->param; of two, the last), who may call it, its body, its
 * handler. The first row that matches answers, so a catch-all stands
 * below the rows it catches for. Every request that is not GET or HEAD
 * needs the login's CSRF token, except the login itself. Adding a route
 * is adding a row. */
#define WEB_ROUTES(X)                                                          \
	X(GET, "/healthz", R_ANYONE, B_NONE, web_healthz)                      \
	X(GET, "/metrics", R_ANYONE, B_NONE, web_metrics)                      \
	X(GET, "/.well-known/autoconfig/mail/config-v1.1.xml", R_ANYONE,       \
	  B_NONE, web_autoconfig)                                              \
	X(GET, "/mail/config-v1.1.xml", R_ANYONE, B_NONE, web_autoconfig)      \
	X(POST, "/api/login", R_ANYONE, B_JSON, web_login_post)                \
	X(POST, "/api/logout", R_USER, B_NONE, web_logout)                     \
	X(GET, "/api/session", R_USER, B_NONE, web_session_get)                \
	X(GET, "/api/status", R_ADMIN, B_NONE, api_status)                     \
	X(GET, "/api/users", R_ADMIN, B_NONE, api_users)                       \
	X(POST, "/api/users", R_ADMIN, B_JSON, api_user_add)                   \
	X(DELETE, "/api/users/*", R_ADMIN, B_NONE, api_user_del)               \
	X(POST, "/api/users/*/password", R_SELF, B_JSON, api_user_passwd)      \
	X(POST, "/api/users/*/rename", R_ADMIN, B_JSON, api_user_rename)       \
	X(POST, "/api/users/*/quota", R_ADMIN, B_JSON, api_user_quota)         \
	X(POST, "/api/users/*/admin", R_ADMIN, B_JSON, api_user_admin)         \
	X(GET, "/api/aliases", R_ADMIN, B_NONE, api_aliases)                   \
	X(POST, "/api/aliases", R_ADMIN, B_JSON, api_alias_add)                \
	X(DELETE, "/api/aliases/*", R_ADMIN, B_NONE, api_alias_del)            \
	X(GET, "/api/domains", R_ADMIN, B_NONE, api_domains)                   \
	X(POST, "/api/domains", R_ADMIN, B_JSON, api_domain_add)               \
	X(DELETE, "/api/domains/*", R_ADMIN, B_NONE, api_domain_del)           \
	X(GET, "/api/grants", R_ADMIN, B_NONE, api_grants)                     \
	X(GET, "/api/queue", R_ADMIN, B_NONE, api_queue)                       \
	X(POST, "/api/queue/*/retry", R_ADMIN, B_NONE, api_queue_retry)        \
	X(POST, "/api/queue/*/bounce", R_ADMIN, B_NONE, api_queue_bounce)      \
	X(POST, "/api/queue/*/*", R_ADMIN, B_NONE, api_queue_unknown)          \
	X(DELETE, "/api/queue/*", R_ADMIN, B_NONE, api_queue_delete)           \
	X(GET, "/api/log", R_ADMIN, B_NONE, api_log)                           \
	X(GET, "/api/dns", R_ADMIN, B_NONE, api_dns)                           \
	X(GET, "/api/dns/check", R_ADMIN, B_NONE, api_dns_check)

struct web_route {
	enum http_method method;
	const char *path;
	enum web_role role;
	enum web_body body;
	void (*handler)(struct web_conn *w);
};

static const struct web_route routes[] = {
#define X(m, path, role, body, fn) {HTTP_##m, path, role, body, fn},
    WEB_ROUTES(X)
#undef X
};
#define NROUTES (sizeof routes / sizeof routes[0])

/* Every response carries these. The pages load only their own script and
 * style, run nothing inline, and cannot be framed. */
#define SECURITY_HEADERS                                                       \
	"Content-Security-Policy: default-src 'none'; script-src 'self'; "     \
	"style-src 'self'; img-src 'self'; connect-src 'self'; "               \
	"base-uri 'none'; form-action 'self'; frame-ancestors 'none'\r\n"      \
	"X-Content-Type-Options: nosniff\r\n"                                  \
	"Referrer-Policy: no-referrer\r\n"

/* --- time ----------------------------------------------------------------- */

static uint64_t web_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec;
}

/* The Date header (RFC 9110 6.6.1), made once a second. */
static const char *web_date(void)
{
	static char buf[40];
	static time_t made;
	time_t now = time(NULL);
	struct tm tm;

	if (now != made) {
		made = now;
		gmtime_r(&now, &tm);
		strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
	}
	return buf;
}

/* --- replies -------------------------------------------------------------- */

void web_reply(struct web_conn *w, int status, const char *type,
	       const void *body, size_t len, const char *headers)
{
	/* A server that stops closes every connection after its reply. */
	bool close = w->req == NULL || !w->req->keep_alive || w->srv->stopping;
	const char *conn = close	    ? "Connection: close\r\n"
			   : w->req->http10 ? "Connection: keep-alive\r\n"
					    : "";

	metrics_inc(METRIC_WEB_REQUESTS);
	conn_printf(w->c,
		    "HTTP/1.1 %d %s\r\nDate: %s\r\n" SECURITY_HEADERS
		    "Content-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n",
		    status, http_status_text(status), web_date(), type, len,
		    conn, headers != NULL ? headers : "");
	if (!w->head && len > 0)
		conn_write(w->c, body, len);
	if (close)
		conn_close(w->c);
}

void web_json_h(struct web_conn *w, int status, json_t *j, const char *headers)
{
	char buf[8192];
	size_t n = json_dumpb(j, buf, sizeof buf, JSON_COMPACT);

	if (n <= sizeof buf) {
		web_reply(w, status, "application/json", buf, n, headers);
	} else {
		char *big = json_dumps(j, JSON_COMPACT);
		if (big == NULL)
			fatal("event=oom area=json");
		web_reply(w, status, "application/json", big, strlen(big),
			  headers);
		free(big);
	}
	json_decref(j);
}

void web_json(struct web_conn *w, int status, json_t *j)
{
	web_json_h(w, status, j, "Cache-Control: no-store\r\n");
}

void web_error(struct web_conn *w, int status, const char *msg)
{
	web_json(w, status, json_pack("{s:s}", "error", msg));
}

int web_body(struct web_conn *w, json_t **root, const char *fmt, ...)
{
	json_error_t err;
	va_list ap;
	char msg[300];
	int r;

	*root = NULL;
	if (w->req->body == NULL) {
		web_error(w, 400, "a JSON body is required");
		return -1;
	}
	*root = json_loadb(w->req->body, w->req->body_len,
			   JSON_REJECT_DUPLICATES, &err);
	if (*root == NULL) {
		snprintf(msg, sizeof msg, "bad JSON: %s (at octet %d)",
			 err.text, err.position);
		web_error(w, 400, msg);
		return -1;
	}
	va_start(ap, fmt);
	/* JSON_STRICT: an object with a field not in fmt is refused. */
	r = json_vunpack_ex(*root, &err, JSON_STRICT, fmt, ap);
	va_end(ap);
	if (r < 0) {
		snprintf(msg, sizeof msg, "bad request: %s", err.text);
		json_decref(*root);
		*root = NULL;
		web_error(w, 400, msg);
		return -1;
	}
	return 0;
}

static int web_hex(char c)
{
	return c >= '0' && c <= '9'   ? c - '0'
	       : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10
				      : -1;
}

/* Decodes %XX (and '+' in a query) from s[0..n) into out (size m);
 * false if it does not fit, an escape is broken, or it decodes to a
 * control character. */
static bool web_decode(const char *s, size_t n, bool query, char *out, size_t m)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		int c = (unsigned char)s[i];
		if (c == '%') {
			int hi = i + 2 < n ? web_hex(s[i + 1]) : -1;
			int lo = i + 2 < n ? web_hex(s[i + 2]) : -1;
			if (hi < 0 || lo < 0)
				return false;
			c = hi * 16 + lo;
			i += 2;
		} else if (c == '+' && query) {
			c = ' ';
		}
		if (c < 0x20 || c == 0x7f || o + 1 >= m)
			return false;
		out[o++] = (char)c;
	}
	out[o] = '\0';
	return true;
}

bool web_query(struct web_conn *w, const char *name, char *buf, size_t n)
{
	const char *q = strchr(w->req->url, '?'), *p, *end, *eq;
	size_t nl = strlen(name);

	if (q == NULL)
		return false;
	for (p = q + 1; *p != '\0'; p = *end ? end + 1 : end) {
		end = p + strcspn(p, "&#");
		eq = memchr(p, '=', (size_t)(end - p));
		if (eq != NULL && (size_t)(eq - p) == nl &&
		    memcmp(p, name, nl) == 0)
			return web_decode(eq + 1, (size_t)(end - eq - 1), true,
					  buf, n);
		if (*end == '#')
			break;
	}
	return false;
}

/* --- logins --------------------------------------------------------------- */

static void web_token(char out[WEB_TOKEN_HEX + 1])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char raw[WEB_TOKEN_HEX / 2];

	/* getrandom(2) from the kernel's CSPRNG; a short read is an
	 * impossible state for 32 octets once the pool is ready. */
	if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
		fatal("event=getrandom-failed");
	for (size_t i = 0; i < sizeof raw; i++) {
		out[2 * i] = hex[raw[i] >> 4];
		out[2 * i + 1] = hex[raw[i] & 15];
	}
	out[WEB_TOKEN_HEX] = '\0';
	explicit_bzero(raw, sizeof raw);
}

/* Compares two tokens in time independent of where they differ. */
static bool web_token_equal(const char *a, const char *b)
{
	size_t n = strlen(a);
	unsigned char d = 0;

	if (n != WEB_TOKEN_HEX || strlen(b) != WEB_TOKEN_HEX)
		return false;
	for (size_t i = 0; i < n; i++)
		d |= (unsigned char)(a[i] ^ b[i]);
	return d == 0;
}

static void web_login_unlink(struct web_server *srv, struct web_login **pp)
{
	struct web_login *l = *pp;

	*pp = l->next;
	explicit_bzero(l, sizeof *l);
	free(l);
	srv->nlogins--;
}

static struct web_login *web_login_new(struct web_server *srv, const char *user,
				       bool admin)
{
	struct web_login *l, **pp;

	/* At the cap the least recently used login goes. */
	if (srv->nlogins >= WEB_LOGINS_MAX) {
		for (pp = &srv->logins; (*pp)->next != NULL; pp = &(*pp)->next)
			;
		web_login_unlink(srv, pp);
	}
	l = xcalloc(1, sizeof *l);
	web_token(l->id);
	web_token(l->csrf);
	snprintf(l->user, sizeof l->user, "%s", user);
	l->admin = admin;
	l->last_used = web_now();
	l->next = srv->logins;
	srv->logins = l;
	srv->nlogins++;
	return l;
}

/* The value of our cookie in a Cookie header, into id. */
static bool web_cookie(const char *hdr, char id[WEB_TOKEN_HEX + 1])
{
	const char *p = hdr;
	size_t n = strlen(WEB_COOKIE);

	while ((p = strstr(p, WEB_COOKIE "=")) != NULL) {
		if (p == hdr || p[-1] == ' ' || p[-1] == ';') {
			p += n + 1;
			size_t len = strcspn(p, "; ");
			if (len != WEB_TOKEN_HEX)
				return false;
			memcpy(id, p, len);
			id[len] = '\0';
			return true;
		}
		p += n;
	}
	return false;
}

/* The request's login: the cookie's, unexpired, its account still there
 * (its admin flag read again: a demotion counts at once). */
static struct web_login *web_login_find(struct web_conn *w)
{
	struct web_server *srv = w->srv;
	char id[WEB_TOKEN_HEX + 1];
	struct web_login **pp, *l;
	uint64_t now = web_now();
	struct store_user u;
	struct store_txn *txn;
	int r;

	if (!web_cookie(w->req->hdr[HTTP_H_COOKIE], id))
		return NULL;
	for (pp = &srv->logins; (l = *pp) != NULL; pp = &l->next) {
		if (now - l->last_used > srv->cfg->web_session_timeout) {
			web_login_unlink(srv,
					 pp); /* expired: and the rest are */
			while (*pp != NULL)
				web_login_unlink(srv, pp);
			return NULL;
		}
		if (web_token_equal(l->id, id))
			break;
	}
	if (l == NULL)
		return NULL;
	r = store_txn_begin(srv->st, false, &txn);
	if (r == 0) {
		r = store_user_get(txn, l->user, &u);
		store_txn_abort(txn);
	}
	if (r == -ENOENT) {
		web_login_unlink(srv, pp);
		return NULL;
	}
	if (r == 0)
		l->admin = (u.flags & STORE_USER_ADMIN) != 0;
	l->last_used = now;
	if (pp != &srv->logins) { /* most recently used first */
		*pp = l->next;
		l->next = srv->logins;
		srv->logins = l;
	}
	return l;
}

void web_logins_drop_user(struct web_server *srv, const char *user,
			  const char *keep_id)
{
	struct web_login **pp = &srv->logins;

	while (*pp != NULL)
		if (strcasecmp((*pp)->user, user) == 0 &&
		    (keep_id == NULL || strcmp((*pp)->id, keep_id) != 0))
			web_login_unlink(srv, pp);
		else
			pp = &(*pp)->next;
}

size_t web_logins_count(struct web_server *srv)
{
	return srv->nlogins;
}

static json_t *web_login_json(const struct web_login *l)
{
	return json_pack("{s:s, s:b, s:s}", "user", l->user, "admin", l->admin,
			 "csrf", l->csrf);
}

/* POST /api/login {"user", "password"}: the password is checked off the
 * loop; failures are throttled per client, like POP3's. */
struct web_login_wait {
	struct web_conn *w;
	char user[STORE_ADDR_MAX + 1];
};

static void web_login_done(void *arg, enum auth_result r)
{
	struct web_login_wait *lw = arg;
	struct web_conn *w = lw->w;
	struct web_login *l;
	struct store_user u = {0};
	struct store_txn *txn;
	char cookie[200];
	int rc;

	if (r == AUTH_OK) {
		rc = store_txn_begin(w->srv->st, false, &txn);
		if (rc == 0) {
			rc = store_user_get(txn, lw->user, &u);
			store_txn_abort(txn);
		}
		if (rc < 0) {
			web_error(w, 503, "cannot read the account now");
			goto out;
		}
		l = web_login_new(w->srv, lw->user,
				  (u.flags & STORE_USER_ADMIN) != 0);
		log_msg(LOG_INFO, "web",
			"sid=%s event=login ip=%s user=%s admin=%s",
			conn_sid(w->c), conn_peer(w->c), log_str(l->user),
			l->admin ? "yes" : "no");
		snprintf(cookie, sizeof cookie,
			 "Set-Cookie: " WEB_COOKIE
			 "=%s; Path=/; HttpOnly; SameSite=Strict%s\r\n"
			 "Cache-Control: no-store\r\n",
			 l->id, conn_tls(w->c) ? "; Secure" : "");
		web_json_h(w, 200, web_login_json(l), cookie);
	} else if (r == AUTH_FAIL) {
		auth_failed(conn_peer_net(w->c));
		metrics_inc(METRIC_AUTH_FAIL_WEB);
		log_msg(LOG_WARN, "web",
			"sid=%s event=auth-failed ip=%s user=%s",
			conn_sid(w->c), conn_peer(w->c), log_str(lw->user));
		web_error(w, 401, "wrong user or password");
	} else {
		web_error(w, 503, "cannot check the password now, try again");
	}
out:
	free(lw);
	web_resume(w);
}

static void web_login_post(struct web_conn *w)
{
	struct web_login_wait *lw;
	const char *user, *pass;
	json_t *j;

	if (web_body(w, &j, "{s:s, s:s}", "user", &user, "password", &pass) < 0)
		return;
	if (auth_throttled(conn_peer_net(w->c))) {
		web_error(w, 429, "too many failed logins, try again later");
	} else if (strlen(user) > STORE_ADDR_MAX ||
		   strlen(pass) > AUTH_PASS_MAX) {
		web_error(w, 400, "user or password too long");
	} else {
		lw = xcalloc(1, sizeof *lw);
		lw->w = w;
		strcpy(lw->user, user);
		web_wait(w);
		auth_check(w->srv->st, user, pass, web_login_done, lw);
	}
	json_decref(j); /* jansson does not wipe: the password was a copy */
}

static void web_logout(struct web_conn *w)
{
	struct web_login **pp;

	for (pp = &w->srv->logins; *pp != NULL; pp = &(*pp)->next)
		if (*pp == w->login) {
			log_msg(LOG_INFO, "web", "sid=%s event=logout user=%s",
				conn_sid(w->c), log_str(w->login->user));
			web_login_unlink(w->srv, pp);
			break;
		}
	w->login = NULL;
	web_reply(w, 204, "application/json", NULL, 0,
		  "Set-Cookie: " WEB_COOKIE
		  "=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict\r\n");
}

static void web_session_get(struct web_conn *w)
{
	web_json(w, 200, web_login_json(w->login));
}

static void web_healthz(struct web_conn *w)
{
	struct store_txn *txn;
	int r = store_txn_begin(w->srv->st, false, &txn);

	store_txn_abort(txn);
	if (r < 0)
		web_reply(w, 503, "text/plain", "store unavailable\n", 18,
			  "Cache-Control: no-store\r\n");
	else
		web_reply(w, 200, "text/plain", "ok\n", 3,
			  "Cache-Control: no-store\r\n");
}

/* --- dispatch ------------------------------------------------------------- */

/* Matches path against a route pattern; the "*" segment goes into param
 * (decoded). */
static bool web_match(const char *pat, const char *path, size_t len,
		      char *param, size_t n, bool *bad)
{
	const char *p = path, *end = path + len;

	for (; *pat != '\0'; pat++) {
		if (*pat == '*') {
			const char *seg = p;
			while (p < end && *p != '/')
				p++;
			if (p == seg)
				return false;
			if (!web_decode(seg, (size_t)(p - seg), false, param,
					n))
				*bad = true;
			continue;
		}
		if (p == end || *p != *pat)
			return false;
		p++;
	}
	return p == end;
}

static void web_static(struct web_conn *w, const char *path, size_t len)
{
	const struct web_asset *a = NULL;

	for (size_t i = 0; i < web_ui_nassets && a == NULL; i++)
		if (strlen(web_ui_assets[i].path) == len &&
		    memcmp(web_ui_assets[i].path, path, len) == 0)
			a = &web_ui_assets[i];

	if (a == NULL) {
		web_error(w, 404, "no such page");
		return;
	}
	web_reply(w, 200, a->type, a->data, a->len,
		  "Cache-Control: no-cache\r\n");
}

/* Does the Origin header, when a browser sends one, name us? A page of
 * another site posting here (CSRF) carries its own. */
static bool web_origin_ok(struct web_conn *w)
{
	const char *o = w->req->hdr[HTTP_H_ORIGIN];

	return o[0] == '\0' || (strncmp(o, "http://", 7) == 0 &&
				strcmp(o + 7, w->req->hdr[HTTP_H_HOST]) == 0);
}

static bool web_is_json(const char *type)
{
	size_t n = strcspn(type, "; ");

	return n == 16 && strncasecmp(type, "application/json", 16) == 0;
}

static void web_dispatch(struct web_conn *w)
{
	struct http_request *q = w->req;
	struct http_parser_url u;
	const struct web_route *rt = NULL;
	const char *path;
	size_t len;
	bool path_known = false, bad = false, safe;

	http_parser_url_init(&u);
	if (http_parser_parse_url(q->url, q->url_len, 0, &u) != 0 ||
	    !(u.field_set & (1 << UF_PATH))) {
		web_error(w, 400, "bad request target");
		return;
	}
	path = q->url + u.field_data[UF_PATH].off;
	len = u.field_data[UF_PATH].len;
	w->head = q->method == HTTP_HEAD;
	for (size_t i = 0; i < NROUTES; i++) {
		bool b = false;
		if (!web_match(routes[i].path, path, len, w->param,
			       sizeof w->param, &b))
			continue;
		path_known = true;
		if (routes[i].method == q->method ||
		    (q->method == HTTP_HEAD && routes[i].method == HTTP_GET)) {
			rt = &routes[i];
			bad = b;
			break;
		}
	}
	if (rt == NULL) {
		if (path_known)
			web_error(w, 405, "method not allowed here");
		else if (q->method == HTTP_GET || q->method == HTTP_HEAD)
			web_static(w, path, len);
		else
			web_error(w, 404, "no such page");
		return;
	}
	w->path = rt->path;
	if (bad) {
		web_error(w, 400, "bad path segment");
		return;
	}
	safe = q->method == HTTP_GET || q->method == HTTP_HEAD;
	if (!safe && !web_origin_ok(w)) {
		web_error(w, 403, "cross-origin request refused");
		return;
	}
	w->login = rt->role == R_ANYONE ? NULL : web_login_find(w);
	if (rt->role != R_ANYONE) {
		if (w->login == NULL) {
			web_error(w, 401, "login required");
			return;
		}
		if ((rt->role == R_ADMIN && !w->login->admin) ||
		    (rt->role == R_SELF && !w->login->admin &&
		     strcasecmp(w->param, w->login->user) != 0)) {
			web_error(w, 403, "not allowed for this account");
			return;
		}
		if (!safe &&
		    !web_token_equal(w->login->csrf, q->hdr[HTTP_H_CSRF])) {
			web_error(w, 403, "missing or wrong CSRF token");
			return;
		}
	}
	if (rt->body == B_NONE && q->body_len > 0) {
		web_error(w, 400, "this request takes no body");
		return;
	}
	if (rt->body == B_JSON && !web_is_json(q->hdr[HTTP_H_CONTENT_TYPE])) {
		web_error(w, 415, "the body must be application/json");
		return;
	}
	rt->handler(w);
}

/* The request has its reply: ready for the next one. */
static void web_request_end(struct web_conn *w)
{
	http_request_free(w->req);
	w->req = NULL;
	w->login = NULL;
	w->param[0] = '\0';
	w->path = NULL;
	w->head = false;
}

void web_wait(struct web_conn *w)
{
	w->waiting = true;
	conn_pause(w->c);
}

void web_resume(struct web_conn *w)
{
	w->waiting = false;
	web_request_end(w);
	conn_resume(w->c);
}

static void web_input(struct web_conn *w)
{
	const char *p;
	size_t n, used;
	int status;

	while (!w->waiting && !conn_closing(w->c) && conn_peek(w->c, &p, &n)) {
		switch (http_read(&w->rd, p, n, &used, &w->req, &status)) {
		case HTTP_READ_AGAIN:
			conn_consume(w->c, used);
			return;
		case HTTP_READ_ERROR:
			conn_consume(w->c, n); /* the rest is not read */
			w->req = NULL;
			web_error(w, status, http_status_text(status));
			conn_close(w->c);
			return;
		case HTTP_READ_REQUEST:
			conn_consume(w->c, used);
			web_dispatch(w);
			if (!w->waiting)
				web_request_end(w);
			break;
		}
	}
}

/* --- the protocol --------------------------------------------------------- */

static void *web_open(struct conn *c, void *ctx)
{
	struct web_conn *w = xcalloc(1, sizeof *w);

	w->c = c;
	w->srv = ctx;
	http_reader_init(&w->rd);
	return w;
}

static void web_event(struct conn *c, void *session, enum conn_event ev)
{
	struct web_conn *w = session;

	switch (ev) {
	case CONN_DATAIN:
		web_input(w);
		break;
	case CONN_TIMEOUT:
		/* A request begun and not finished gets a 408 (RFC 9110
		 * 15.5.9); an idle keep-alive connection just closes. */
		if (w->rd.req != NULL)
			web_error(w, 408, "request not finished in time");
		conn_close(c);
		break;
	case CONN_LIFETIME:
	case CONN_SHUTDOWN:
	case CONN_OPEN:
		conn_close(c);
		break;
	case CONN_TLS_READY: /* HTTPS (tls_listen): nothing to reset */
		break;
	}
}

static void web_free(void *session)
{
	struct web_conn *w = session;

	http_request_free(w->req);
	http_reader_free(&w->rd);
	free(w);
}

const struct conn_proto web_proto = {"web", web_open, web_event, web_free};

static void web_tap(const char *line, size_t len, void *arg)
{
	logring_add(arg, line, len);
}

void web_server_init(struct web_server *srv, const struct config *cfg,
		     struct store *st, const char *version,
		     const struct web_queue_hooks *queue)
{
	static const char busy[] =
	    "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
	    "Retry-After: 10\r\nConnection: close\r\n\r\n";

	memset(srv, 0, sizeof *srv);
	srv->cfg = cfg;
	srv->st = st;
	srv->queue = queue;
	srv->version = version;
	srv->started = time(NULL);
	snprintf(srv->busy_reply, sizeof srv->busy_reply, "%s", busy);
	snprintf(srv->full_reply, sizeof srv->full_reply, "%s", busy);
	srv->ring = logring_new(WEB_LOG_LINES, WEB_LOG_LINE_MAX);
	log_tap(web_tap, srv->ring);
}

void web_server_stop(struct web_server *srv)
{
	srv->stopping = true;
	api_dns_stop(srv);
}

void web_server_cleanup(struct web_server *srv)
{
	assert(srv->dns_checks == NULL);
	log_tap(NULL, NULL);
	while (srv->logins != NULL)
		web_login_unlink(srv, &srv->logins);
	logring_free(srv->ring);
	srv->ring = NULL;
}
