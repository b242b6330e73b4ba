/*
 * pop3.c - POP3 sessions: AUTHORIZATION (USER/PASS, AUTH PLAIN), then
 * TRANSACTION over a snapshot of the maildrop taken at login, then UPDATE:
 * QUIT deletes what was marked in one commit. see pop3.h
 */
#include "pop3/pop3.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/auth.h"
#include "core/cmd.h"
#include "core/event.h"
#include "core/loop.h"
#include "core/sasl.h"
#include "base/log.h"
#include "base/metrics.h"
#include "pop3/parse.h"

enum pop3_state { P_AUTH = 1, P_TRANS = 2, P_ANY = 3 };

/* A reply's first piece holds the whole trace of its mailbox entry. */
_Static_assert(STORE_TRACE_MAX < POP3_PIECE, "a trace fits in one piece");

struct pop3_msg {
	uint32_t uid;
	bool deleted;
	uint64_t id, size;
};

/* Where a RETR/TOP reply is: message id and octets sent of end. A reply
 * is the mailbox entry's own trace (its Return-Path:, see store.h), then
 * the stored message; off and end count both. */
struct pop3_send {
	uint64_t id;
	size_t off, end;
	size_t tlen; /* octets of trace: all in the first piece */
	bool bol;    /* the next octet starts a line */
};

struct pop3_lock {
	struct pop3_lock *next;
	char user[];
};

struct pop3_session {
	struct conn *c;
	struct pop3_server *srv;
	enum pop3_state state;
	bool auth_wait; /* AUTH PLAIN sent "+ ", the response comes next */
	bool locked;	/* holds the maildrop lock for user */
	unsigned errors;
	char *user;	       /* from USER, then the logged-in user */
	struct timer *delay;   /* login_delay after a failure */
	struct pop3_send send; /* the RETR/TOP being sent */
	struct pop3_msg *msgs;
	unsigned nmsgs;
	struct store_job job;
};

/* The command table: adding a verb is adding a row. */
#define POP3_COMMANDS(X)                                                       \
	X(USER, P_AUTH, ARG_REQ, pop3_user)                                    \
	X(PASS, P_AUTH, ARG_REQ, pop3_pass)                                    \
	X(AUTH, P_AUTH, ARG_ANY, pop3_auth)                                    \
	X(STLS, P_AUTH, ARG_NONE, pop3_stls)                                   \
	X(CAPA, P_ANY, ARG_NONE, pop3_capa)                                    \
	X(QUIT, P_ANY, ARG_NONE, pop3_quit)                                    \
	X(STAT, P_TRANS, ARG_NONE, pop3_stat)                                  \
	X(LIST, P_TRANS, ARG_ANY, pop3_list)                                   \
	X(UIDL, P_TRANS, ARG_ANY, pop3_uidl)                                   \
	X(RETR, P_TRANS, ARG_REQ, pop3_retr)                                   \
	X(TOP, P_TRANS, ARG_REQ, pop3_top)                                     \
	X(DELE, P_TRANS, ARG_REQ, pop3_dele)                                   \
	X(RSET, P_TRANS, ARG_NONE, pop3_rset)                                  \
	X(NOOP, P_TRANS, ARG_NONE, pop3_noop)

#define X(verb, states, arity, fn)                                             \
	static void fn(struct pop3_session *s, char *arg);
POP3_COMMANDS(X)
#undef X

static const struct cmd_spec pop3_specs[] = {
#define X(verb, states, arity, fn) {#verb, states, CMD_##arity},
    POP3_COMMANDS(X)
#undef X
};

static void (*const pop3_proceed[])(struct pop3_session *s, char *arg) = {
#define X(verb, states, arity, fn) fn,
    POP3_COMMANDS(X)
#undef X
};

/* --- replies ------------------------------------------------------------ */

static void pop3_reply(struct pop3_session *s, const char *line)
{
	conn_puts(s->c, line);
	conn_write(s->c, "\r\n", 2);
}

static void pop3_error(struct pop3_session *s, const char *line)
{
	pop3_reply(s, line);
	if (++s->errors >= POP3_ERRORS_MAX) {
		pop3_reply(s, "-ERR Too many errors.");
		conn_close(s->c);
	}
}

/* --- maildrop lock ------------------------------------------------------ */

static bool pop3_lock(struct pop3_session *s)
{
	struct pop3_lock *l;

	for (l = s->srv->locks; l != NULL; l = l->next)
		if (strcmp(l->user, s->user) == 0)
			return false;
	l = xmalloc(sizeof *l + strlen(s->user) + 1);
	strcpy(l->user, s->user);
	l->next = s->srv->locks;
	s->srv->locks = l;
	s->locked = true;
	return true;
}

static void pop3_unlock(struct pop3_session *s)
{
	struct pop3_lock **pp, *l;

	if (!s->locked)
		return;
	for (pp = &s->srv->locks; (l = *pp) != NULL; pp = &l->next)
		if (strcmp(l->user, s->user) == 0) {
			*pp = l->next;
			free(l);
			break;
		}
	s->locked = false;
}

/* --- AUTHORIZATION ------------------------------------------------------ */

static void pop3_set_user(struct pop3_session *s, const char *user)
{
	free(s->user);
	s->user = xstrdup(user);
	for (char *p = s->user; *p; p++)
		*p = (char)tolower((unsigned char)*p);
}

static int pop3_snapshot_add(const struct store_mail *m, void *arg)
{
	struct pop3_session *s = arg;

	if ((s->nmsgs & (s->nmsgs - 1)) == 0) /* grow at powers of two */
		s->msgs = xrealloc(s->msgs, (s->nmsgs ? 2 * s->nmsgs : 1) *
						sizeof *s->msgs);
	s->msgs[s->nmsgs++] = (struct pop3_msg){m->uid, false, m->id, m->size};
	return 0;
}

/* Takes the maildrop: lock it, then number its messages for the session. */
static void pop3_login_ok(struct pop3_session *s)
{
	struct store_txn *txn;
	struct event ev;
	int r;

	if (!pop3_lock(s)) {
		pop3_reply(s, "-ERR [IN-USE] Mailbox is locked by another "
			      "session.");
		return;
	}
	r = store_txn_begin(s->srv->st, false, &txn);
	if (r == 0) {
		r = store_mailbox_list(txn, s->user, pop3_snapshot_add, s);
		store_txn_abort(txn);
	}
	if (r < 0) {
		pop3_unlock(s);
		free(s->msgs);
		s->msgs = NULL;
		s->nmsgs = 0;
		pop3_reply(s, "-ERR [SYS/TEMP] Cannot open the mailbox now.");
		return;
	}
	s->state = P_TRANS;
	log_msg(LOG_INFO, "pop3", "sid=%s event=login ip=%s user=%s msgs=%u",
		conn_sid(s->c), conn_peer(s->c), log_str(s->user), s->nmsgs);
	ev = (struct event){EVENT_LOGIN, "pop3", s->user, conn_peer_net(s->c)};
	event_emit(&ev);
	pop3_reply(s, "+OK Logged in.");
}

static void pop3_auth_failed(struct pop3_session *s)
{
	pop3_reply(s, "-ERR [AUTH] Authentication failed.");
	conn_resume(s->c);
}

static void pop3_delay_done(void *arg)
{
	pop3_auth_failed(arg);
}

static void pop3_auth_done(void *arg, enum auth_result r)
{
	struct pop3_session *s = arg;
	unsigned delay = s->srv->cfg->login_delay;

	if (r != AUTH_FAIL) {
		if (r == AUTH_OK)
			pop3_login_ok(s);
		else
			pop3_reply(s, "-ERR [SYS/TEMP] Cannot check the "
				      "password now, try again.");
		conn_resume(s->c);
		return;
	}
	auth_failed(conn_peer_net(s->c));
	metrics_inc(METRIC_AUTH_FAIL_POP3);
	log_msg(LOG_WARN, "pop3", "sid=%s event=auth-failed ip=%s user=%s",
		conn_sid(s->c), conn_peer(s->c), log_str(s->user));
	if (delay == 0) {
		pop3_auth_failed(s);
		return;
	}
	/* RFC 2449 LOGIN-DELAY spirit: a wrong guess costs the guesser
	 * time, and only the guesser. */
	if (s->delay == NULL)
		s->delay = timer_new(pop3_delay_done, s);
	timer_start(s->delay, delay * 1000ull);
}

/* Checks user/pass off the loop; input waits until the answer. */
static void pop3_login(struct pop3_session *s, const char *pass)
{
	if (auth_throttled(conn_peer_net(s->c))) {
		pop3_reply(s, "-ERR [SYS/TEMP] Too many failed logins, try "
			      "later.");
		return;
	}
	conn_pause(s->c);
	auth_check(s->srv->st, s->user, pass, pop3_auth_done, s);
}

/* May this session log in? Passwords go only over TLS, unless the admin
 * said otherwise or the client is a tool on our own address (as Dovecot
 * exempts local logins; 127.0.0.9 reaching 127.0.0.1 is not one). */
static bool pop3_auth_allowed(struct pop3_session *s)
{
	return !s->srv->cfg->pop3_require_tls || conn_tls(s->c) ||
	       conn_peer_is_local(s->c);
}

/* The refusal before TLS (RFC 3206 [AUTH]); false if it was sent. */
static bool pop3_auth_check(struct pop3_session *s)
{
	if (pop3_auth_allowed(s))
		return true;
	pop3_error(s, "-ERR [AUTH] Plaintext authentication disallowed on "
		      "non-secure connections, use STLS.");
	return false;
}

static void pop3_user(struct pop3_session *s, char *arg)
{
	if (!pop3_auth_check(s))
		return;
	pop3_set_user(s, arg);
	pop3_reply(s, "+OK");
}

static void pop3_pass(struct pop3_session *s, char *arg)
{
	if (!pop3_auth_check(s))
		return;
	if (s->user == NULL) {
		pop3_error(s, "-ERR Command not valid in this state.");
		return;
	}
	pop3_login(s, arg);
}

/* AUTH PLAIN (RFC 4616): a malformed response fails like a bad password,
 * after the same delay. */
static void pop3_auth_plain(struct pop3_session *s, const char *b64)
{
	char user[STORE_ADDR_MAX + 1], pass[AUTH_PASS_MAX + 1];
	int r = sasl_plain(b64, user, sizeof user, pass, sizeof pass);

	if (r == -1) {
		pop3_error(s, "-ERR Invalid base64.");
		return;
	}
	pop3_set_user(s, r == 0 ? user : "");
	pop3_login(s, r == 0 ? pass : "");
	explicit_bzero(pass, sizeof pass);
}

static void pop3_auth(struct pop3_session *s, char *arg)
{
	char *ir;

	if (!pop3_auth_check(s))
		return;
	if (*arg == '\0') {
		pop3_reply(s, "+OK\r\nPLAIN\r\n.");
		return;
	}
	ir = arg + strcspn(arg, " ");
	if (strncasecmp(arg, "PLAIN", 5) != 0 || (ir - arg) != 5) {
		pop3_error(s, "-ERR Unsupported authentication mechanism.");
		return;
	}
	while (*ir == ' ')
		ir++;
	if (*ir == '\0') {
		s->auth_wait = true;
		pop3_reply(s, "+ ");
		return;
	}
	/* RFC 5034 4: "=" is an empty initial response. */
	pop3_auth_plain(s, strcmp(ir, "=") == 0 ? "" : ir);
}

/* The line after "+ ": a response, or "*" to cancel. */
static void pop3_auth_response(struct pop3_session *s, char *line)
{
	s->auth_wait = false;
	if (strcmp(line, "*") == 0) {
		pop3_error(s, "-ERR Authentication cancelled.");
		return;
	}
	pop3_auth_plain(s, line);
}

static void pop3_capa(struct pop3_session *s, char *arg)
{
	bool auth = pop3_auth_allowed(s);

	(void)arg;
	/* RFC 2595 4: STLS only where TLS can start; USER and SASL only where
	 * a password may be sent. */
	conn_printf(s->c,
		    "+OK Capability list follows\r\nTOP\r\nUIDL\r\n%s%s%s"
		    "RESP-CODES\r\nAUTH-RESP-CODE\r\n"
		    "PIPELINING\r\nEXPIRE NEVER\r\nLOGIN-DELAY %u\r\n"
		    "IMPLEMENTATION pillarbox\r\n.\r\n",
		    auth ? "USER\r\n" : "", auth ? "SASL PLAIN\r\n" : "",
		    s->state == P_AUTH && !conn_tls(s->c) ? "STLS\r\n" : "",
		    s->srv->cfg->login_delay);
}

/* STLS (RFC 2595 4): the reply in clear, then the handshake; what the
 * client sent after STLS is dropped by the connection layer (CVE-2011-0411)
 * and the session starts again once TLS is up (CONN_TLS_READY). */
static void pop3_stls(struct pop3_session *s, char *arg)
{
	(void)arg;
	if (conn_tls(s->c)) {
		pop3_error(s, "-ERR Command not permitted when TLS active.");
		return;
	}
	pop3_reply(s, "+OK Begin TLS negotiation.");
	conn_starttls(s->c);
}

/* --- TRANSACTION -------------------------------------------------------- */

/* Message number arg (1-based) -> message, or NULL after replying. With
 * rest, what follows the number is returned there (TOP's line count). */
static struct pop3_msg *pop3_msg_arg(struct pop3_session *s, const char *arg,
				     const char **rest)
{
	const char *end;
	unsigned long n;

	if (*arg == '\0') {
		pop3_error(s, "-ERR Missing argument.");
		return NULL;
	}
	if (pop3_parse_number(arg, &n, &end) < 0) {
		pop3_error(s, "-ERR Invalid message number.");
		return NULL;
	}
	if (n > s->nmsgs) {
		pop3_error(s, "-ERR No such message.");
		return NULL;
	}
	if (s->msgs[n - 1].deleted) {
		pop3_error(s, "-ERR Message is deleted.");
		return NULL;
	}
	if (rest != NULL)
		*rest = end;
	else if (*end != '\0') {
		pop3_error(s, "-ERR Too many arguments.");
		return NULL;
	}
	return &s->msgs[n - 1];
}

static void pop3_stat(struct pop3_session *s, char *arg)
{
	unsigned n = 0;
	uint64_t size = 0;

	(void)arg;
	for (unsigned i = 0; i < s->nmsgs; i++)
		if (!s->msgs[i].deleted)
			n++, size += s->msgs[i].size;
	conn_printf(s->c, "+OK %u %llu\r\n", n, (unsigned long long)size);
}

/* LIST and UIDL: one message, or all that are not deleted. */
static void pop3_listing(struct pop3_session *s, char *arg, bool uidl)
{
	struct pop3_msg *m;

	if (*arg != '\0') {
		if ((m = pop3_msg_arg(s, arg, NULL)) != NULL)
			conn_printf(
			    s->c, "+OK %u %llu\r\n",
			    (unsigned)(m - s->msgs) + 1,
			    (unsigned long long)(uidl ? m->uid : m->size));
		return;
	}
	if (uidl) {
		pop3_reply(s, "+OK");
	} else {
		unsigned n = 0;
		for (unsigned i = 0; i < s->nmsgs; i++)
			n += !s->msgs[i].deleted;
		conn_printf(s->c, "+OK %u messages\r\n", n);
	}
	for (unsigned i = 0; i < s->nmsgs; i++)
		if (!s->msgs[i].deleted)
			conn_printf(
			    s->c, "%u %llu\r\n", i + 1,
			    (unsigned long long)(uidl ? s->msgs[i].uid
						      : s->msgs[i].size));
	pop3_reply(s, ".");
}

static void pop3_list(struct pop3_session *s, char *arg)
{
	pop3_listing(s, arg, false);
}

static void pop3_uidl(struct pop3_session *s, char *arg)
{
	pop3_listing(s, arg, true);
}

/* A RETR/TOP reply goes out piece by piece (conn_stream): each piece
 * finds the message again in a read transaction of its own, copies at most
 * POP3_PIECE octets out of the map and ends the transaction. So a client
 * that stops reading holds nothing of the store (the map may grow, other
 * sessions commit), and its output is bounded by the connection layer. */

/* Queues data[0..n) byte-stuffed (RFC 1939 3: a line starting with "."
 * gets one more). s->send.bol says whether data starts a line. */
static void pop3_stuff(struct pop3_session *s, const char *data, size_t n)
{
	const char *p = data, *end = data + n, *run = data, *lf;

	/* Line by line with memchr (vectorised, unlike memmem): a line that
	 * starts with a dot ends the run before it and gets one more. */
	for (bool bol = s->send.bol; p < end; bol = lf != NULL) {
		if (bol && *p == '.') {
			conn_write(s->c, run, (size_t)(p - run));
			conn_write(s->c, ".", 1);
			run = p;
		}
		lf = memchr(p, '\n', (size_t)(end - p));
		p = lf != NULL ? lf + 1 : end;
	}
	conn_write(s->c, run, (size_t)(end - run));
	s->send.bol = n > 0 ? end[-1] == '\n' : s->send.bol;
}

/* Queues the next piece of the reply, from the entry's trace (only the
 * first piece has it: a trace is shorter than a piece) and the message's
 * bytes; true once the reply is complete. */
static bool pop3_piece(struct pop3_session *s, const char *trace,
		       const char *data)
{
	size_t n = s->send.end - s->send.off, k = 0;

	if (n > POP3_PIECE)
		n = POP3_PIECE;
	if (s->send.off < s->send.tlen) {
		assert(trace != NULL && s->send.off == 0);
		k = s->send.tlen;
		pop3_stuff(s, trace, k);
	}
	pop3_stuff(s, data + (s->send.off + k - s->send.tlen), n - k);
	s->send.off += n;
	if (s->send.off < s->send.end)
		return false;
	/* A message always ends in CRLF; a TOP cut does at a line end. */
	conn_puts(s->c, s->send.bol ? ".\r\n" : "\r\n.\r\n");
	return true;
}

/* The stream: finds the message again for every piece. */
static bool pop3_send_more(struct conn *c, void *arg)
{
	struct pop3_session *s = arg;
	struct store_txn *txn;
	const void *data;
	size_t len;
	bool done;
	int r;

	r = store_txn_begin(s->srv->st, false, &txn);
	if (r == 0)
		r = store_msg_get(txn, s->send.id, &data, &len);
	if (r == 0 && s->send.tlen + len < s->send.end)
		r = -EIO; /* not the message we began to send */
	if (r < 0) {
		/* Half a reply is out: the only honest end is to hang up. */
		store_txn_abort(txn);
		log_msg(LOG_ERROR, "pop3", "sid=%s event=retr-failed error=%s",
			conn_sid(c), strerror(-r));
		conn_close(c);
		return true;
	}
	done = pop3_piece(s, NULL, data);
	store_txn_abort(txn);
	return done;
}

/* RETR (lines < 0) or TOP (header and `lines` body lines). The first
 * piece goes now; a longer message continues as a stream. */
static void pop3_send(struct pop3_session *s, struct pop3_msg *m, long lines)
{
	struct store_txn *txn;
	struct store_mail e;
	const void *data;
	const char *p, *end;
	size_t len;
	int r;

	r = store_txn_begin(s->srv->st, false, &txn);
	if (r == 0)
		r = store_mailbox_get(txn, s->user, m->uid, &e);
	if (r == 0 && e.id != m->id)
		r = -ENOENT;
	if (r == 0)
		r = store_msg_get(txn, m->id, &data, &len);
	if (r < 0) {
		store_txn_abort(txn);
		pop3_reply(s, "-ERR [SYS/TEMP] Cannot read the message now.");
		return;
	}
	if (lines >= 0) {
		p = data, end = p + len;
		const char *body = memmem(p, len, "\r\n\r\n", 4);
		p = body ? body + 4 : end;
		for (; lines > 0 && p < end; lines--) {
			const char *lf = memchr(p, '\n', (size_t)(end - p));
			p = lf ? lf + 1 : end;
		}
		len = (size_t)(p - (const char *)data);
		pop3_reply(s, "+OK");
	} else {
		conn_printf(s->c, "+OK %zu octets\r\n", e.trace_len + len);
	}
	/* Offsets, not pointers: the map may move between pieces. */
	s->send = (struct pop3_send){.id = m->id,
				     .end = e.trace_len + len,
				     .tlen = e.trace_len,
				     .bol = true};
	if (!pop3_piece(s, e.trace, data))
		conn_stream(s->c, pop3_send_more, s);
	store_txn_abort(txn);
}

static void pop3_retr(struct pop3_session *s, char *arg)
{
	struct pop3_msg *m = pop3_msg_arg(s, arg, NULL);

	if (m != NULL) {
		metrics_inc(METRIC_RETRIEVED);
		pop3_send(s, m, -1);
	}
}

static void pop3_top(struct pop3_session *s, char *arg)
{
	const char *rest;
	char *end;
	struct pop3_msg *m = pop3_msg_arg(s, arg, &rest);
	long lines;

	if (m == NULL)
		return;
	while (*rest == ' ')
		rest++;
	if (*rest == '\0') {
		pop3_error(s, "-ERR Missing argument.");
		return;
	}
	lines = isdigit((unsigned char)*rest) ? strtol(rest, &end, 10) : -1;
	if (lines < 0 || *end != '\0') {
		pop3_error(s, "-ERR Invalid number of lines.");
		return;
	}
	pop3_send(s, m, lines);
}

static void pop3_dele(struct pop3_session *s, char *arg)
{
	struct pop3_msg *m = pop3_msg_arg(s, arg, NULL);

	if (m == NULL)
		return;
	m->deleted = true;
	pop3_reply(s, "+OK Marked to be deleted.");
}

static void pop3_rset(struct pop3_session *s, char *arg)
{
	(void)arg;
	for (unsigned i = 0; i < s->nmsgs; i++)
		s->msgs[i].deleted = false;
	pop3_reply(s, "+OK");
}

static void pop3_noop(struct pop3_session *s, char *arg)
{
	(void)arg;
	pop3_reply(s, "+OK");
}

/* --- UPDATE ------------------------------------------------------------- */

/* Commit thread: every marked message goes in this one transaction. */
static int pop3_update_run(struct store_txn *txn, void *arg)
{
	struct pop3_session *s = arg;
	int r = 0;

	for (unsigned i = 0; r == 0 && i < s->nmsgs; i++)
		if (s->msgs[i].deleted) {
			r = store_mailbox_del(txn, s->user, s->msgs[i].uid,
					      s->msgs[i].id);
			if (r == -ENOENT) /* gone already (user del) */
				r = 0;
		}
	return r;
}

static void pop3_update_done(void *arg, int rc)
{
	struct pop3_session *s = arg;

	log_msg(rc == 0 ? LOG_INFO : LOG_ERROR, "pop3",
		"sid=%s event=update user=%s result=%s", conn_sid(s->c),
		log_str(s->user), rc == 0 ? "ok" : strerror(-rc));
	pop3_reply(s, rc == 0 ? "+OK Logging out."
			      : "-ERR [SYS/TEMP] Deleting messages failed.");
	conn_close(s->c);
	conn_resume(s->c);
}

static void pop3_quit(struct pop3_session *s, char *arg)
{
	bool any = false;

	(void)arg;
	for (unsigned i = 0; i < s->nmsgs; i++)
		any |= s->msgs[i].deleted;
	if (s->state != P_TRANS || !any) {
		pop3_reply(s, "+OK Logging out.");
		conn_close(s->c);
		return;
	}
	s->job = (struct store_job){
	    .run = pop3_update_run, .done = pop3_update_done, .arg = s};
	conn_pause(s->c);
	store_commit_submit(s->srv->st, &s->job);
}

/* --- dispatch ----------------------------------------------------------- */

static void pop3_command(struct pop3_session *s, char *line, size_t len)
{
	size_t i = 0;
	char *arg;

	if (strlen(line) != len) {
		pop3_error(s, "-ERR NUL character in command.");
		return;
	}
	if (s->auth_wait) {
		pop3_auth_response(s, line);
		return;
	}
	/* Long lines are for AUTH PLAIN's initial response only. */
	if (len + 2 > POP3_CMD_MAX && strncasecmp(line, "AUTH ", 5) != 0) {
		pop3_error(s, "-ERR Line too long.");
		return;
	}
	switch (cmd_parse(pop3_specs, sizeof pop3_specs / sizeof *pop3_specs,
			  s->state, line, &i, &arg)) {
	case CMD_UNKNOWN:
		pop3_error(s, "-ERR Unknown command.");
		break;
	case CMD_BAD_STATE:
		pop3_error(s, "-ERR Command not valid in this state.");
		break;
	case CMD_NO_ARG:
		pop3_error(s, "-ERR Missing argument.");
		break;
	case CMD_EXTRA_ARG:
		pop3_error(s, "-ERR Too many arguments.");
		break;
	case CMD_OK:
		pop3_proceed[i](s, arg);
		break;
	}
}

static void pop3_input(struct pop3_session *s)
{
	char *line;
	size_t len;

	for (;;) {
		switch (conn_getline(s->c, POP3_AUTH_MAX, &line, &len)) {
		case CONN_AGAIN:
			return;
		case CONN_LINE_TOOLONG:
			s->auth_wait = false;
			pop3_error(s, "-ERR Line too long.");
			break;
		case CONN_LINE:
		case CONN_LINE_BARELF: /* RFC 1939 says CRLF; be lenient */
			pop3_command(s, line, len);
			break;
		}
	}
}

/* --- the protocol ------------------------------------------------------- */

static void *pop3_open(struct conn *c, void *ctx)
{
	struct pop3_session *s = xcalloc(1, sizeof *s);

	s->c = c;
	s->srv = ctx;
	s->state = P_AUTH;
	conn_puts(c, "+OK pillarbox ready.\r\n");
	return s;
}

static void pop3_event(struct conn *c, void *session, enum conn_event ev)
{
	struct pop3_session *s = session;

	switch (ev) {
	case CONN_DATAIN:
		pop3_input(s);
		break;
	case CONN_TIMEOUT:
		pop3_reply(s, "-ERR Disconnected for inactivity.");
		conn_close(c);
		break;
	case CONN_LIFETIME:
		pop3_reply(s, "-ERR Session time limit exceeded.");
		conn_close(c);
		break;
	case CONN_TLS_READY:
		/* Nothing learnt in clear carries over (RFC 2595 4). */
		free(s->user);
		s->user = NULL;
		s->auth_wait = false;
		break;
	case CONN_OPEN: /* outbound only */
		break;
	case CONN_SHUTDOWN:
		pop3_reply(s, "-ERR Server shutting down.");
		break;
	}
}

static void pop3_free(void *session)
{
	struct pop3_session *s = session;

	/* A drop without QUIT deletes nothing: RFC 1939 6. */
	pop3_unlock(s);
	timer_free(s->delay);
	free(s->user);
	free(s->msgs);
	free(s);
}

const struct conn_proto pop3_proto = {"pop3", pop3_open, pop3_event, pop3_free};

void pop3_server_init(struct pop3_server *srv, const struct config *cfg,
		      struct store *st)
{
	memset(srv, 0, sizeof *srv);
	srv->cfg = cfg;
	srv->st = st;
	snprintf(srv->busy_reply, sizeof srv->busy_reply,
		 "-ERR [SYS/TEMP] Too many connections from your address.\r\n");
	snprintf(srv->full_reply, sizeof srv->full_reply,
		 "-ERR [SYS/TEMP] Too many connections, try again later.\r\n");
}
