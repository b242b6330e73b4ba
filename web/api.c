/*
 * api.c - the JSON API's handlers (routes and their checks are in web.c),
 * /metrics and Mozilla autoconfig. Reads use a read transaction that ends
 * before the handler returns; every change is a job for the commit thread
 * (the loop never writes), after the new password is hashed on the thread
 * pool when there is one, and the reply waits for the commit.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/statvfs.h>

#include "base/log.h"
#include "base/metrics.h"
#include "core/auth.h"
#include "core/conn.h"
#include "core/loop.h"
#include "core/relay.h"
#include "core/logring.h"
#include "web/web_priv.h"

/* --- helpers -------------------------------------------------------------- */

/* A plausible address, as the CLI takes it: one '@', something either
 * side, no space, control, '<', '>' or ','. The store checks again. */
static bool api_address_ok(const char *a)
{
	const char *at = strchr(a, '@');

	if (at == NULL || at == a || at[1] == '\0' || strchr(at + 1, '@') ||
	    strlen(a) > STORE_ADDR_MAX)
		return false;
	for (const unsigned char *p = (const unsigned char *)a; *p; p++)
		if (*p <= ' ' || *p == 0x7f || *p == '<' || *p == '>' ||
		    *p == ',')
			return false;
	return true;
}

static bool api_domain_ok(const char *d)
{
	size_t n = strlen(d);

	if (n == 0 || n > 253 || d[0] == '.' || d[0] == '-')
		return false;
	for (const char *p = d; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'))
			return false;
	return true;
}

/* A password as the CLI can take one: 1 to AUTH_PASS_MAX octets, no
 * control character (a line of stdin could not hold one). */
static bool api_password_ok(const char *p)
{
	size_t n = strlen(p);

	if (n == 0 || n > AUTH_PASS_MAX)
		return false;
	for (; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return false;
	return true;
}

static void api_iso(time_t t, char buf[32])
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int api_read_begin(struct web_conn *w, struct store_txn **txn)
{
	int r = store_txn_begin(w->srv->st, false, txn);

	if (r < 0)
		web_error(w, 503, "cannot read the store now, try again");
	return r;
}

int api_read(struct web_conn *w, int (*fill)(struct store_txn *txn, void *ctx),
	     void *ctx)
{
	struct store_txn *txn;
	int r;

	if (api_read_begin(w, &txn) < 0)
		return -1;
	r = fill(txn, ctx);
	store_txn_abort(txn);
	if (r < 0) {
		web_error(w, 503, "cannot read the store now, try again");
		return -1;
	}
	return 0;
}

/* A list route's answer: {"key": [...]} with what fill(txn, array)
 * appends, or the 503 api_read gave. */
static void api_list(struct web_conn *w,
		     int (*fill)(struct store_txn *txn, void *arr),
		     const char *key)
{
	json_t *arr = json_array();

	if (api_read(w, fill, arr) < 0) {
		json_decref(arr);
		return;
	}
	web_json(w, 200, json_pack("{s:o}", key, arr));
}

uint64_t api_disk_free(struct web_server *srv)
{
	struct statvfs sv;

	if (statvfs(srv->cfg->data_dir, &sv) != 0)
		return 0;
	return (uint64_t)sv.f_bavail * sv.f_frsize;
}

/* --- changes: jobs for the commit thread ---------------------------------- */

enum api_op_kind {
	OP_USER_ADD,
	OP_USER_DEL,
	OP_PASSWD,
	OP_RENAME,
	OP_QUOTA,
	OP_ADMIN,
	OP_ALIAS_ADD,
	OP_ALIAS_DEL,
	OP_DOMAIN_ADD,
	OP_DOMAIN_DEL,
	OP_QUEUE_DELETE,
	OP_QUEUE_BOUNCE,
};

static const char *const op_events[] = {
    "user-add",	  "user-del",	"user-passwd",	"user-rename",
    "user-quota", "user-admin", "alias-add",	"alias-del",
    "domain-add", "domain-del", "queue-delete", "queue-bounce",
};

struct api_op {
	struct web_conn *w;
	enum api_op_kind kind;
	struct store_job job;
	/* Who asked, copied: the login may end while the job runs. */
	char by[STORE_ADDR_MAX + 1];
	char login_id[WEB_TOKEN_HEX + 1];
	char a[STORE_ADDR_MAX + 1];   /* the user, alias, domain or queue id */
	char b[STORE_ALIAS_MAX + 1];  /* new name, or alias targets */
	char pass[AUTH_PASS_MAX + 1]; /* wiped once hashed */
	char hash[STORE_HASH_MAX + 1];
	uint64_t quota;
	bool admin;
	int hashed;	/* auth_hash's result */
	uint64_t id;	/* a queued message */
	size_t removed; /* its entries removed */
	bool wake;	/* a bounce was queued: the runner looks now */
};

/* Commit thread: the change, inside the batch's nested transaction. */
static int api_op_run(struct store_txn *txn, void *arg)
{
	struct api_op *op = arg;
	struct store_user u;
	int r;

	switch (op->kind) {
	case OP_USER_ADD:
		r = store_user_add(txn, op->a, op->hash);
		if (r == 0 && op->admin)
			r = store_user_set_flags(txn, op->a, STORE_USER_ADMIN);
		if (r == 0 && op->quota > 0)
			r = store_user_set_quota(txn, op->a, op->quota);
		return r;
	case OP_USER_DEL:
		return store_user_del(txn, op->a);
	case OP_PASSWD:
		return store_user_set_hash(txn, op->a, op->hash);
	case OP_RENAME:
		return store_user_rename(txn, op->a, op->b);
	case OP_QUOTA:
		return store_user_set_quota(txn, op->a, op->quota);
	case OP_ADMIN:
		if ((r = store_user_get(txn, op->a, &u)) < 0)
			return r;
		return store_user_set_flags(txn, op->a,
					    op->admin
						? u.flags | STORE_USER_ADMIN
						: u.flags & ~STORE_USER_ADMIN);
	case OP_ALIAS_ADD:
		return store_alias_add(txn, op->a, op->b);
	case OP_ALIAS_DEL:
		return store_alias_del(txn, op->a);
	case OP_DOMAIN_ADD:
		return store_domain_add(txn, op->a);
	case OP_DOMAIN_DEL:
		return store_domain_del(txn, op->a);
	case OP_QUEUE_DELETE:
	case OP_QUEUE_BOUNCE:
		/* srv and what it points at do not change once serving. */
		r = op->w->srv->queue->remove(txn, op->w->srv->cfg, op->id,
					      op->kind == OP_QUEUE_BOUNCE,
					      &op->removed);
		op->wake = r == 1;
		return r < 0 ? r : 0;
	}
	return -EINVAL;
}

/* What a refusal means, per operation. */
static void api_op_error(struct web_conn *w, struct api_op *op, int rc)
{
	switch (rc) {
	case -EEXIST:
		web_error(w, 409, "a user or alias of that name exists");
		break;
	case -ENOENT:
		if (op->kind == OP_USER_ADD || op->kind == OP_RENAME)
			web_error(w, 400,
				  "the domain is not local (add it first)");
		else if (op->kind == OP_ALIAS_ADD)
			web_error(w, 400,
				  "the alias's domain must be local and every "
				  "target an existing user");
		else if (op->kind == OP_QUEUE_DELETE ||
			 op->kind == OP_QUEUE_BOUNCE)
			web_error(w, 404, "no such message in the queue");
		else
			web_error(w, 404, "no such entry");
		break;
	case -EINVAL:
		web_error(w, 400, "invalid name");
		break;
	case -ENOSPC:
		web_error(w, 507, "the store is full");
		break;
	default:
		web_error(w, 503, "the store failed, try again");
		break;
	}
}

/* What a queue action did: {"id", "action", "recipients"}. */
static json_t *api_queue_done(const char *id, const char *action, size_t n)
{
	return json_pack("{s:s, s:s, s:I}", "id", id, "action", action,
			 "recipients", (json_int_t)n);
}

static void api_op_done(void *arg, int rc)
{
	struct api_op *op = arg;
	struct web_conn *w = op->w;

	log_msg(rc == 0 ? LOG_INFO : LOG_WARN, "web",
		"sid=%s event=%s by=%s name=%s result=%s", conn_sid(w->c),
		op_events[op->kind], log_str(op->by), log_str(op->a),
		rc == 0 ? "ok" : strerror(-rc));
	if (rc < 0) {
		api_op_error(w, op, rc);
	} else if (op->kind == OP_QUEUE_DELETE || op->kind == OP_QUEUE_BOUNCE) {
		bool bounce = op->kind == OP_QUEUE_BOUNCE;
		if (bounce)
			metrics_add(METRIC_BOUNCED, op->removed);
		if (op->wake)
			w->srv->queue->wake();
		web_json(w, 200,
			 api_queue_done(op->a, bounce ? "bounce" : "delete",
					op->removed));
	} else {
		/* A login outlives no change to its account's name or
		 * password, but the admin's own one (it just proved it). */
		if (op->kind == OP_USER_DEL || op->kind == OP_RENAME ||
		    op->kind == OP_PASSWD)
			web_logins_drop_user(
			    w->srv, op->a,
			    op->kind == OP_PASSWD ? op->login_id : NULL);
		web_json(w,
			 op->kind == OP_USER_ADD || op->kind == OP_ALIAS_ADD ||
				 op->kind == OP_DOMAIN_ADD
			     ? 201
			     : 200,
			 json_pack("{s:b}", "ok", 1));
	}
	explicit_bzero(op, sizeof *op);
	free(op);
	web_resume(w);
}

static void api_op_submit(struct api_op *op)
{
	op->job = (struct store_job){
	    .run = api_op_run, .done = api_op_done, .arg = op};
	store_commit_submit(op->w->srv->st, &op->job);
}

/* Thread pool: yescrypt takes tens of milliseconds, on purpose. */
static void api_op_hash(void *arg)
{
	struct api_op *op = arg;

	op->hashed = auth_hash(op->pass, op->hash, sizeof op->hash);
	explicit_bzero(op->pass, sizeof op->pass);
}

static void api_op_hashed(void *arg)
{
	struct api_op *op = arg;

	if (op->hashed < 0) {
		struct web_conn *w = op->w;
		web_error(w, 500, "cannot hash the password");
		free(op);
		web_resume(w);
		return;
	}
	api_op_submit(op);
}

static struct api_op *api_op_new(struct web_conn *w, enum api_op_kind kind,
				 const char *a)
{
	struct api_op *op = xcalloc(1, sizeof *op);

	op->w = w;
	op->kind = kind;
	strcpy(op->by, w->login->user);
	strcpy(op->login_id, w->login->id);
	/* A name too long for any record is left empty: the store refuses
	 * it (-EINVAL, 400) like any other bad name. */
	if (strlen(a) < sizeof op->a)
		strcpy(op->a, a);
	return op;
}

/* Starts op: hashes pass first when given. The reply comes later. */
static void api_op_start(struct api_op *op, const char *pass)
{
	web_wait(op->w);
	if (pass != NULL) {
		snprintf(op->pass, sizeof op->pass, "%s", pass);
		loop_work(api_op_hash, api_op_hashed, op);
	} else {
		api_op_submit(op);
	}
}

/* --- users ---------------------------------------------------------------- */

/* The usage is the store's running total (what POP3's STAT says): no
 * mailbox is walked. */
static int api_user_each(const char *addr, const struct store_user *u,
			 void *arg)
{
	json_array_append_new(
	    arg,
	    json_pack("{s:s, s:b, s:I, s:I, s:I}", "address", addr, "admin",
		      (u->flags & STORE_USER_ADMIN) != 0, "quota",
		      (json_int_t)u->quota, "messages", (json_int_t)u->messages,
		      "used", (json_int_t)u->used));
	return 0;
}

static int api_users_fill(struct store_txn *txn, void *ctx)
{
	return store_user_list(txn, api_user_each, ctx);
}

void api_users(struct web_conn *w)
{
	api_list(w, api_users_fill, "users");
}

void api_user_add(struct web_conn *w)
{
	const char *addr, *pass;
	int admin = 0;
	json_int_t quota = 0;
	struct api_op *op;
	json_t *j;

	if (web_body(w, &j, "{s:s, s:s, s?:b, s?:I}", "address", &addr,
		     "password", &pass, "admin", &admin, "quota", &quota) < 0)
		return;
	if (!api_address_ok(addr))
		web_error(w, 400, "address: want local@domain");
	else if (!api_password_ok(pass))
		web_error(w, 400,
			  "password: 1 to 256 characters, no control "
			  "characters");
	else if (quota < 0)
		web_error(w, 400, "quota: octets, 0 for none");
	else {
		op = api_op_new(w, OP_USER_ADD, addr);
		op->admin = admin != 0;
		op->quota = (uint64_t)quota;
		api_op_start(op, pass);
	}
	json_decref(j);
}

void api_user_del(struct web_conn *w)
{
	if (strcasecmp(w->param, w->login->user) == 0)
		web_error(w, 409, "you cannot delete your own account here");
	else
		api_op_start(api_op_new(w, OP_USER_DEL, w->param), NULL);
}

void api_user_passwd(struct web_conn *w)
{
	const char *pass;
	json_t *j;

	if (web_body(w, &j, "{s:s}", "password", &pass) < 0)
		return;
	if (!api_password_ok(pass))
		web_error(w, 400,
			  "password: 1 to 256 characters, no control "
			  "characters");
	else
		api_op_start(api_op_new(w, OP_PASSWD, w->param), pass);
	json_decref(j);
}

void api_user_rename(struct web_conn *w)
{
	const char *to;
	struct api_op *op;
	json_t *j;

	if (web_body(w, &j, "{s:s}", "address", &to) < 0)
		return;
	if (!api_address_ok(to)) {
		web_error(w, 400, "address: want local@domain");
	} else if (strcasecmp(w->param, w->login->user) == 0) {
		web_error(w, 409, "you cannot rename your own account here");
	} else {
		op = api_op_new(w, OP_RENAME, w->param);
		snprintf(op->b, sizeof op->b, "%s", to);
		api_op_start(op, NULL);
	}
	json_decref(j);
}

void api_user_quota(struct web_conn *w)
{
	json_int_t quota;
	struct api_op *op;
	json_t *j;

	if (web_body(w, &j, "{s:I}", "quota", &quota) < 0)
		return;
	if (quota < 0) {
		web_error(w, 400, "quota: octets, 0 for none");
	} else {
		op = api_op_new(w, OP_QUOTA, w->param);
		op->quota = (uint64_t)quota;
		api_op_start(op, NULL);
	}
	json_decref(j);
}

void api_user_admin(struct web_conn *w)
{
	int admin;
	struct api_op *op;
	json_t *j;

	if (web_body(w, &j, "{s:b}", "admin", &admin) < 0)
		return;
	if (!admin && strcasecmp(w->param, w->login->user) == 0) {
		web_error(w, 409, "you cannot take your own admin right");
	} else {
		op = api_op_new(w, OP_ADMIN, w->param);
		op->admin = admin != 0;
		api_op_start(op, NULL);
	}
	json_decref(j);
}

/* --- aliases -------------------------------------------------------------- */

static int api_alias_each(const char *alias, const char *targets, void *arg)
{
	json_t *t = json_array();
	char buf[STORE_ALIAS_MAX + 1], *save, *tok;

	snprintf(buf, sizeof buf, "%s", targets);
	for (tok = strtok_r(buf, ",", &save); tok != NULL;
	     tok = strtok_r(NULL, ",", &save))
		json_array_append_new(t, json_string(tok));
	json_array_append_new(
	    arg, json_pack("{s:s, s:o}", "alias", alias, "targets", t));
	return 0;
}

static int api_aliases_fill(struct store_txn *txn, void *arr)
{
	return store_alias_list(txn, api_alias_each, arr);
}

void api_aliases(struct web_conn *w)
{
	api_list(w, api_aliases_fill, "aliases");
}

void api_alias_add(struct web_conn *w)
{
	const char *alias;
	json_t *j, *targets, *t;
	struct api_op *op;
	size_t i, n = 0;

	if (web_body(w, &j, "{s:s, s:o}", "alias", &alias, "targets",
		     &targets) < 0)
		return;
	if (!api_address_ok(alias)) {
		web_error(w, 400, "alias: want local@domain");
		goto out;
	}
	if (!json_is_array(targets) || json_array_size(targets) == 0) {
		web_error(w, 400, "targets: want a list of addresses");
		goto out;
	}
	op = api_op_new(w, OP_ALIAS_ADD, alias);
	json_array_foreach(targets, i, t)
	{
		const char *s = json_string_value(t);
		if (s == NULL || !api_address_ok(s) ||
		    n + strlen(s) + 1 > STORE_ALIAS_MAX) {
			free(op);
			web_error(w, 400,
				  "targets: want a list of addresses (at most "
				  "4096 characters together)");
			goto out;
		}
		n += (size_t)snprintf(op->b + n, sizeof op->b - n, "%s%s",
				      n ? "," : "", s);
	}
	api_op_start(op, NULL);
out:
	json_decref(j);
}

void api_alias_del(struct web_conn *w)
{
	api_op_start(api_op_new(w, OP_ALIAS_DEL, w->param), NULL);
}

/* --- domains -------------------------------------------------------------- */

struct api_conf_domain {
	const char *domain;
	bool found;
};

static void api_conf_match(const char *domain, void *arg)
{
	struct api_conf_domain *c = arg;

	c->found |= strcasecmp(domain, c->domain) == 0;
}

static bool api_domain_configured(struct web_conn *w, const char *d)
{
	struct api_conf_domain c = {d, false};

	config_each_domain(w->srv->cfg, api_conf_match, &c);
	return c.found;
}

struct api_domains {
	struct web_conn *w;
	json_t *arr;
};

static int api_domain_each(const char *name, void *arg)
{
	struct api_domains *d = arg;

	json_array_append_new(
	    d->arr, json_pack("{s:s, s:b}", "domain", name, "configured",
			      api_domain_configured(d->w, name)));
	return 0;
}

static int api_domains_fill(struct store_txn *txn, void *d)
{
	return store_domain_list(txn, api_domain_each, d);
}

void api_domains(struct web_conn *w)
{
	struct api_domains d = {w, json_array()};

	if (api_read(w, api_domains_fill, &d) < 0) {
		json_decref(d.arr);
		return;
	}
	web_json(w, 200, json_pack("{s:o}", "domains", d.arr));
}

void api_domain_add(struct web_conn *w)
{
	const char *d;
	json_t *j;

	if (web_body(w, &j, "{s:s}", "domain", &d) < 0)
		return;
	if (!api_domain_ok(d))
		web_error(w, 400, "domain: letters, digits, '-' and '.'");
	else
		api_op_start(api_op_new(w, OP_DOMAIN_ADD, d), NULL);
	json_decref(j);
}

/* Is any user or alias still in domain? */
static int api_in_domain_user(const char *addr, const struct store_user *u,
			      void *arg)
{
	const char *at = strrchr(addr, '@');

	(void)u;
	return at != NULL && strcasecmp(at + 1, arg) == 0;
}

static int api_in_domain_alias(const char *alias, const char *targets,
			       void *arg)
{
	(void)targets;
	return api_in_domain_user(alias, NULL, arg);
}

void api_domain_del(struct web_conn *w)
{
	struct store_txn *txn;
	int r;

	if (api_domain_configured(w, w->param)) {
		web_error(w, 409,
			  "the domain is set in the config file; "
			  "remove it there");
		return;
	}
	if (api_read_begin(w, &txn) < 0)
		return;
	r = store_user_list(txn, api_in_domain_user, w->param);
	if (r == 0)
		r = store_alias_list(txn, api_in_domain_alias, w->param);
	store_txn_abort(txn);
	if (r > 0)
		web_error(w, 409, "the domain still has users or aliases");
	else if (r < 0)
		web_error(w, 503, "cannot read the store now, try again");
	else
		api_op_start(api_op_new(w, OP_DOMAIN_DEL, w->param), NULL);
}

/* --- grants, queue, log --------------------------------------------------- */

static void api_grant_each(const struct relay_grant_info *g, void *arg)
{
	char addr[NETADDR_TEXT_MAX + 4], when[32];

	netaddr_format(&g->client, addr, sizeof addr);
	if (g->client.family == AF_INET6)
		strcat(addr, "/64");
	api_iso(g->expires, when);
	json_array_append_new(arg,
			      json_pack("{s:s, s:s, s:s, s:I}", "client", addr,
					"user", g->user, "expires", when,
					"seconds_left", (json_int_t)g->left));
}

void api_grants(struct web_conn *w)
{
	json_t *arr = json_array();

	relay_grants_each(api_grant_each, arr);
	web_json(w, 200, json_pack("{s:o}", "grants", arr));
}

static int api_queue_each(const struct store_queue_entry *e, void *arg)
{
	char id[20], when[32];

	snprintf(id, sizeof id, "%016" PRIx64, e->id);
	api_iso((time_t)e->next_attempt, when);
	json_array_append_new(
	    arg, json_pack("{s:s, s:s, s:s, s:i, s:s, s:s}", "id", id, "sender",
			   e->sender, "recipient", e->recipient, "attempts",
			   (int)e->attempts, "next_attempt", when, "last_error",
			   e->last_error ? e->last_error : ""));
	return 0;
}

static int api_queue_fill(struct store_txn *txn, void *arr)
{
	return store_queue_list(txn, api_queue_each, arr);
}

void api_queue(struct web_conn *w)
{
	api_list(w, api_queue_fill, "queue");
}

/* The path's message id, as the queue shows it: 1 to 16 hex digits, not
 * 0 (no message has it). 0 once the client has its 400. */
static uint64_t api_queue_id(struct web_conn *w)
{
	size_t n = strspn(w->param, "0123456789abcdefABCDEF");
	uint64_t id = 0;

	if (n > 0 && n <= 16 && w->param[n] == '\0')
		id = strtoull(w->param, NULL, 16);
	if (id == 0)
		web_error(w, 400, "queue id: want 1 to 16 hex digits, not 0");
	return id;
}

/* POST /api/queue/ID/retry: on the loop, like `pillarbox queue flush
 * ID` (deliver_flush): nothing is written, the runner just looks now. */
void api_queue_retry(struct web_conn *w)
{
	uint64_t id = api_queue_id(w);
	char text[20];
	int n;

	if (id == 0)
		return;
	snprintf(text, sizeof text, "%016" PRIx64, id);
	n = w->srv->queue->flush(id);
	log_msg(n > 0 ? LOG_INFO : LOG_WARN, "web",
		"sid=%s event=queue-retry by=%s name=%s result=%s",
		conn_sid(w->c), log_str(w->login->user), text,
		n > 0 ? "ok" : strerror(n == 0 ? ENOENT : -n));
	if (n == 0)
		web_error(w, 404, "no such message in the queue");
	else if (n < 0)
		web_error(w, 503, "cannot read the queue now, try again");
	else
		web_json(w, 200, api_queue_done(text, "retry", (size_t)n));
}

/* DELETE /api/queue/ID and POST /api/queue/ID/bounce: a job for the
 * commit thread (deliver_remove, which `pillarbox queue delete|bounce`
 * runs too). */
static void api_queue_remove(struct web_conn *w, enum api_op_kind kind)
{
	uint64_t id = api_queue_id(w);
	char text[20];
	struct api_op *op;

	if (id == 0)
		return;
	snprintf(text, sizeof text, "%016" PRIx64, id);
	op = api_op_new(w, kind, text);
	op->id = id;
	api_op_start(op, NULL);
}

void api_queue_bounce(struct web_conn *w)
{
	api_queue_remove(w, OP_QUEUE_BOUNCE);
}

void api_queue_delete(struct web_conn *w)
{
	api_queue_remove(w, OP_QUEUE_DELETE);
}

/* POST /api/queue/ID/ANYTHING-ELSE. */
void api_queue_unknown(struct web_conn *w)
{
	web_error(w, 400,
		  "no such action: want POST /api/queue/ID/retry or "
		  "/api/queue/ID/bounce, or DELETE /api/queue/ID");
}

static void api_log_each(const char *line, void *arg)
{
	json_array_append_new(arg, json_string(line));
}

void api_log(struct web_conn *w)
{
	char sid[64], addr[STORE_ADDR_MAX + 1], lim[16], *end;
	bool has_sid = web_query(w, "sid", sid, sizeof sid);
	bool has_addr = web_query(w, "address", addr, sizeof addr);
	unsigned long limit = 200;
	json_t *arr;

	if (web_query(w, "limit", lim, sizeof lim)) {
		limit = strtoul(lim, &end, 10);
		if (*end != '\0' || lim[0] == '\0' || limit == 0 ||
		    limit > WEB_LOG_LINES) {
			web_error(w, 400, "limit: 1 to 1000");
			return;
		}
	}
	/* The log writes client values encoded (log_value): so must the
	 * filter be, to find them. */
	if (has_addr)
		snprintf(addr, sizeof addr, "%s", log_str(addr));
	arr = json_array();
	logring_each(w->srv->ring, has_sid && sid[0] ? sid : NULL,
		     has_addr && addr[0] ? addr : NULL, limit, api_log_each,
		     arr);
	web_json(w, 200, json_pack("{s:o}", "lines", arr));
}

/* --- status, metrics, autoconfig -------------------------------------------
 */

static unsigned api_port_of(const char *addr)
{
	const char *colon = strrchr(addr, ':');

	return colon != NULL ? (unsigned)strtoul(colon + 1, NULL, 10) : 0;
}

void api_listener_each(const struct conn_listener_info *li, void *arg)
{
	struct api_ports *p = arg;
	unsigned port = api_port_of(li->addr);

	if (p->arr != NULL)
		json_array_append_new(
		    p->arr, json_pack("{s:s, s:s, s:I}", "proto", li->proto,
				      "address", li->addr, "connections",
				      (json_int_t)li->connections));
	if (strcmp(li->proto, "smtp") == 0 && p->smtp == 0)
		p->smtp = port;
	else if (strcmp(li->proto, "submission") == 0 && p->submission == 0)
		p->submission = port;
	else if (strcmp(li->proto, "pop3") == 0 && p->pop3 == 0)
		p->pop3 = port;
	p->total += li->connections;
}

static json_t *api_series(enum metric m, time_t *start)
{
	uint64_t counts[METRICS_HOURS];
	json_t *arr = json_array();

	metrics_hourly(m, counts, start);
	for (int i = 0; i < METRICS_HOURS; i++)
		json_array_append_new(arr, json_integer((json_int_t)counts[i]));
	return arr;
}

void api_status(struct web_conn *w)
{
	struct web_server *srv = w->srv;
	struct api_ports ports = {json_array(), 0, 0, 0, 0};
	struct store_txn *txn;
	uint64_t queue = 0, messages = 0;
	json_t *received, *retrieved, *delivered;
	time_t start;
	char since[32];

	conn_listeners_each(api_listener_each, &ports);
	if (store_txn_begin(srv->st, false, &txn) == 0) {
		store_queue_count(txn, &queue);
		store_msg_count(txn, &messages);
		store_txn_abort(txn);
	}
	received = api_series(METRIC_ACCEPTED, &start);
	retrieved = api_series(METRIC_RETRIEVED, &start);
	delivered = api_series(METRIC_DELIVERED, &start);
	api_iso(srv->started, since);
	web_json(w, 200,
		 json_pack(
		     "{s:s, s:s, s:s, s:I, s:o, s:I, s:I, s:I, s:I, s:I, s:I, "
		     "s:{s:I, s:I, s:I, s:I, s:I, s:I}, "
		     "s:{s:I, s:o, s:o, s:o}}",
		     "version", srv->version, "hostname", srv->cfg->hostname,
		     "started", since, "uptime",
		     (json_int_t)(time(NULL) - srv->started), "listeners",
		     ports.arr, "connections", (json_int_t)conn_count(),
		     "queue", (json_int_t)queue, "messages",
		     (json_int_t)messages, "store_bytes",
		     (json_int_t)store_file_size(srv->st), "disk_free",
		     (json_int_t)api_disk_free(srv), "logins",
		     (json_int_t)web_logins_count(srv), "totals", "accepted",
		     (json_int_t)metrics_get(METRIC_ACCEPTED), "retrieved",
		     (json_int_t)metrics_get(METRIC_RETRIEVED), "delivered",
		     (json_int_t)metrics_get(METRIC_DELIVERED), "bounced",
		     (json_int_t)metrics_get(METRIC_BOUNCED), "rejected",
		     (json_int_t)(metrics_get(METRIC_REJ_UNKNOWN_USER) +
				  metrics_get(METRIC_REJ_RELAY) +
				  metrics_get(METRIC_REJ_CONTENT) +
				  metrics_get(METRIC_REJ_STORAGE) +
				  metrics_get(METRIC_REJ_QUOTA)),
		     "auth_failures",
		     (json_int_t)(metrics_get(METRIC_AUTH_FAIL_POP3) +
				  metrics_get(METRIC_AUTH_FAIL_SMTP) +
				  metrics_get(METRIC_AUTH_FAIL_WEB)),
		     "hourly", "start", (json_int_t)start, "received", received,
		     "retrieved", retrieved, "delivered", delivered));
}

/* /metrics: a text buffer the writers append to. */
struct api_text {
	char *p;
	size_t len, cap;
};

static void api_text_add(const char *s, size_t n, void *arg)
{
	struct api_text *t = arg;

	if (t->len + n > t->cap) {
		t->cap = 2 * (t->len + n);
		t->p = xrealloc(t->p, t->cap);
	}
	memcpy(t->p + t->len, s, n);
	t->len += n;
}

static __attribute__((format(printf, 2, 3))) void
api_textf(struct api_text *t, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n > 0)
		api_text_add(buf, (size_t)n < sizeof buf ? (size_t)n : 511, t);
}

static void api_metrics_listener(const struct conn_listener_info *li, void *arg)
{
	api_textf(arg,
		  "pillarbox_connections{proto=\"%s\",address=\"%s\"} %zu\n",
		  li->proto, li->addr, li->connections);
}

static void api_grant_count(const struct relay_grant_info *g, void *arg)
{
	(void)g;
	++*(size_t *)arg;
}

void web_metrics(struct web_conn *w)
{
	struct web_server *srv = w->srv;
	struct api_text t = {xmalloc(4096), 0, 4096};
	struct store_txn *txn;
	uint64_t queue = 0;
	size_t grants = 0;

	metrics_write(api_text_add, &t);
	api_textf(&t, "# HELP pillarbox_connections Connections open now, "
		      "per listener\n# TYPE pillarbox_connections gauge\n");
	conn_listeners_each(api_metrics_listener, &t);
	if (store_txn_begin(srv->st, false, &txn) == 0) {
		store_queue_count(txn, &queue);
		store_txn_abort(txn);
	}
	relay_grants_each(api_grant_count, &grants);
	api_textf(&t,
		  "# HELP pillarbox_queue_messages Messages waiting in the "
		  "outbound queue\n# TYPE pillarbox_queue_messages gauge\n"
		  "pillarbox_queue_messages %" PRIu64 "\n"
		  "# HELP pillarbox_store_bytes Size of the store's data file\n"
		  "# TYPE pillarbox_store_bytes gauge\n"
		  "pillarbox_store_bytes %" PRIu64 "\n"
		  "# HELP pillarbox_disk_free_bytes Free space under data_dir\n"
		  "# TYPE pillarbox_disk_free_bytes gauge\n"
		  "pillarbox_disk_free_bytes %" PRIu64 "\n",
		  queue, store_file_size(srv->st), api_disk_free(srv));
	api_textf(&t,
		  "# HELP pillarbox_pop_before_smtp_grants Live "
		  "POP-before-SMTP grants\n"
		  "# TYPE pillarbox_pop_before_smtp_grants gauge\n"
		  "pillarbox_pop_before_smtp_grants %zu\n"
		  "# HELP pillarbox_web_logins Web console logins open\n"
		  "# TYPE pillarbox_web_logins gauge\n"
		  "pillarbox_web_logins %zu\n"
		  "# HELP pillarbox_uptime_seconds Seconds since start\n"
		  "# TYPE pillarbox_uptime_seconds gauge\n"
		  "pillarbox_uptime_seconds %lld\n",
		  grants, web_logins_count(srv),
		  (long long)(time(NULL) - srv->started));
	web_reply(w, 200, "text/plain; version=0.0.4; charset=utf-8", t.p,
		  t.len, "Cache-Control: no-store\r\n");
	free(t.p);
}

/* XML text: the five characters that are markup. */
static void api_xml(struct api_text *t, const char *s)
{
	for (; *s; s++) {
		const char *e = *s == '<'    ? "&lt;"
				: *s == '>'  ? "&gt;"
				: *s == '&'  ? "&amp;"
				: *s == '"'  ? "&quot;"
				: *s == '\'' ? "&apos;"
					     : NULL;
		if (e != NULL)
			api_text_add(e, strlen(e), t);
		else
			api_text_add(s, 1, t);
	}
}

static int api_xml_domain(const char *name, void *arg)
{
	api_textf(arg, "    <domain>");
	api_xml(arg, name);
	api_textf(arg, "</domain>\n");
	return 0;
}

/* Mozilla autoconfig (config-v1.1.xml): Thunderbird, K-9/Thunderbird for
 * Android, Evolution and others fill in the servers from this. */
void web_autoconfig(struct web_conn *w)
{
	const struct config *cfg = w->srv->cfg;
	struct api_ports ports = {NULL, 0, 0, 0, 0};
	struct api_text t = {xmalloc(2048), 0, 2048};
	struct store_txn *txn;
	char email[STORE_ADDR_MAX + 1];
	const char *domain = NULL, *at;
	unsigned sub;

	conn_listeners_each(api_listener_each, &ports);
	sub = ports.submission ? ports.submission : ports.smtp;
	if (web_query(w, "emailaddress", email, sizeof email) &&
	    (at = strrchr(email, '@')) != NULL && at[1] != '\0')
		domain = at + 1;
	api_textf(&t, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		      "<clientConfig version=\"1.1\">\n"
		      "  <emailProvider id=\"");
	api_xml(&t, domain != NULL ? domain : cfg->hostname);
	api_textf(&t, "\">\n");
	if (store_txn_begin(w->srv->st, false, &txn) == 0) {
		store_domain_list(txn, api_xml_domain, &t);
		store_txn_abort(txn);
	}
	api_textf(&t, "    <displayName>");
	api_xml(&t, domain != NULL ? domain : cfg->hostname);
	api_textf(&t, " mail</displayName>\n");
	/* No TLS yet on this server: plain, with the password in clear on
	 * the wire; STARTTLS/SSL entries come with the TLS issue. */
	if (ports.pop3 != 0) {
		api_textf(&t, "    <incomingServer type=\"pop3\">\n"
			      "      <hostname>");
		api_xml(&t, cfg->hostname);
		api_textf(&t,
			  "</hostname>\n      <port>%u</port>\n"
			  "      <socketType>plain</socketType>\n"
			  "      <authentication>password-cleartext"
			  "</authentication>\n"
			  "      <username>%%EMAILADDRESS%%</username>\n"
			  "      <pop3>\n"
			  "        <leaveMessagesOnServer>false"
			  "</leaveMessagesOnServer>\n"
			  "      </pop3>\n    </incomingServer>\n",
			  ports.pop3);
	}
	if (sub != 0) {
		api_textf(&t, "    <outgoingServer type=\"smtp\">\n"
			      "      <hostname>");
		api_xml(&t, cfg->hostname);
		api_textf(&t,
			  "</hostname>\n      <port>%u</port>\n"
			  "      <socketType>plain</socketType>\n"
			  "      <authentication>password-cleartext"
			  "</authentication>\n"
			  "      <username>%%EMAILADDRESS%%</username>\n"
			  "    </outgoingServer>\n",
			  sub);
	}
	api_textf(&t, "  </emailProvider>\n</clientConfig>\n");
	web_reply(w, 200, "application/xml; charset=utf-8", t.p, t.len, NULL);
	free(t.p);
}
