/*
 * main.c - the command line: `serve` runs the server; user, alias, domain
 * and queue verbs edit the store directly (LMDB lets them run while the
 * server does). The top of the stack: the one file that knows every module
 * (app/ > smtp/, pop3/ > core/ > store/ > base/; tests/check-layers.sh).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "core/auth.h"
#include "core/config.h"
#include "core/conn.h"
#include "core/control.h"
#include "core/dns.h"
#include "core/event.h"
#include "core/loop.h"
#include "core/relay.h"
#include "core/tls.h"
#include "base/log.h"
#include "base/metrics.h"
#include "pop3/pop3.h"
#include "smtp/data.h"
#include "smtp/deliver.h"
#include "smtp/dsn.h"
#include "smtp/smtp.h"
#include "store/store.h"
#include "web/web.h"

#define PILLARBOX_VERSION "0.1.0"

static const char usage[] =
    "usage: pillarbox [-c FILE] COMMAND [ARGS]\n"
    "\n"
    "  serve                          run in the foreground\n"
    "  user add [--admin] ADDRESS     password read from stdin (one line)\n"
    "  user del|passwd ADDRESS        (passwd: from stdin too)\n"
    "  user admin ADDRESS on|off      may use the web console's admin pages\n"
    "  user quota ADDRESS [SIZE]      sets the mailbox's quota: octets, or\n"
    "                                 with k, M, G (binary); 0 = none;\n"
    "                                 without SIZE, shows it as list does\n"
    "  user list                      one line per user: ADDRESS\n"
    "                                 messages=N used=OCTETS\n"
    "                                 quota=OCTETS|none [admin]\n"
    "  alias add ALIAS TARGET[,TARGET...]\n"
    "  alias del ALIAS | alias list\n"
    "  domain add|del DOMAIN | domain list\n"
    "  queue list                     one line per message and recipient:\n"
    "                                 ID <SENDER> <RECIPIENT> attempts=N\n"
    "                                 next=TIME (UTC, ISO 8601) error=TEXT\n"
    "  queue show ID                  the queued message's stored bytes\n"
    "  queue flush [ID]               the running server retries now\n"
    "  queue delete ID | queue bounce ID\n"
    "  grants                         the running server's POP-before-SMTP\n"
    "                                 grants, one a line: ADDRESS USER\n"
    "                                 EXPIRES (UTC, ISO 8601) SECONDS-LEFT\n"
    "  --version | --help\n"
    "\n"
    "Without -c FILE the built-in defaults apply (data in "
    "./pillarbox-data,\nSMTP on 127.0.0.1:2525 and implicit TLS on 2465, "
    "submission on "
    "127.0.0.1:2587,\nPOP3 on 127.0.0.1:2110 and implicit TLS on 2995, the web "
    "console on\n"
    "http://127.0.0.1:8080/, domain localhost, a self-signed certificate).\n";

/* --- store helpers shared by serve and the CLI -------------------------- */

struct domain_sync {
	struct store_txn *txn;
	int rc;
};

static void domain_sync_one(const char *domain, void *arg)
{
	struct domain_sync *ds = arg;
	int r = store_domain_add(ds->txn, domain);

	if (r < 0 && r != -EEXIST && ds->rc == 0)
		ds->rc = r;
}

/* Opens the store and makes sure the config's domains are in it. */
static int open_store(const struct config *cfg, struct store **st)
{
	struct domain_sync ds = {NULL, 0};
	int r = store_open(cfg->data_dir, cfg->max_store_size, st);

	if (r < 0) {
		fprintf(stderr, "pillarbox: cannot open store in %s: %s\n",
			cfg->data_dir,
			r == -EPROTO ? "unknown schema version" : strerror(-r));
		return r;
	}
	r = store_txn_begin(*st, true, &ds.txn);
	if (r == 0) {
		config_each_domain(cfg, domain_sync_one, &ds);
		r = ds.rc < 0 ? ds.rc : store_txn_commit(ds.txn);
		if (ds.rc < 0)
			store_txn_abort(ds.txn);
	}
	if (r < 0) {
		fprintf(stderr, "pillarbox: cannot write store: %s\n",
			strerror(-r));
		store_close(*st);
		*st = NULL;
	}
	return r;
}

/* --- serve -------------------------------------------------------------- */

struct server {
	struct config *cfg;
	struct store *st;
	uv_signal_t sigterm, sigint, sighup;
	uv_prepare_t log_flush; /* writes the loop's log lines, once a turn */
	struct smtp_server smtp, submission;
	struct pop3_server pop3;
	struct config_listener smtps, pop3s, webs; /* TLS ports */
	struct web_server web;
	uint64_t logins; /* EVENT_LOGIN seen, for the stats line */
	bool stopping;
};

/* Core's own use of login events, for now: counting them. The relay rules
 * (POP-before-SMTP) subscribe the same way. */
static void count_login(const struct event *ev, void *arg)
{
	struct server *srv = arg;

	(void)ev;
	srv->logins++;
}

/* --- the dashboard's chart across restarts -------------------------------
 * The hourly series (base/metrics) live in memory; a copy goes to the
 * store every CHART_SAVE_MS (a commit job) and at a clean stop, and comes
 * back at start: a restart keeps the chart, a crash loses minutes of it. */
#define CHART_SAVE_MS (5 * 60 * 1000)
#define CHART_KEY     "hourly"

static struct {
	struct store *st;
	struct timer *timer;
	struct store_job job;
	unsigned char buf[METRICS_HOURLY_BYTES]; /* what the job writes */
	bool busy;				 /* the job is queued */
} chart;

static int chart_save_run(struct store_txn *txn, void *arg)
{
	(void)arg;
	return store_meta_put(txn, CHART_KEY, chart.buf, sizeof chart.buf);
}

static void chart_save_done(void *arg, int rc)
{
	(void)arg;
	chart.busy = false;
	if (rc < 0) /* the next save tries again */
		log_msg(LOG_WARN, "core", "event=chart-save-failed error=%s",
			strerror(-rc));
}

static void chart_tick(void *arg)
{
	(void)arg;
	if (!chart.busy) {
		metrics_hourly_save(chart.buf);
		chart.busy = true;
		chart.job = (struct store_job){.run = chart_save_run,
					       .done = chart_save_done};
		store_commit_submit(chart.st, &chart.job);
	}
	timer_start(chart.timer, CHART_SAVE_MS);
}

static void chart_start(struct store *st)
{
	struct store_txn *txn;
	int n = -ENOENT;

	chart.st = st;
	if (store_txn_begin(st, false, &txn) == 0) {
		n = store_meta_get(txn, CHART_KEY, chart.buf, sizeof chart.buf);
		store_txn_abort(txn);
	}
	if (n > 0)
		metrics_hourly_load(chart.buf, (size_t)n);
	chart.timer = timer_new(chart_tick, NULL);
	timer_start(chart.timer, CHART_SAVE_MS);
}

/* The server stops: no more saves on the loop (the timer would keep it
 * running). */
static void chart_stop(void)
{
	timer_free(chart.timer);
	chart.timer = NULL;
}

/* After the loop ended (the commit thread is gone, so is a save it ran):
 * the last copy, in a write transaction of its own. */
static void chart_save_last(void)
{
	struct store_txn *txn = NULL;
	int r;

	if (chart.st == NULL) /* never started */
		return;
	metrics_hourly_save(chart.buf);
	if ((r = store_txn_begin(chart.st, true, &txn)) == 0 &&
	    (r = chart_save_run(txn, NULL)) == 0)
		r = store_txn_commit(txn);
	else
		store_txn_abort(txn);
	if (r < 0)
		log_msg(LOG_WARN, "core", "event=chart-save-failed error=%s",
			strerror(-r));
}

/* Every connection is closed, so no commit is pending and no read is
 * open: the commit thread can go. */
static void on_all_closed(void *arg)
{
	struct server *srv = arg;

	store_commit_stop(srv->st);
	dns_cleanup();
	control_stop();
	uv_close((uv_handle_t *)&srv->sigterm, NULL);
	uv_close((uv_handle_t *)&srv->sigint, NULL);
	uv_close((uv_handle_t *)&srv->sighup, NULL);
	uv_close((uv_handle_t *)&srv->log_flush, NULL);
}

/* SIGHUP: the certificate and key are read again; connections stay. */
static void on_hup_signal(uv_signal_t *h, int signum)
{
	(void)h, (void)signum;
	tls_reload();
}

/* Starts a listener on addr unless it is "" (off). */
static int listen_on(uv_loop_t *loop, const struct conn_proto *proto, void *ctx,
		     const struct config_listener *cfg, const char *busy,
		     const char *full, bool tls, const char *name)
{
	struct conn_listen_opts o = {.proto = proto,
				     .ctx = ctx,
				     .cfg = cfg,
				     .busy_reply = busy,
				     .full_reply = full,
				     .tls = tls,
				     .name = name};

	return cfg->listen[0] == '\0' ? 0 : conn_listen(loop, &o);
}

static void on_prepare(uv_prepare_t *h)
{
	(void)h;
	log_flush(); /* before the loop waits: nothing stays unwritten */
}

static void on_stop_signal(uv_signal_t *h, int signum)
{
	struct server *srv = h->data;

	if (srv->stopping)
		return;
	srv->stopping = true;
	log_msg(LOG_INFO, "core", "event=stopping signal=%d connections=%zu",
		signum, conn_count());
	/* Stop accepting, say goodbye, let in-flight commits finish;
	 * outbound connections end too, their results committed. */
	deliver_stop();
	web_server_stop(&srv->web);
	chart_stop();
	conn_shutdown(on_all_closed, srv);
}

/* --- the control socket (core/control.h) -------------------------------- */

/* One GRANTS line: ADDRESS USER EXPIRES SECONDS-LEFT; an IPv6 client is
 * its /64. */
static void control_grant_line(const struct relay_grant_info *g, void *arg)
{
	char addr[NETADDR_TEXT_MAX], when[32];
	struct tm tm;

	netaddr_format(&g->client, addr, sizeof addr);
	gmtime_r(&g->expires, &tm);
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
	control_printf(arg, "%s%s %s %s %llu", addr,
		       g->client.family == AF_INET6 ? "/64" : "", g->user, when,
		       (unsigned long long)g->left);
}

static void control_grants(struct control_out *o, const char *arg, void *ctx)
{
	(void)arg;
	(void)ctx;
	relay_grants_each(control_grant_line, o);
}

/* QUEUE-FLUSH [ID]: retry the queue (or one message) now. */
static void control_queue_flush(struct control_out *o, const char *arg,
				void *ctx)
{
	char *end;
	uint64_t id = 0;
	int r;

	(void)ctx;
	if (arg[0] != '\0') {
		errno = 0;
		id = strtoull(arg, &end, 16);
		if (errno != 0 || *end != '\0' || id == 0) {
			control_error(o, "bad message id");
			return;
		}
	}
	r = deliver_flush(id);
	if (r == 0 && id != 0)
		control_error(o, "no such message in the queue");
	else if (r < 0)
		control_error(o, strerror(-r));
}

/* What the control socket answers: a row per command. */
static const struct control_cmd control_cmds[] = {
    {"GRANTS", CMD_ARG_NONE, control_grants},
    {"QUEUE-FLUSH", CMD_ARG_ANY, control_queue_flush},
};

/* `pillarbox grants`: asks the running server (only it knows). */
static void print_control_line(const char *text, void *arg)
{
	(void)arg;
	printf("%s\n", text);
}

/* Asks the running server (GRANTS, QUEUE-FLUSH); what is the verb for
 * messages. */
static int cli_control(const struct config *cfg, const char *request,
		       const char *what)
{
	char err[CONTROL_LINE_MAX];
	int r = control_request(cfg->data_dir, request, print_control_line,
				NULL, err, sizeof err);

	fflush(stdout);
	if (r == -ENOENT)
		fprintf(stderr,
			"pillarbox: the server is not running (no control "
			"socket in %s)\n",
			cfg->data_dir);
	else if (r == -ETIMEDOUT)
		fprintf(stderr,
			"pillarbox: the server did not answer within %d s\n",
			CONTROL_REQUEST_TIMEOUT_MS / 1000);
	else if (r == -EBADMSG)
		fprintf(stderr, "pillarbox: %s: %s\n", what, err);
	else if (r < 0)
		fprintf(stderr, "pillarbox: %s/%s: %s\n", cfg->data_dir,
			CONTROL_SOCKET, strerror(-r));
	return r < 0 ? 1 : 0;
}

static int serve(struct config *cfg)
{
	struct server srv = {.cfg = cfg};
	uv_loop_t *loop = uv_default_loop();
	static const struct web_queue_hooks queue_hooks = {
	    deliver_flush, deliver_remove, deliver_wake};
	uint64_t commits, jobs;
	int r;

	signal(SIGPIPE, SIG_IGN);
	loop_init(loop);
	if (open_store(cfg, &srv.st) < 0)
		return 1;
	msgbuf_spill_dir = cfg->data_dir;
	if (auth_init() < 0) {
		fprintf(stderr, "pillarbox: crypt(3) has no yescrypt\n");
		store_close(srv.st);
		return 1;
	}
	/* Tests of outbound delivery point verification at their own CA. */
	if (getenv("PILLARBOX_TEST_TRUST_FILE") != NULL)
		tls_set_trust_file(getenv("PILLARBOX_TEST_TRUST_FILE"));
	/* Before any port opens: a bad certificate or key stops here (exit
	 * 2, like a config error). */
	if (tls_setup(cfg) < 0) {
		auth_cleanup();
		store_close(srv.st);
		return 2;
	}
	event_subscribe(count_login, &srv);
	relay_init(cfg);
	if (dns_init(cfg->delivery.resolver) < 0) {
		store_close(srv.st);
		return 1;
	}
	r = store_commit_start(srv.st, loop);
	if (r == 0 && deliver_start(cfg, srv.st) < 0) {
		store_commit_stop(srv.st);
		dns_cleanup();
		uv_run(loop, UV_RUN_DEFAULT);
		store_close(srv.st);
		return 2;
	}
	if (r == 0)
		chart_start(srv.st);
	if (r == 0)
		r = control_start(cfg->data_dir, control_cmds,
				  sizeof control_cmds / sizeof *control_cmds,
				  &srv);
	smtp_server_init(&srv.smtp, cfg, srv.st);
	smtp_submission_init(&srv.submission, cfg, srv.st);
	pop3_server_init(&srv.pop3, cfg, srv.st);
	web_server_init(&srv.web, cfg, srv.st, PILLARBOX_VERSION, &queue_hooks);
	/* Implicit TLS on 465 is submission (RFC 8314 3.3). */
	srv.smtps = cfg->submission;
	strcpy(srv.smtps.listen, cfg->smtps);
	srv.pop3s = cfg->pop3;
	strcpy(srv.pop3s.listen, cfg->pop3s);
	conn_set_max(cfg->max_connections);
	if (r == 0)
		r = listen_on(loop, &smtp_proto, &srv.smtp, &cfg->smtp,
			      srv.smtp.busy_reply, srv.smtp.full_reply, false,
			      NULL);
	if (r == 0)
		r = listen_on(loop, &smtp_submission_proto, &srv.submission,
			      &srv.smtps, srv.submission.busy_reply,
			      srv.submission.full_reply, true, "smtps");
	if (r == 0)
		r = listen_on(loop, &smtp_submission_proto, &srv.submission,
			      &cfg->submission, srv.submission.busy_reply,
			      srv.submission.full_reply, false, NULL);
	if (r == 0)
		r = listen_on(loop, &pop3_proto, &srv.pop3, &cfg->pop3,
			      srv.pop3.busy_reply, srv.pop3.full_reply, false,
			      NULL);
	if (r == 0)
		r = listen_on(loop, &pop3_proto, &srv.pop3, &srv.pop3s,
			      srv.pop3.busy_reply, srv.pop3.full_reply, true,
			      "pop3s");
	if (r == 0)
		r = listen_on(loop, &web_proto, &srv.web, &cfg->web,
			      srv.web.busy_reply, srv.web.full_reply, false,
			      NULL);
	/* HTTPS: the same console over implicit TLS, [tls]'s certificate. */
	srv.webs = cfg->web;
	strcpy(srv.webs.listen, cfg->web_tls_listen);
	if (r == 0)
		r = listen_on(loop, &web_proto, &srv.web, &srv.webs,
			      srv.web.busy_reply, srv.web.full_reply, true,
			      "webs");
	uv_signal_init(loop, &srv.sigterm);
	uv_signal_init(loop, &srv.sigint);
	uv_signal_init(loop, &srv.sighup);
	srv.sigterm.data = srv.sigint.data = srv.sighup.data = &srv;
	uv_signal_start(&srv.sigterm, on_stop_signal, SIGTERM);
	uv_signal_start(&srv.sigint, on_stop_signal, SIGINT);
	uv_signal_start(&srv.sighup, on_hup_signal, SIGHUP);
	uv_prepare_init(loop, &srv.log_flush);
	uv_prepare_start(&srv.log_flush, on_prepare);
	uv_unref((uv_handle_t *)&srv.log_flush);
	if (r < 0) {
		fprintf(stderr, "pillarbox: cannot start: %s\n",
			uv_strerror(r));
		on_stop_signal(&srv.sigterm, 0);
	} else {
		log_msg(LOG_INFO, "core",
			"event=ready version=%s hostname=%s data_dir=%s",
			PILLARBOX_VERSION, cfg->hostname, cfg->data_dir);
	}
	log_buffer(true);
	uv_run(loop, UV_RUN_DEFAULT);
	log_buffer(false);
	chart_save_last();
	store_commit_stats(srv.st, &commits, &jobs);
	log_msg(
	    LOG_INFO, "core",
	    "event=stats commits=%llu jobs=%llu accepted=%llu logins=%llu "
	    "delivered=%llu bounced=%llu deferred=%llu",
	    (unsigned long long)commits, (unsigned long long)jobs,
	    (unsigned long long)(srv.smtp.accepted + srv.submission.accepted),
	    (unsigned long long)srv.logins,
	    (unsigned long long)metrics_get(METRIC_DELIVERED),
	    (unsigned long long)metrics_get(METRIC_BOUNCED),
	    (unsigned long long)metrics_get(METRIC_DEFERRED));
	deliver_cleanup();
	web_server_cleanup(&srv.web);
	auth_cleanup();
	relay_cleanup();
	event_reset();
	tls_cleanup();
	store_close(srv.st);
	if (uv_loop_close(loop) != 0)
		fatal("event=exit error=live-handles");
	log_msg(LOG_INFO, "core", "event=stopped");
	return r < 0 ? 1 : 0;
}

/* --- CLI ---------------------------------------------------------------- */

/* Reads the password, one line from stdin (no echo on a terminal), and
 * hashes it into hash (n bytes); the plaintext is wiped. 0, or -1 when
 * there is no line, it is empty or over AUTH_PASS_MAX, or hashing fails.
 * Called before the write transaction begins: LMDB has one writer, so a
 * transaction held while a person types (or a pipe stays open and empty,
 * or yescrypt runs) would hold up every commit of the running server. */
static int read_password(char *hash, size_t n)
{
	struct termios old, quiet;
	bool tty = isatty(STDIN_FILENO) && tcgetattr(0, &old) == 0;
	char buf[AUTH_PASS_MAX + 2];
	size_t len;
	int r = -1;

	if (tty) {
		fputs("Password: ", stderr);
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(0, TCSAFLUSH, &quiet);
	}
	if (fgets(buf, (int)sizeof buf, stdin) == NULL)
		buf[0] = '\0';
	if (tty) {
		tcsetattr(0, TCSAFLUSH, &old);
		fputc('\n', stderr);
	}
	len = strcspn(buf, "\r\n");
	/* A line that fills buf is longer than AUTH_PASS_MAX. */
	if (len > 0 && !(buf[len] == '\0' && len == sizeof buf - 1)) {
		buf[len] = '\0';
		r = auth_hash(buf, hash, n);
	}
	explicit_bzero(buf, sizeof buf);
	return r;
}

/* A plausible address: one '@', something either side, no space or
 * control character. The SMTP parser has the full grammar. */
static bool cli_address_ok(const char *a)
{
	const char *at = strchr(a, '@');

	if (at == NULL || at == a || at[1] == '\0' || strchr(at + 1, '@') ||
	    strlen(a) > STORE_ADDR_MAX)
		return false;
	for (const unsigned char *p = (const unsigned char *)a; *p; p++)
		if (*p <= ' ' || *p == 0x7f || *p == '<' || *p == '>')
			return false;
	return true;
}

static int print_domain(const char *name, void *arg)
{
	(void)arg;
	printf("%s\n", name);
	return 0;
}

/* ADDRESS messages=N used=OCTETS quota=OCTETS|none [admin]: the usage is
 * the running total the store keeps, what POP3's STAT says. */
static int print_user(const char *addr, const struct store_user *u, void *arg)
{
	char quota[24] = "none";

	(void)arg;
	if (u->quota != 0)
		snprintf(quota, sizeof quota, "%llu",
			 (unsigned long long)u->quota);
	printf("%s messages=%u used=%llu quota=%s%s\n", addr, u->messages,
	       (unsigned long long)u->used, quota,
	       (u->flags & STORE_USER_ADMIN) ? " admin" : "");
	return 0;
}

static int print_alias(const char *alias, const char *targets, void *arg)
{
	(void)arg;
	printf("%s %s\n", alias, targets);
	return 0;
}

/* One queue line: ID <SENDER> <RECIPIENT> attempts=N next=ISO-8601
 * error=TEXT (the last error runs to the end of the line; "-" before
 * the first attempt). */
static int print_queue(const struct store_queue_entry *e, void *arg)
{
	time_t next = (time_t)e->next_attempt;
	char when[32];
	struct tm tm;

	(void)arg;
	gmtime_r(&next, &tm);
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
	printf("%016llx <%s> <%s> attempts=%u next=%s error=%s\n",
	       (unsigned long long)e->id, e->sender, e->recipient, e->attempts,
	       when, e->last_error[0] != '\0' ? e->last_error : "-");
	return 0;
}

/* Finds whether message id is queued (so `queue show` shows only queued
 * mail, not any mailbox's). */
struct queued {
	uint64_t id;
	bool found;
};

static int find_queued(const struct store_queue_entry *e, void *arg)
{
	struct queued *q = arg;

	q->found |= e->id == q->id;
	return 0;
}

/* `queue show ID`: the stored bytes of a queued message, as they will be
 * sent on (no Return-Path: the next hop's final delivery adds one). */
static int show_queued(struct store_txn *txn, const char *arg)
{
	struct queued q = {0, false};
	const void *data;
	size_t len;
	char *end;
	int r;

	q.id = strtoull(arg, &end, 16);
	if (*arg == '\0' || *end != '\0')
		return -EINVAL;
	if ((r = store_queue_list(txn, find_queued, &q)) < 0)
		return r;
	if (!q.found)
		return -ENOENT;
	if ((r = store_msg_get(txn, q.id, &data, &len)) < 0)
		return r;
	fwrite(data, 1, len, stdout);
	return 0;
}

/* `queue delete ID` and `queue bounce ID`: every recipient of message
 * ID, in the CLI's write transaction (deliver_remove, which the console
 * shares; a server delivering it meanwhile finds the entries gone when it
 * records its attempt). */
static int cli_queue_remove(const struct config *cfg, struct store_txn *txn,
			    const char *arg, bool bounce)
{
	uint64_t id;
	size_t n;
	char *end;
	int r;

	errno = 0;
	id = strtoull(arg, &end, 16);
	if (errno != 0 || *end != '\0' || id == 0)
		return -EINVAL;
	r = deliver_remove(txn, cfg, id, bounce, &n);
	if (r == 1)
		printf("bounce queued for the sender; `pillarbox queue flush` "
		       "sends it now\n");
	return r < 0 ? r : 0;
}

/* Is domain set in the config file (so `domain del` cannot remove it)? */
struct in_config {
	const char *domain;
	bool found;
};

static void domain_match(const char *domain, void *arg)
{
	struct in_config *ic = arg;
	if (strcasecmp(domain, ic->domain) == 0)
		ic->found = true;
}

/* Runs one verb inside a write transaction, which is held only for the
 * store calls: nothing here waits for input. hash is the new password's
 * for `user add` and `user passwd` (read and hashed by cli() first), else
 * NULL. Returns the exit code. */
static int cli_verb(const struct config *cfg, struct store_txn *txn, int argc,
		    char **argv, const char *hash)
{
	const char *noun = argv[0], *verb = argc > 1 ? argv[1] : "";
	const char *arg = argc > 2 ? argv[2] : NULL;
	int r = -EINVAL;

#define IS(n, v, args)                                                         \
	(strcmp(noun, n) == 0 && strcmp(verb, v) == 0 && argc == (args) + 2)
	bool admin = IS("user", "add", 2) && strcmp(argv[2], "--admin") == 0;

	if (admin)
		arg = argv[3];
	if ((IS("user", "add", 1) || IS("user", "passwd", 1) || admin) &&
	    hash != NULL) {
		r = verb[0] == 'a' ? store_user_add(txn, arg, hash)
				   : store_user_set_hash(txn, arg, hash);
		if (r == 0 && admin)
			r = store_user_set_flags(txn, arg, STORE_USER_ADMIN);
		if (r == -ENOENT && verb[0] == 'a') {
			fprintf(stderr,
				"pillarbox: %s: domain is not local (add it "
				"with `pillarbox domain add`)\n",
				arg);
			return 1;
		}
	} else if (IS("user", "admin", 2) && (strcmp(argv[3], "on") == 0 ||
					      strcmp(argv[3], "off") == 0)) {
		struct store_user u;
		r = store_user_get(txn, arg, &u);
		if (r == 0)
			r = store_user_set_flags(
			    txn, arg,
			    argv[3][1] == 'n' ? u.flags | STORE_USER_ADMIN
					      : u.flags & ~STORE_USER_ADMIN);
	} else if (IS("user", "quota", 2)) {
		uint64_t quota;
		if (config_parse_size(argv[3], &quota) < 0) {
			fprintf(stderr,
				"pillarbox: bad size: %s (octets, or with k, "
				"M, G; 0 = none)\n",
				argv[3]);
			return 1;
		}
		r = store_user_set_quota(txn, arg, quota);
	} else if (IS("user", "quota", 1)) {
		struct store_user u;
		char name[STORE_ADDR_MAX + 1];
		/* As the store keeps it (and list shows it): lower-cased. */
		snprintf(name, sizeof name, "%s", arg);
		for (char *p = name; *p; p++)
			*p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
		if ((r = store_user_get(txn, arg, &u)) == 0)
			print_user(name, &u, NULL);
	} else if (IS("user", "del", 1)) {
		r = store_user_del(txn, arg);
	} else if (IS("user", "list", 0)) {
		r = store_user_list(txn, print_user, NULL);
	} else if (IS("alias", "add", 2)) {
		if (!cli_address_ok(arg)) {
			fprintf(stderr, "pillarbox: bad address: %s\n", arg);
			return 1;
		}
		r = store_alias_add(txn, arg, argv[3]);
		if (r == -ENOENT) {
			fprintf(stderr,
				"pillarbox: %s: the alias's domain "
				"must be local and every target an "
				"existing user\n",
				arg);
			return 1;
		}
	} else if (IS("alias", "del", 1)) {
		r = store_alias_del(txn, arg);
	} else if (IS("alias", "list", 0)) {
		r = store_alias_list(txn, print_alias, NULL);
	} else if (IS("domain", "add", 1)) {
		r = strchr(arg, '@') || strchr(arg, ' ')
			? -EINVAL
			: store_domain_add(txn, arg);
	} else if (IS("domain", "del", 1)) {
		struct in_config ic = {arg, false};
		config_each_domain(cfg, domain_match, &ic);
		if (ic.found) {
			fprintf(stderr,
				"pillarbox: %s is set in the config "
				"file's domains; remove it there\n",
				arg);
			return 1;
		}
		r = store_domain_del(txn, arg);
	} else if (IS("domain", "list", 0)) {
		r = store_domain_list(txn, print_domain, NULL);
	} else if (IS("queue", "list", 0)) {
		r = store_queue_list(txn, print_queue, NULL);
	} else if (IS("queue", "show", 1)) {
		r = show_queued(txn, arg);
	} else if (IS("queue", "delete", 1) || IS("queue", "bounce", 1)) {
		r = cli_queue_remove(cfg, txn, arg, verb[0] == 'b');
	} else {
		fputs(usage, stderr);
		return 2;
	}
#undef IS
	if (r < 0) {
		fprintf(stderr, "pillarbox: %s %s%s%s: %s\n", noun, verb,
			arg ? " " : "", arg ? arg : "",
			r == -EEXIST   ? "already exists"
			: r == -ENOENT ? "no such entry"
			: r == -EINVAL ? "invalid argument"
				       : strerror(-r));
		return 1;
	}
	return 0;
}

static int cli(const struct config *cfg, int argc, char **argv)
{
	char hash[STORE_HASH_MAX + 1];
	bool add_admin = argc == 4 && strcmp(argv[0], "user") == 0 &&
			 strcmp(argv[1], "add") == 0 &&
			 strcmp(argv[2], "--admin") == 0;
	bool takes_password =
	    add_admin ||
	    (argc == 3 && strcmp(argv[0], "user") == 0 &&
	     (strcmp(argv[1], "add") == 0 || strcmp(argv[1], "passwd") == 0));
	const char *who = add_admin ? argv[3] : argv[2];
	struct store *st;
	struct store_txn *txn;
	int rc, r;

	if (open_store(cfg, &st) < 0)
		return 1;
	/* Input and hashing first, then one short write transaction. */
	if (takes_password && !cli_address_ok(who)) {
		fprintf(stderr, "pillarbox: bad address: %s\n", who);
		store_close(st);
		return 1;
	}
	if (takes_password && read_password(hash, sizeof hash) < 0) {
		fprintf(stderr,
			"pillarbox: need a password (one line on stdin, 1 to "
			"%d characters)\n",
			AUTH_PASS_MAX);
		store_close(st);
		return 1;
	}
	r = store_txn_begin(st, true, &txn);
	if (r < 0) {
		fprintf(stderr, "pillarbox: %s\n", strerror(-r));
		store_close(st);
		return 1;
	}
	rc = cli_verb(cfg, txn, argc, argv, takes_password ? hash : NULL);
	if (rc == 0)
		r = store_txn_commit(txn);
	else
		store_txn_abort(txn);
	if (r < 0) {
		fprintf(stderr, "pillarbox: commit failed: %s\n", strerror(-r));
		rc = 1;
	}
	fflush(stdout);
	store_close(st);
	return rc;
}

int main(int argc, char **argv)
{
	struct config cfg;
	const char *file = NULL;
	char *args[8];
	int n = 0;

	/* -c FILE may stand anywhere; the rest is the verb and its args. */
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			file = argv[++i];
		else if (strcmp(argv[i], "--version") == 0) {
			printf("pillarbox %s\n", PILLARBOX_VERSION);
			return 0;
		} else if (strcmp(argv[i], "--help") == 0 ||
			   strcmp(argv[i], "-h") == 0) {
			fputs(usage, stdout);
			return 0;
		} else if (n < 8 && (argv[i][0] != '-' || n > 0))
			args[n++] = argv[i];
		else {
			fputs(usage, stderr);
			return 2;
		}
	}
	config_defaults(&cfg);
	if (gethostname(cfg.hostname, sizeof cfg.hostname) != 0 ||
	    cfg.hostname[0] == '\0')
		strcpy(cfg.hostname, "localhost");
	if (file != NULL && config_load(&cfg, file) < 0)
		return 2;
	if (n == 0) {
		fputs(usage, stderr);
		return 2;
	}
	if (strcmp(args[0], "serve") == 0 && n == 1)
		return serve(&cfg);
	if (strcmp(args[0], "grants") == 0 && n == 1)
		return cli_control(&cfg, "GRANTS", "grants");
	if (strcmp(args[0], "queue") == 0 && n >= 2 && n <= 3 &&
	    strcmp(args[1], "flush") == 0) {
		char req[64];
		snprintf(req, sizeof req, "QUEUE-FLUSH%s%.40s",
			 n == 3 ? " " : "", n == 3 ? args[2] : "");
		return cli_control(&cfg, req, "queue flush");
	}
	return cli(&cfg, n, args);
}
