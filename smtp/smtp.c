/*
 * smtp.c - SMTP sessions: the command table, the mail transaction, the
 * relay decision for each recipient, and the hand-off of a finished
 * message to the commit thread. see smtp.h
 *
 * A session lives as long as its connection; a transaction (struct smtp_tx)
 * from MAIL to the end of the message or RSET. Each has one free function.
 * The structs are in session.h, shared with auth.c (SMTP AUTH) and
 * sender.c (the sender check).
 */
#include "smtp/session.h"

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "base/metrics.h"
#include "base/log.h"
#include "core/cmd.h"
#include "smtp/addr.h"
#include "smtp/deliver.h"
#include "smtp/parse.h"

#define SMTP_DATE_MAX	     64 /* "Mon, 23 Nov 2026 13:49:53 +0000" and room */
#define SMTP_TLS_COMMENT_MAX 128 /* "(using TLSv1.2 <cipher suite>)" */

/* LMDB keeps a value's size in 32 bits (MAXDATASIZE in mdb.c): a stored
 * message, trace headers included, is under 4 GiB whatever
 * max_message_size says, or every retry of its commit would fail. */
#define SMTP_STORE_MAX 0xffffffffull
_Static_assert(SIZE_MAX >= SMTP_STORE_MAX, "a stored message's size fits");
/* Received: (checked when made), and the CRLF a BDAT body may need at its
 * end. */
#define SMTP_TRACE_MAX 2048
/* A mailbox at or over its quota: Dovecot's words (its default
 * quota_exceeded_message), RFC 3463's X.2.2 "mailbox full". Permanent:
 * see DESIGN.md. At RCPT it comes with 550 (RFC 5321 4.5.3.1.10 has
 * clients read a 552 there as 452), after the data with 552. */
#define SMTP_QUOTA_TEXT "Quota exceeded (mailbox for user is full)"

/* The command table: adding a verb is adding a row. BDAT is allowed in any
 * state here because smtp_bdat checks the sequence itself: a refused
 * chunk must still be read (RFC 3030 2). */
#define SMTP_COMMANDS(X)                                                       \
	X(EHLO, ST_NOT_BDAT, ARG_REQ, smtp_ehlo)                               \
	X(HELO, ST_NOT_BDAT, ARG_REQ, smtp_helo)                               \
	X(MAIL, ST_READY, ARG_REQ, smtp_mail)                                  \
	X(RCPT, ST_MAIL | ST_RCPT, ARG_REQ, smtp_rcpt)                         \
	X(DATA, ST_RCPT, ARG_NONE, smtp_data)                                  \
	X(BDAT, ST_ANY, ARG_REQ, smtp_bdat)                                    \
	X(RSET, ST_ANY, ARG_NONE, smtp_rset)                                   \
	X(NOOP, ST_ANY, ARG_ANY, smtp_noop)                                    \
	X(QUIT, ST_ANY, ARG_NONE, smtp_quit)                                   \
	X(VRFY, ST_NOT_BDAT, ARG_REQ, smtp_vrfy)                               \
	X(HELP, ST_NOT_BDAT, ARG_ANY, smtp_help)                               \
	X(AUTH, ST_READY, ARG_REQ, smtp_auth)                                  \
	X(STARTTLS, ST_ANY, ARG_NONE, smtp_starttls)

#define X(verb, states, arity, fn)                                             \
	static void fn(struct smtp_session *s, char *arg);
SMTP_COMMANDS(X)
#undef X

static const struct cmd_spec smtp_specs[] = {
#define X(verb, states, arity, fn) {#verb, states, CMD_##arity},
    SMTP_COMMANDS(X)
#undef X
};

static void (*const smtp_proceed[])(struct smtp_session *s, char *arg) = {
#define X(verb, states, arity, fn) fn,
    SMTP_COMMANDS(X)
#undef X
};

static void smtp_body_written(void *arg);

/* --- replies ------------------------------------------------------------ */

void smtp_reply(struct smtp_session *s, const char *line)
{
	conn_puts(s->c, line);
	conn_write(s->c, "\r\n", 2);
}

/* The errors that end a session, as Postfix counts them for its
 * smtpd_hard_error_limit: those made without delivering mail, so the count
 * starts again when a message is accepted. Recipients refused in a
 * transaction that has a live recipient are set aside until it ends: a list
 * message with stale addresses must reach the live ones (accepted, they are
 * forgotten; else they count then). At most max_recipients are set aside,
 * so one valid address cannot buy endless guesses at others. */
static unsigned smtp_errors(const struct smtp_session *s)
{
	const struct smtp_tx *tx = s->tx;

	if (tx == NULL ||
	    (tx->nrcpt > 0 && tx->rejected <= s->srv->cfg->max_recipients))
		return s->errors;
	return s->errors + tx->rejected;
}

/* Hangs up on a client past the error limit: a prober (harvesting
 * addresses, testing for an open relay) or a broken client. */
static void smtp_check_errors(struct smtp_session *s)
{
	if (smtp_errors(s) < SMTP_ERRORS_MAX || conn_closing(s->c))
		return;
	conn_printf(s->c, "421 4.7.0 %s Error: too many errors\r\n",
		    s->srv->cfg->hostname);
	log_msg(LOG_WARN, s->srv->name, "sid=%s event=too-many-errors ip=%s",
		conn_sid(s->c), conn_peer(s->c));
	conn_close(s->c);
}

/* A refusal caused by the client: counted, and too many end the session. */
void smtp_error(struct smtp_session *s, const char *line)
{
	smtp_reply(s, line);
	s->errors++;
	smtp_check_errors(s);
}

/* The client's HELO name for a log line (it chose it: encoded). */
const char *smtp_log_helo(const struct smtp_session *s)
{
	return s->helo != NULL ? log_str(s->helo) : "-";
}

/* --- transactions ------------------------------------------------------- */

void smtp_list_add(struct smtp_list *l, const char *addr)
{
	for (unsigned i = 0; i < l->n; i++)
		if (strcmp(l->v[i], addr) == 0)
			return;
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 4;
		l->v = xrealloc(l->v, l->cap * sizeof *l->v);
	}
	l->v[l->n++] = xstrdup(addr);
}

void smtp_list_cut(struct smtp_list *l, unsigned n)
{
	while (l->n > n)
		free(l->v[--l->n]);
}

static void smtp_tx_free(struct smtp_tx *tx)
{
	if (tx == NULL)
		return;
	smtp_list_cut(&tx->users, 0);
	free(tx->users.v);
	smtp_list_cut(&tx->remote, 0);
	free(tx->remote.v);
	free(tx->as_user);
	free(tx->over);
	free(tx->head.p);
	free(tx->header);
	free(tx->trace);
	msgbuf_free(&tx->body);
	free(tx);
}

/* Ends the current transaction, whatever its outcome; the recipients it
 * refused count as errors from now on (see smtp_errors). */
static void smtp_tx_end(struct smtp_session *s)
{
	if (s->tx != NULL)
		s->errors += s->tx->rejected;
	smtp_tx_free(s->tx);
	s->tx = NULL;
	s->mode = MODE_CMD;
	if (s->state != ST_FRESH)
		s->state = ST_READY;
}

/* The 503 for a command given out of order, saying what is missing. */
static const char *smtp_sequence_reply(struct smtp_session *s, const char *verb)
{
	if (s->state == ST_FRESH)
		return "503 5.5.1 Error: send HELO/EHLO first";
	if (s->state == ST_BDAT)
		return "503 5.5.1 Error: BDAT in progress";
	if (strcmp(verb, "MAIL") == 0)
		return "503 5.5.1 Error: nested MAIL command";
	if (strcmp(verb, "AUTH") == 0) /* RFC 4954 4 */
		return "503 5.5.1 Error: AUTH not allowed during a mail "
		       "transaction";
	if (s->state == ST_READY)
		return "503 5.5.1 Error: need MAIL command";
	return "503 5.5.1 Error: need RCPT command";
}

/* --- EHLO, HELO, RSET, NOOP, QUIT, VRFY, HELP --------------------------- */

/* Takes the client's name; it goes into Received:, so parse.c lets in
 * only printable ASCII. */
static bool smtp_set_helo(struct smtp_session *s, const char *arg)
{
	size_t n = smtp_parse_helo(arg);

	if (n == 0)
		return false;
	free(s->helo);
	s->helo = xmalloc(n + 1);
	memcpy(s->helo, arg, n);
	s->helo[n] = '\0';
	return true;
}

static void smtp_ehlo(struct smtp_session *s, char *arg)
{
	if (!smtp_set_helo(s, arg)) {
		smtp_error(s, "501 5.5.4 Syntax error: invalid EHLO name");
		return;
	}
	/* RFC 5321 4.1.4: EHLO resets any transaction. */
	s->state = ST_READY;
	smtp_tx_end(s);
	s->esmtp = true;
	conn_printf(s->c,
		    "250-%s\r\n250-PIPELINING\r\n250-SIZE %llu\r\n"
		    "250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n"
		    "250-SMTPUTF8\r\n%s%s250 CHUNKING\r\n",
		    s->srv->cfg->hostname, (unsigned long long)s->srv->max_size,
		    conn_tls(s->c) ? "" : "250-STARTTLS\r\n",
		    smtp_auth_allowed(s) ? "250-AUTH PLAIN LOGIN\r\n" : "");
	smtp_check_errors(s);
}

/* STARTTLS (RFC 3207): the 220 in clear, then the handshake. What the
 * client pipelined behind the command is dropped by the connection layer
 * unread (CVE-2011-0411), and the session starts over once TLS is up
 * (CONN_TLS_READY): the client must EHLO again. */
static void smtp_starttls(struct smtp_session *s, char *arg)
{
	(void)arg;
	if (conn_tls(s->c))
		smtp_error(s, "503 5.5.1 Error: TLS already active");
	else if (s->state == ST_FRESH)
		smtp_error(s, "503 5.5.1 Error: send HELO/EHLO first");
	else if (s->state != ST_READY)
		smtp_error(s, "503 5.5.1 Error: STARTTLS inside a mail "
			      "transaction");
	else {
		smtp_reply(s, "220 2.0.0 Ready to start TLS");
		conn_starttls(s->c);
	}
}

/* RFC 3207 4.2: after the handshake nothing learnt in clear is kept. */
static void smtp_tls_ready(struct smtp_session *s)
{
	smtp_tx_end(s);
	s->state = ST_FRESH;
	s->esmtp = false;
	free(s->helo);
	s->helo = NULL;
	free(s->auth_user);
	s->auth_user = NULL;
}

static void smtp_helo(struct smtp_session *s, char *arg)
{
	if (!smtp_set_helo(s, arg)) {
		smtp_error(s, "501 5.5.4 Syntax error: invalid HELO name");
		return;
	}
	s->state = ST_READY;
	smtp_tx_end(s);
	s->esmtp = false;
	conn_printf(s->c, "250 %s\r\n", s->srv->cfg->hostname);
	smtp_check_errors(s);
}

static void smtp_rset(struct smtp_session *s, char *arg)
{
	(void)arg;
	smtp_tx_end(s);
	smtp_reply(s, "250 2.0.0 Ok");
	smtp_check_errors(s);
}

static void smtp_noop(struct smtp_session *s, char *arg)
{
	(void)arg;
	smtp_reply(s, "250 2.0.0 Ok");
}

static void smtp_quit(struct smtp_session *s, char *arg)
{
	(void)arg;
	smtp_reply(s, "221 2.0.0 Bye");
	conn_close(s->c);
}

static void smtp_vrfy(struct smtp_session *s, char *arg)
{
	/* RFC 5321 3.5.3: 252 without telling whether the user exists, so
	 * VRFY cannot be used to harvest addresses. */
	(void)arg;
	smtp_reply(s, "252 2.5.0 Cannot VRFY user, but will accept message "
		      "and attempt delivery");
}

static void smtp_help(struct smtp_session *s, char *arg)
{
	(void)arg;
	smtp_reply(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET "
		      "NOOP QUIT VRFY HELP AUTH");
}

static void smtp_auth(struct smtp_session *s, char *arg)
{
	smtp_auth_command(s, arg); /* auth.c */
}

/* --- MAIL, RCPT ---------------------------------------------------------- */

static void smtp_mail(struct smtp_session *s, char *arg)
{
	struct smtp_mail_args m;
	const char *err;

	if (s->srv->submission && s->auth_user == NULL) {
		/* RFC 6409 4.3: submission is for users who log in. */
		smtp_error(s, "530 5.7.0 Authentication required");
		return;
	}
	err = smtp_parse_mail(arg, s->esmtp, &m);
	if (err == NULL && m.size > s->srv->max_size)
		/* RFC 1870: refuse at once what SIZE says is too big. */
		err = "552 5.3.4 Message size exceeds fixed limit";
	if (err != NULL) {
		smtp_error(s, err);
		return;
	}
	s->tx = xcalloc(1, sizeof *s->tx);
	msgbuf_init(&s->tx->body, smtp_body_written, s);
	snprintf(s->tx->id, sizeof s->tx->id, "%s%04x", conn_sid(s->c),
		 s->ntx++ & 0xffff);
	if (addr_format_sent(&m.from, s->tx->from, sizeof s->tx->from) < 0) {
		/* Re-quoted, it no longer fits a path (RFC 5321 4.5.3.1.3). */
		smtp_tx_end(s);
		smtp_error(s, "501 5.1.7 Bad sender address syntax");
		return;
	}
	s->tx->utf8 = m.utf8;
	if (s->auth_user != NULL) {
		/* A logged-in user sends as themselves (sender.c). */
		char reply[SMTP_REPLY_MAX];
		struct store_txn *txn = NULL;
		int r = store_txn_begin(s->srv->st, false, &txn);

		if (r == 0)
			r = smtp_sender_check(s, txn, s->auth_user, reply,
					      sizeof reply);
		else
			snprintf(reply, sizeof reply,
				 "451 4.3.0 Temporary lookup failure");
		store_txn_abort(txn);
		if (r < 0) {
			smtp_tx_end(s);
			if (r == -EPERM)
				smtp_error(s, reply);
			else
				smtp_reply(s, reply);
			return;
		}
	}
	s->state = ST_MAIL;
	smtp_reply(s, "250 2.1.0 Ok");
}

static void smtp_rcpt(struct smtp_session *s, char *arg)
{
	char rcpt[STORE_ADDR_MAX + 1], pm[ADDR_DOMAIN_MAX + 1];
	char line[SMTP_REPLY_MAX];
	const char *err, *why = NULL;
	struct addr a;

	if (s->tx->nrcpt >= s->srv->cfg->max_recipients) {
		/* Not an error: the client sends the rest in a later
		 * transaction (RFC 5321 4.5.3.1.10). */
		smtp_reply(s, "452 4.5.3 Too many recipients");
		return;
	}
	/* "<postmaster>" (and our own address literal) means ours: the first
	 * configured domain's. */
	snprintf(pm, sizeof pm, "%.*s",
		 (int)strcspn(s->srv->cfg->domains, ", "),
		 s->srv->cfg->domains);
	err = smtp_parse_rcpt(arg, s->tx->utf8, pm, &a);
	if (err != NULL) {
		smtp_error(s, err);
		return;
	}
	/* As given (the local part's case is the remote host's business),
	 * and so queued, logged and named in replies. */
	if (addr_format_sent(&a, rcpt, sizeof rcpt) < 0) {
		smtp_error(s, "501 5.1.3 Bad recipient address syntax");
		return;
	}
	switch (smtp_rcpt_decide(s, &a, rcpt, pm, line)) {
	case RCPT_OK:
		if (s->tx->nrcpt++ == 0)
			strcpy(s->tx->first_rcpt, rcpt);
		s->state = ST_RCPT;
		smtp_reply(s, "250 2.1.5 Ok");
		return;
	case RCPT_TEMP:
		/* -EAGAIN (the map being resized) or -EIO: truly temporary,
		 * the next attempt sees a working store. */
		smtp_reply(s, "451 4.3.0 Temporary lookup failure");
		return;
	case RCPT_RELAY_DENIED:
		snprintf(line, sizeof line,
			 "554 5.7.1 <%s>: Relay access denied", rcpt);
		why = "relay";
		metrics_inc(METRIC_REJ_RELAY);
		break;
	case RCPT_UNKNOWN:
		snprintf(line, sizeof line,
			 "550 5.1.1 <%s>: Recipient address rejected: User "
			 "unknown",
			 rcpt);
		why = "unknown-user";
		metrics_inc(METRIC_REJ_UNKNOWN_USER);
		break;
	case RCPT_FULL:
		snprintf(line, sizeof line, "550 5.2.2 <%s>: " SMTP_QUOTA_TEXT,
			 rcpt);
		why = "quota";
		metrics_inc(METRIC_REJ_QUOTA);
		break;
	case RCPT_SENDER:
		why = NULL; /* sender.c logged it */
		break;
	}
	/* All are errors (see smtp_errors): harvesting addresses or probing
	 * for a relay ends at the limit (a full mailbox, too, tells that the
	 * address exists). */
	if (why != NULL)
		log_msg(LOG_INFO, s->srv->name,
			"sid=%s event=reject ip=%s helo=%s from=<%s> to=<%s> "
			"reason=%s",
			conn_sid(s->c), conn_peer(s->c), smtp_log_helo(s),
			log_str(s->tx->from), log_str(rcpt), why);
	smtp_reply(s, line);
	s->tx->rejected++;
	smtp_check_errors(s);
}

/* --- DATA, BDAT, and the commit ----------------------------------------- */

/* Starts reading a body; its header section is kept when the sender
 * check needs its From: field at the end. */
static void smtp_body_init(struct smtp_session *s, bool dots)
{
	struct smtp_tx *tx = s->tx;

	data_init(&tx->rd, dots, s->srv->max_size, &tx->body);
	if (tx->as_user != NULL &&
	    s->srv->cfg->sender_check == CONFIG_SENDER_STRICT)
		tx->rd.head = &tx->head;
}

static void smtp_data(struct smtp_session *s, char *arg)
{
	(void)arg;
	smtp_body_init(s, true);
	s->mode = MODE_DATA;
	smtp_reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

static void smtp_bdat(struct smtp_session *s, char *arg)
{
	const char *err;
	uint64_t n;
	bool last;

	if ((err = smtp_parse_bdat(arg, &n, &last)) != NULL) {
		/* Without a size we cannot know where the chunk ends. */
		smtp_error(s, err);
		return;
	}
	if (!(s->state & (ST_RCPT | ST_BDAT))) {
		/* RFC 3030 2: a refused chunk is still read, then dropped. */
		if (s->tx == NULL) {
			s->tx = xcalloc(1, sizeof *s->tx);
			msgbuf_init(&s->tx->body, smtp_body_written, s);
		}
		s->tx->bdat_discard = smtp_sequence_reply(s, "BDAT");
	} else if (s->state == ST_RCPT) {
		smtp_body_init(s, false);
	}
	s->tx->bdat_left = n;
	s->tx->bdat_last = last;
	s->mode = MODE_BDAT;
}

/* Writes user as the text of a comment (RFC 5322 3.2.2: "(", ")" and
 * "\\" escaped) into buf, which has room for twice user and a NUL. */
static void smtp_comment_text(const char *user, char *buf)
{
	for (; *user; user++) {
		if (strchr("()\\", *user))
			*buf++ = '\\';
		*buf++ = *user;
	}
	*buf = '\0';
}

/* Makes the trace added at delivery (RFC 5321 4.4): "Received:", the
 * start of the stored body that every copy shares, and "Return-Path:",
 * which each mailbox entry keeps for itself (a relayed copy must not
 * carry it: the final delivery adds it). The "for" clause names the
 * recipient only when there is one, so one stored copy serves every
 * mailbox and queue entry. A session logged in says so: "with ESMTPA"
 * (RFC 3848) and the user, in a comment. */
static void smtp_tx_header(struct smtp_session *s)
{
	struct smtp_tx *tx = s->tx;
	char date[SMTP_DATE_MAX], forc[sizeof "\r\n\tfor <>; " + STORE_ADDR_MAX];
	char authc[sizeof "\r\n\t(authenticated as )" + 2 * STORE_ADDR_MAX];
	char tlsc[SMTP_TLS_COMMENT_MAX] = "";
	const char *tls = conn_tls_info(s->c);
	time_t now = time(NULL);
	struct tm tm;
	int n;

	localtime_r(&now, &tm);
	strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", &tm);
	/* The date on a line of its own or after the "for": the "by" line
	 * stays within RFC 5322's 78 octets (2.1.1) for any hostname a
	 * person types. */
	if (tx->nrcpt == 1)
		snprintf(forc, sizeof forc, "\r\n\tfor <%s>; ", tx->first_rcpt);
	else
		strcpy(forc, ";\r\n\t");
	authc[0] = '\0';
	if (s->auth_user != NULL) {
		char user[2 * STORE_ADDR_MAX + 1];
		smtp_comment_text(s->auth_user, user);
		snprintf(authc, sizeof authc, "\r\n\t(authenticated as %s)",
			 user);
	}
	if (tls != NULL)
		snprintf(tlsc, sizeof tlsc, "\r\n\t(using %s)", tls);
	/* RFC 3848: "S" for TLS, "A" for a logged-in client. */
	n = asprintf(&tx->header,
		     "Received: from %s ([%s%s])%s%s\r\n"
		     "\tby %s (pillarbox) with %s%s%s id %s%s%s\r\n",
		     s->helo,
		     /* RFC 5321 4.1.3: an IPv6 literal is tagged */
		     strchr(conn_peer(s->c), ':') ? "IPv6:" : "",
		     conn_peer(s->c), tlsc, authc, s->srv->cfg->hostname,
		     tx->utf8	? "UTF8SMTP"
		     : s->esmtp ? "ESMTP"
				: "SMTP",
		     tls != NULL ? "S" : "", s->auth_user != NULL ? "A" : "",
		     tx->id, forc, date);
	if (n < 0)
		fatal("event=oom");
	if ((size_t)n > SMTP_TRACE_MAX - 2)
		fatal("event=trace-too-long len=%d", n);
	tx->header_len = (size_t)n;
	if (asprintf(&tx->trace, "Return-Path: <%s>\r\n", tx->from) < 0)
		fatal("event=oom");
}

/* Commit thread: the mailboxes the message would take past their quota
 * (SMTP can answer for them one by one only at RCPT) are told to the
 * sender in this commit, a DSN (RFC 3464, status 5.2.2) that deliver.c
 * puts into a local sender's mailbox or queues; never to <>. */
static int smtp_quota_dsn(struct store_txn *txn, struct smtp_session *s,
			  uint64_t id)
{
	struct smtp_tx *tx = s->tx;
	struct dsn_rcpt *fails = xcalloc(tx->nover, sizeof *fails);
	size_t n = 0;
	int r;

	for (unsigned i = 0; i < tx->users.n; i++)
		if (tx->over[i])
			fails[n++] = (struct dsn_rcpt){
			    tx->users.v[i], NULL, "552 5.2.2 " SMTP_QUOTA_TEXT};
	r = deliver_bounce(txn, s->srv->cfg, id, tx->from, time(NULL), fails,
			   n);
	free(fails);
	tx->dsn_queued = r > 0;
	return r < 0 ? r : 0;
}

/* Commit thread: the message once; then a reference in every mailbox it
 * fits in, each with its Return-Path, and in a queue entry for every
 * recipient relayed, due at once: all in one commit, so one 250 answers
 * for all. Nothing at all when no mailbox takes it and nothing is relayed
 * (-EDQUOT: the 552). Counted afresh on each run: run may run again. */
static int smtp_store_run(struct store_txn *txn, void *arg)
{
	struct smtp_session *s = arg; /* paused: the loop leaves it alone */
	struct smtp_tx *tx = s->tx;
	uint64_t id, now = (uint64_t)time(NULL);
	uint64_t size = strlen(tx->trace) + tx->header_len + tx->body.len;
	struct store_user u;
	void *dst;
	int r;

	tx->nover = 0;
	tx->dsn_queued = false;
	for (unsigned i = 0; i < tx->users.n; i++) {
		if ((r = store_user_get(txn, tx->users.v[i], &u)) < 0)
			return r; /* deleted meanwhile: 451, then 550 */
		tx->over[i] = !store_user_fits(&u, size);
		tx->nover += tx->over[i];
	}
	if (tx->nover == tx->users.n && tx->remote.n == 0)
		return -EDQUOT;
	r = store_msg_put(txn, tx->header_len + tx->body.len, &id, &dst);
	if (r < 0)
		return r;
	memcpy(dst, tx->header, tx->header_len);
	r = msgbuf_copy(&tx->body, (char *)dst + tx->header_len);
	for (unsigned i = 0; r == 0 && i < tx->users.n; i++)
		if (!tx->over[i])
			r = store_mailbox_add_trace(txn, tx->users.v[i], id,
						    tx->trace, NULL);
	for (unsigned i = 0; r == 0 && i < tx->remote.n; i++)
		r = store_queue_add(txn, id, tx->remote.v[i], tx->from, now);
	if (r == 0 && tx->nover > 0)
		r = smtp_quota_dsn(txn, s, id);
	tx->stored_id = id;
	return r;
}

/* Loop thread: the commit is on disk (or failed); now answer. */
static void smtp_store_done(void *arg, int rc)
{
	struct smtp_session *s = arg;
	struct smtp_tx *tx = s->tx;
	const char *ename = rc == 0 ? "" : strerrorname_np(-rc);

	if (rc == 0) {
		conn_printf(s->c, "250 2.0.0 Ok: stored as %s\r\n", tx->id);
		s->srv->accepted++;
		if (tx->remote.n > 0)
			deliver_queued(tx->stored_id); /* on its way */
		if (tx->dsn_queued) /* a quota DSN for a remote sender */
			deliver_wake();
		metrics_inc(METRIC_ACCEPTED);
	} else if (rc == -EDQUOT) {
		/* Permanent, as at RCPT (DESIGN.md); after the data 552 is
		 * RFC 5321's own code for it. */
		if (tx->users.n == 1)
			conn_printf(s->c, "552 5.2.2 <%s>: %s\r\n",
				    tx->users.v[0], SMTP_QUOTA_TEXT);
		else
			smtp_reply(s, "552 5.2.2 Quota exceeded (mailbox for "
				      "every recipient is full)");
		s->srv->refused++;
	} else {
		/* Both are temporary: a full store may have room later (RFC
		 * 3463 4.3.1), and a user deleted meanwhile gets its 550 at
		 * the RCPT of the next attempt. */
		smtp_reply(s, rc == -ENOSPC
				  ? "452 4.3.1 Insufficient system storage"
				  : "451 4.3.0 Local error in processing");
		s->srv->refused++;
		metrics_inc(METRIC_REJ_STORAGE);
	}
	for (unsigned i = 0; (rc == 0 || rc == -EDQUOT) && i < tx->users.n;
	     i++) {
		if (!tx->over[i])
			continue;
		log_msg(LOG_INFO, s->srv->name,
			"sid=%s event=reject ip=%s helo=%s from=<%s> to=<%s> "
			"reason=quota id=%s",
			conn_sid(s->c), conn_peer(s->c), smtp_log_helo(s),
			log_str(tx->from), log_str(tx->users.v[i]), tx->id);
		metrics_inc(METRIC_REJ_QUOTA);
	}
	if (rc != -EDQUOT)
		log_msg(rc == 0 ? LOG_INFO : LOG_ERROR, s->srv->name,
			"sid=%s event=%s id=%s helo=%s from=<%s> rcpts=%u "
			"mailboxes=%u queued=%u size=%llu msg=%016llx "
			"user=%s%s%s",
			conn_sid(s->c), rc == 0 ? "stored" : "store-failed",
			tx->id, smtp_log_helo(s), log_str(tx->from), tx->nrcpt,
			rc == 0 ? tx->users.n - tx->nover : tx->users.n,
			tx->remote.n,
			(unsigned long long)(tx->header_len + tx->body.len),
			(unsigned long long)(rc == 0 ? tx->stored_id : 0),
			s->auth_user != NULL ? log_str(s->auth_user) : "-",
			rc == 0 ? "" : " error=",
			ename != NULL ? ename : "unknown");
	smtp_tx_end(s);
	if (rc == 0)
		s->errors = 0; /* mail delivered: a well-behaved client */
	else
		smtp_check_errors(s);
	conn_resume(s->c);
}

/* The message is complete and its body wholly in memory or in the spill
 * file: refuse it, or hand it to the commit thread. paused: input is held
 * already (we waited for the file), and must be resumed on a refusal. */
static void smtp_message_finish(struct smtp_session *s, bool paused)
{
	struct smtp_tx *tx = s->tx;
	unsigned err = tx->rd.errors;
	int io = msgbuf_error(&tx->body);
	const char *reply = NULL;
	bool ours = false; /* a local failure, not the client's error */
	char from_reply[SMTP_REPLY_MAX];

	if (tx->bdat_discard)
		reply = tx->bdat_discard;
	else if (err & DATA_ERR_SIZE)
		reply = "552 5.3.4 Message size exceeds fixed limit";
	else if (err & DATA_ERR_LINE)
		reply = "500 5.5.2 Line too long in message";
	else if (err & DATA_ERR_BARE)
		reply = "500 5.5.2 Bare CR or LF in message";
	else if (err & DATA_ERR_NUL)
		reply = "500 5.5.2 NUL character in message";
	else if (io == -ENOSPC) /* the disk is full: temporary, storage */
		reply = "452 4.3.1 Insufficient system storage", ours = true;
	else if (io < 0 || (err & DATA_ERR_IO))
		reply = "451 4.3.0 Local error in processing", ours = true;
	else if ((io = smtp_sender_check_header(s, from_reply,
						sizeof from_reply)) < 0)
		reply = from_reply, ours = io != -EPERM;
	if (reply != NULL) {
		log_msg(LOG_INFO, s->srv->name,
			"sid=%s event=reject ip=%s helo=%s from=<%s> reply=%s",
			conn_sid(s->c), conn_peer(s->c), smtp_log_helo(s),
			log_str(tx->from), log_str(reply));
		metrics_inc(ours ? METRIC_REJ_STORAGE : METRIC_REJ_CONTENT);
		smtp_tx_end(s);
		if (ours) {
			smtp_reply(s, reply);
			smtp_check_errors(s);
		} else {
			smtp_error(s, reply);
		}
		if (paused)
			conn_resume(s->c);
		return;
	}
	smtp_tx_header(s);
	tx->over = xcalloc(tx->users.n + 1, sizeof *tx->over);
	tx->job.run = smtp_store_run;
	tx->job.done = smtp_store_done;
	tx->job.arg = s;
	/* A 250 only once the commit holding the message is synced. */
	if (!paused)
		conn_pause(s->c);
	store_commit_submit(s->srv->st, &tx->job);
}

/* The whole message is in: wait for its spill file, if any, to have it
 * all, then finish. */
static void smtp_message_end(struct smtp_session *s)
{
	struct smtp_tx *tx = s->tx;

	s->mode = MODE_CMD;
	if (!tx->rd.dots && tx->rd.st == DATA_CR)
		tx->rd.errors |= DATA_ERR_BARE; /* a chunk ended in a lone CR */
	/* BDAT content need not end in CRLF; a stored message always does, so
	 * POP3 sizes and the final "." come out right. A failure shows in
	 * msgbuf_error. */
	if (!tx->bdat_discard && tx->rd.errors == 0 && !tx->rd.dots &&
	    tx->rd.st != DATA_BOL)
		msgbuf_append(&tx->body, "\r\n", 2);
	msgbuf_end(&tx->body);
	if (msgbuf_busy(&tx->body)) {
		/* The commit thread reads the file: it must be complete. */
		if (s->wait == WAIT_NONE)
			conn_pause(s->c);
		s->wait = WAIT_FLUSH;
		return;
	}
	assert(s->wait == WAIT_NONE); /* only a busy body makes us wait */
	smtp_message_finish(s, false);
}

/* The body's spill file took a chunk (msgbuf's written callback): read on,
 * or go on to the commit. */
static void smtp_body_written(void *arg)
{
	struct smtp_session *s = arg;
	struct msgbuf *b = &s->tx->body;

	if (s->wait == WAIT_ROOM && !msgbuf_full(b)) {
		s->wait = WAIT_NONE;
		conn_resume(s->c);
	} else if (s->wait == WAIT_FLUSH && !msgbuf_busy(b)) {
		s->wait = WAIT_NONE;
		smtp_message_finish(s, true);
	}
}

/* Holds input back while too much of the body waits for its spill file,
 * which bounds the memory a fast client makes us hold. */
static void smtp_body_room(struct smtp_session *s)
{
	if (s->wait == WAIT_NONE && msgbuf_full(&s->tx->body)) {
		s->wait = WAIT_ROOM;
		conn_pause(s->c);
	}
}

/* Feeds message octets from the input; false when it needs more. */
static bool smtp_body_input(struct smtp_session *s)
{
	struct smtp_tx *tx = s->tx;
	const char *p;
	size_t n, used;

	/* "BDAT 0 LAST" has no octets to wait for. */
	if (!conn_peek(s->c, &p, &n) &&
	    (s->mode == MODE_DATA || tx->bdat_left > 0 || conn_closing(s->c)))
		return false;
	if (s->mode == MODE_DATA) {
		used = data_feed(&tx->rd, p, n);
		conn_consume(s->c, used);
		smtp_body_room(s);
		if (tx->rd.st != DATA_DONE)
			return false;
		smtp_message_end(s);
		return true;
	}
	if (n > tx->bdat_left)
		n = (size_t)tx->bdat_left;
	if (!tx->bdat_discard)
		data_feed(&tx->rd, p, n);
	conn_consume(s->c, n);
	tx->bdat_left -= n;
	smtp_body_room(s);
	if (tx->bdat_left > 0)
		return false;
	if (tx->bdat_last || tx->bdat_discard) {
		smtp_message_end(s);
		return true;
	}
	conn_printf(s->c, "250 2.0.0 %llu octets received\r\n",
		    (unsigned long long)tx->body.len);
	s->mode = MODE_CMD;
	s->state = ST_BDAT;
	return true;
}

/* --- dispatch ----------------------------------------------------------- */

static void smtp_command(struct smtp_session *s, char *line, size_t len)
{
	size_t i = 0;
	char *arg;

	if (strlen(line) != len) {
		s->auth_step = AUTH_STEP_NONE;
		smtp_error(s, "500 5.5.2 Error: NUL character in command");
		return;
	}
	if (s->auth_step != AUTH_STEP_NONE) {
		smtp_auth_response(s, line); /* the answer to a 334 */
		return;
	}
	switch (cmd_parse(smtp_specs, sizeof smtp_specs / sizeof *smtp_specs,
			  s->state, line, &i, &arg)) {
	case CMD_UNKNOWN:
		smtp_error(s, "500 5.5.1 Command unrecognized");
		break;
	case CMD_BAD_STATE:
		smtp_error(s, smtp_sequence_reply(s, smtp_specs[i].verb));
		break;
	case CMD_NO_ARG:
		smtp_error(s, "501 5.5.4 Syntax error: argument required");
		break;
	case CMD_EXTRA_ARG:
		smtp_error(s, "501 5.5.4 Syntax error: no arguments allowed");
		break;
	case CMD_OK:
		smtp_proceed[i](s, arg);
		break;
	}
}

static void smtp_input(struct smtp_session *s)
{
	char *line;
	size_t len;

	for (;;) {
		if (s->mode != MODE_CMD) {
			if (!smtp_body_input(s))
				return;
			continue;
		}
		/* Lines are read up to an AUTH line's length; only AUTH
		 * and the answers to its 334 may be longer than a command. */
		enum conn_line got =
		    conn_getline(s->c, SMTP_AUTH_LINE_MAX, &line, &len);

		if (got == CONN_AGAIN)
			return;
		if (got == CONN_LINE_TOOLONG ||
		    (len + 2 > SMTP_CMD_MAX && s->auth_step == AUTH_STEP_NONE &&
		     strncasecmp(line, "AUTH ", 5) != 0)) {
			s->auth_step = AUTH_STEP_NONE;
			smtp_error(s, "500 5.5.2 Line too long");
		} else if (got == CONN_LINE_BARELF) {
			/* RFC 5321 2.3.8: lines end in CRLF, nothing else. */
			s->auth_step = AUTH_STEP_NONE;
			smtp_error(s, "500 5.5.2 Line must end with CRLF");
		} else {
			smtp_command(s, line, len);
		}
	}
}

/* --- the protocol ------------------------------------------------------- */

static void *smtp_open(struct conn *c, void *ctx)
{
	struct smtp_session *s = xcalloc(1, sizeof *s);

	s->c = c;
	s->srv = ctx;
	s->state = ST_FRESH;
	conn_printf(c, "220 %s ESMTP pillarbox\r\n", s->srv->cfg->hostname);
	return s;
}

static void smtp_event(struct conn *c, void *session, enum conn_event ev)
{
	struct smtp_session *s = session;

	switch (ev) {
	case CONN_DATAIN:
		smtp_input(s);
		break;
	case CONN_TIMEOUT:
		conn_printf(c, "421 4.4.2 %s Error: timeout exceeded\r\n",
			    s->srv->cfg->hostname);
		conn_close(c);
		break;
	case CONN_LIFETIME:
		conn_printf(
		    c, "421 4.4.2 %s Error: session time limit exceeded\r\n",
		    s->srv->cfg->hostname);
		conn_close(c);
		break;
	case CONN_SHUTDOWN:
		conn_printf(c, "421 4.3.2 %s Service shutting down\r\n",
			    s->srv->cfg->hostname);
		break;
	case CONN_OPEN: /* outbound only */
	case CONN_TLS_READY:
		smtp_tls_ready(s);
		break;
	}
}

static void smtp_free(void *session)
{
	struct smtp_session *s = session;

	log_msg(LOG_INFO, s->srv->name, "sid=%s event=disconnect errors=%u",
		conn_sid(s->c), s->errors);
	smtp_tx_free(s->tx);
	smtp_auth_free(s);
	free(s->helo);
	free(s);
}

const struct conn_proto smtp_proto = {"smtp", smtp_open, smtp_event, smtp_free};
const struct conn_proto smtp_submission_proto = {"submission", smtp_open,
						 smtp_event, smtp_free};

void smtp_server_init(struct smtp_server *srv, const struct config *cfg,
		      struct store *st)
{
	memset(srv, 0, sizeof *srv);
	srv->name = "smtp";
	srv->cfg = cfg;
	srv->st = st;
	srv->max_size = cfg->max_message_size;
	if (srv->max_size > SMTP_STORE_MAX - SMTP_TRACE_MAX)
		srv->max_size = SMTP_STORE_MAX - SMTP_TRACE_MAX;
	snprintf(srv->busy_reply, sizeof srv->busy_reply,
		 "421 4.7.0 %s Error: too many connections from your "
		 "address\r\n",
		 cfg->hostname);
	snprintf(
	    srv->full_reply, sizeof srv->full_reply,
	    "421 4.3.2 %s Error: too many connections, try again later\r\n",
	    cfg->hostname);
}

void smtp_submission_init(struct smtp_server *srv, const struct config *cfg,
			  struct store *st)
{
	smtp_server_init(srv, cfg, st);
	srv->name = "submission";
	srv->submission = true;
}
