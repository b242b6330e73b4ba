/* client.c - the outbound SMTP conversation, one reply at a time. see
 * client.h
 *
 * The session is a state machine driven by the peer's replies: each
 * complete reply (its lines joined) goes to client_reply(), which looks at
 * the state it was waiting in, records what the reply means and sends what
 * comes next. A mail transaction is a list of commands - MAIL, one RCPT per
 * recipient, DATA - numbered 0 to nrcpts + 1; `sent` counts those written
 * and `answered` those whose reply has come, so pipelined and one-by-one
 * sending share one reply handler.
 */
#include "smtp/client.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"
#include "core/conn.h"
#include "core/loop.h"
#include "core/netaddr.h"

enum client_state {
	CL_CONNECT,   /* waiting for the connection */
	CL_GREETING,  /* for the 220 */
	CL_EHLO,      /* for EHLO's reply */
	CL_HELO,      /* for HELO's, after EHLO got a 5xx */
	CL_STARTTLS,  /* for STARTTLS's 220 */
	CL_TLS,	      /* for the handshake */
	CL_AUTH,      /* for AUTH PLAIN's 235, or AUTH LOGIN's first 334 */
	CL_AUTH_USER, /* for the 334 after the LOGIN user name */
	CL_AUTH_PASS, /* for the 235 after the LOGIN password */
	CL_RSET,      /* for RSET's reply, before the next MAIL */
	CL_TX,	      /* for MAIL, RCPT and DATA replies */
	CL_DOT,	      /* for the reply to the end of the data */
	CL_QUIT,      /* for QUIT's reply */
};

struct client {
	struct conn *c;
	const struct client_params *p;
	const struct client_ops *ops;
	void *arg;
	enum client_state state;
	char peer[CLIENT_PEER_MAX]; /* "name[address]" */

	/* What EHLO said the peer can do. */
	bool esmtp, pipelining, starttls, smtputf8, eightbitmime;
	bool auth_plain, auth_login;
	bool size_ext;	   /* SIZE offered: MAIL takes SIZE= */
	uint64_t size_max; /* 0: no SIZE limit given */
	bool tls_done, authed;
	bool tls_failed; /* the connection ended in the handshake */

	/* The reply being read: code of its first line, lines joined. */
	int code;
	bool in_reply;
	char reply[CLIENT_REPLY_MAX];
	size_t reply_len;

	/* The transaction under way. */
	struct client_msg *msg;
	size_t sent, answered; /* commands: 0 MAIL, 1..n RCPT, n+1 DATA */
	bool mail_ok;
	size_t accepted;  /* recipients the peer took at RCPT */
	bool need_rset;	  /* a transaction ended before its data */
	bool dot_ignored; /* a pipelined DATA got 354 with no recipient */
	uint64_t off;	  /* body octets sent */
	bool bol;	  /* the body sent so far ends a line */

	bool quit; /* QUIT was answered: a clean end */
	char error[CLIENT_REPLY_MAX + CLIENT_PEER_MAX];
};

static void client_next(struct client *cl);

/* --- helpers ---------------------------------------------------------------
 */

static void client_send(struct client *cl, const char *line)
{
	conn_puts(cl->c, line);
	conn_write(cl->c, "\r\n", 2);
}

/* Every recipient of the message still undecided gets result and reply. */
static void client_settle_rcpts(struct client *cl, enum client_result from,
				enum client_result result, const char *reply,
				bool remote)
{
	struct client_msg *m = cl->msg;

	for (size_t i = 0; i < m->nrcpts; i++) {
		struct client_rcpt *r = &m->rcpts[i];
		if (r->result != from &&
		    !(from == CLIENT_PENDING && r->result == CLIENT_ACCEPTED))
			continue;
		r->result = result;
		r->remote = remote;
		snprintf(r->reply, sizeof r->reply, "%s", reply);
	}
}

/* The transaction is over: hand the message back, and go on. */
static void client_tx_end(struct client *cl, bool reset)
{
	struct client_msg *m = cl->msg;

	cl->msg = NULL;
	cl->need_rset = reset;
	cl->ops->done(cl->arg, m);
}

/* The session cannot go on: what was under way is TEMP (another exchanger
 * or a later attempt will carry it), and we say goodbye. why is the
 * peer's reply or our own words. */
static void client_fail(struct client *cl, const char *why)
{
	if (cl->error[0] == '\0')
		snprintf(cl->error, sizeof cl->error, "%s", why);
	if (cl->msg != NULL) {
		client_settle_rcpts(cl, CLIENT_PENDING, CLIENT_TEMP, why,
				    cl->code >= 400);
		client_tx_end(cl, false);
	}
	if (!conn_closing(cl->c)) {
		if (cl->state != CL_CONNECT && cl->state != CL_TLS)
			client_send(cl, "QUIT");
		conn_close(cl->c);
	}
}

/* "reply from peer": a refusal of the session itself, for the log. */
static void client_fail_reply(struct client *cl, const char *when)
{
	char why[CLIENT_REPLY_MAX + 64];

	snprintf(why, sizeof why, "%s (in reply to %s)", cl->reply, when);
	client_fail(cl, why);
}

/* Base64 of src[0..n) into out (size outlen). */
static void client_b64(const void *src, size_t n, char *out, size_t outlen)
{
	if (b64_ntop(src, n, out, outlen) < 0)
		out[0] = '\0';
}

/* --- EHLO, STARTTLS, AUTH --------------------------------------------------
 */

static void client_ehlo_reset(struct client *cl)
{
	cl->pipelining = cl->starttls = cl->smtputf8 = false;
	cl->eightbitmime = cl->auth_plain = cl->auth_login = false;
	cl->size_ext = false;
	cl->size_max = 0;
}

/* One keyword line of an EHLO reply (after "250-"). */
static void client_ehlo_line(struct client *cl, const char *kw)
{
	/* RFC 5321 4.1.1.1: keyword, then its parameters. */
	if (strcasecmp(kw, "PIPELINING") == 0)
		cl->pipelining = true;
	else if (strcasecmp(kw, "STARTTLS") == 0)
		cl->starttls = true;
	else if (strcasecmp(kw, "SMTPUTF8") == 0)
		cl->smtputf8 = true;
	else if (strcasecmp(kw, "8BITMIME") == 0)
		cl->eightbitmime = true;
	else if (strncasecmp(kw, "SIZE", 4) == 0 &&
		 (kw[4] == ' ' || kw[4] == '\0')) {
		cl->size_ext = true; /* RFC 1870: "SIZE" alone or "SIZE 0"
				      * means no fixed limit */
		cl->size_max = strtoull(kw + 4, NULL, 10);
	} else if (strncasecmp(kw, "AUTH", 4) == 0 &&
		   (kw[4] == ' ' || kw[4] == '=')) {
		char mechs[CLIENT_LINE_MAX], *save, *m;
		snprintf(mechs, sizeof mechs, "%s", kw + 5);
		for (m = strtok_r(mechs, " ", &save); m != NULL;
		     m = strtok_r(NULL, " ", &save)) {
			cl->auth_plain |= strcasecmp(m, "PLAIN") == 0;
			cl->auth_login |= strcasecmp(m, "LOGIN") == 0;
		}
	}
}

/* Begins the handshake after the peer's "220 Ready to start TLS" (RFC
 * 3207): the connection layer runs it and says CONN_TLS_READY, or closes
 * the connection when it fails. Verified (the chain to the trust store,
 * the name) only when TLS is required: opportunistic TLS to an exchanger
 * takes any certificate (RFC 7435) - better encrypted than not. */
static void client_tls_start(struct client *cl)
{
	conn_starttls_client(cl->c, cl->p->peer_name,
			     cl->p->tls == CLIENT_TLS_REQUIRED);
}

/* After EHLO (or HELO): TLS, then AUTH, then the first message. */
static void client_ready(struct client *cl)
{
	if (!cl->tls_done && cl->starttls && !cl->p->no_starttls) {
		cl->state = CL_STARTTLS;
		client_send(cl, "STARTTLS");
		return;
	}
	if (cl->p->tls == CLIENT_TLS_REQUIRED && !cl->tls_done) {
		cl->code = 0;
		client_fail(cl, "TLS is required, and the server does not "
				"offer STARTTLS");
		return;
	}
	if (cl->p->auth_user != NULL && !cl->authed) {
		char buf[2 * CLIENT_REPLY_MAX], b64[4 * CLIENT_REPLY_MAX];
		size_t ul = strlen(cl->p->auth_user);
		size_t pl = strlen(cl->p->auth_pass);
		if (cl->auth_plain && ul + pl + 2 <= sizeof buf) {
			/* RFC 4616: authzid NUL authcid NUL passwd */
			buf[0] = '\0';
			memcpy(buf + 1, cl->p->auth_user, ul + 1);
			memcpy(buf + 2 + ul, cl->p->auth_pass, pl);
			client_b64(buf, ul + pl + 2, b64, sizeof b64);
			explicit_bzero(buf, sizeof buf);
			conn_printf(cl->c, "AUTH PLAIN %s\r\n", b64);
			explicit_bzero(b64, sizeof b64);
		} else if (cl->auth_login) {
			client_send(cl, "AUTH LOGIN");
		} else {
			client_fail(cl, "the server offers no AUTH mechanism "
					"we know (PLAIN, LOGIN)");
			return;
		}
		cl->state = CL_AUTH;
		return;
	}
	client_next(cl);
}

/* AUTH LOGIN's steps: the user name, then the password, each base64. */
static void client_auth_login(struct client *cl, const char *field)
{
	char b64[4 * CLIENT_REPLY_MAX];

	client_b64(field, strlen(field), b64, sizeof b64);
	client_send(cl, b64);
	explicit_bzero(b64, sizeof b64);
}

/* --- the mail transaction --------------------------------------------------
 */

/* Writes transaction command i (see the top of the file). */
static void client_tx_send(struct client *cl, size_t i)
{
	struct client_msg *m = cl->msg;

	if (i == 0) {
		char params[96] = "";
		size_t n = 0;
		if (cl->size_ext) /* RFC 1870: the size, if the peer asks */
			n += (size_t)snprintf(params + n, sizeof params - n,
					      " SIZE=%" PRIu64, m->size);
		if (m->eightbit && cl->eightbitmime)
			n += (size_t)snprintf(params + n, sizeof params - n,
					      " BODY=8BITMIME");
		if (m->utf8) /* only sent to a peer that offers it */
			snprintf(params + n, sizeof params - n, " SMTPUTF8");
		conn_printf(cl->c, "MAIL FROM:<%s>%s\r\n", m->sender, params);
	} else if (i <= m->nrcpts) {
		conn_printf(cl->c, "RCPT TO:<%s>\r\n", m->rcpts[i - 1].addr);
	} else {
		client_send(cl, "DATA");
	}
	cl->sent = i + 1;
}

/* Starts the next message, or says QUIT when there is none. */
static void client_next(struct client *cl)
{
	struct client_msg *m;
	char why[CLIENT_REPLY_MAX];

	for (;;) {
		if (conn_closing(cl->c))
			return;
		if (cl->need_rset) {
			cl->need_rset = false;
			cl->state = CL_RSET;
			client_send(cl, "RSET");
			return;
		}
		m = cl->msg = cl->ops->next(cl->arg);
		if (m == NULL) {
			cl->state = CL_QUIT;
			client_send(cl, "QUIT");
			return;
		}
		/* What the peer cannot take fails here, for good. */
		why[0] = '\0';
		if (m->utf8 && !cl->smtputf8)
			snprintf(why, sizeof why,
				 "553 5.6.7 the message needs SMTPUTF8 (a "
				 "non-ASCII address or header), which %s does "
				 "not offer",
				 cl->peer);
		else if (cl->size_max > 0 && m->size > cl->size_max)
			snprintf(why, sizeof why,
				 "552 5.3.4 message size %" PRIu64
				 " exceeds the limit of %s (%" PRIu64 ")",
				 m->size, cl->peer, cl->size_max);
		if (why[0] == '\0')
			break;
		client_settle_rcpts(cl, CLIENT_PENDING, CLIENT_PERM, why,
				    false);
		client_tx_end(cl, false);
	}
	cl->state = CL_TX;
	cl->sent = cl->answered = cl->accepted = 0;
	cl->mail_ok = cl->dot_ignored = false;
	if (cl->pipelining) {
		/* RFC 2920: MAIL, every RCPT and DATA in one go; DATA last. */
		for (size_t i = 0; i <= m->nrcpts + 1; i++)
			client_tx_send(cl, i);
	} else {
		client_tx_send(cl, 0);
	}
}

/* The body: the stored message, dot-stuffed (RFC 5321 4.5.2), one piece
 * per call, each read in a transaction of its own. */
static bool client_body_more(struct conn *c, void *arg)
{
	struct client *cl = arg;
	struct client_msg *m = cl->msg;
	struct store_txn *txn = NULL;
	const char *data, *p, *end, *dot;
	const void *v;
	size_t len, n;
	int r;

	r = store_txn_begin(cl->p->st, false, &txn);
	if (r == 0)
		r = store_msg_get(txn, m->id, &v, &len);
	if (r == 0 && len != m->skip + m->size)
		r = -EIO; /* not the message we began to send */
	if (r < 0) {
		store_txn_abort(txn);
		log_msg(LOG_ERROR, "deliver",
			"sid=%s event=body-read-failed id=%016" PRIx64
			" error=%s",
			conn_sid(c), m->id, strerror(-r));
		/* Half a message is out: hang up, so the peer drops it. */
		cl->code = 0;
		client_fail(cl, "local error reading the message");
		return true;
	}
	data = (const char *)v + m->skip;
	n = m->size - cl->off < CLIENT_PIECE ? (size_t)(m->size - cl->off)
					     : CLIENT_PIECE;
	p = data + cl->off;
	end = p + n;
	while (p < end) {
		if (cl->bol && *p == '.')
			conn_write(c, ".", 1); /* a line starting with "." */
		dot = memmem(p, (size_t)(end - p), "\n.", 2);
		dot = dot != NULL ? dot + 1 : end;
		conn_write(c, p, (size_t)(dot - p));
		cl->bol = dot[-1] == '\n';
		p = dot;
	}
	cl->off += n;
	store_txn_abort(txn);
	if (cl->off < m->size)
		return false;
	/* A stored message ends in CRLF; the end of data follows. */
	conn_puts(c, cl->bol ? ".\r\n" : "\r\n.\r\n");
	cl->state = CL_DOT;
	return true;
}

/* A reply to command `answered` of the transaction. */
static void client_tx_reply(struct client *cl)
{
	struct client_msg *m = cl->msg;
	size_t i = cl->answered++;
	enum client_result bad = cl->code >= 500 ? CLIENT_PERM : CLIENT_TEMP;

	if (i == 0) { /* MAIL */
		cl->mail_ok = cl->code / 100 == 2;
		if (!cl->mail_ok)
			client_settle_rcpts(cl, CLIENT_PENDING, bad, cl->reply,
					    true);
	} else if (i <= m->nrcpts && cl->mail_ok) { /* RCPT: its own */
		struct client_rcpt *r = &m->rcpts[i - 1];
		r->result = cl->code / 100 == 2 ? CLIENT_ACCEPTED : bad;
		r->remote = true;
		snprintf(r->reply, sizeof r->reply, "%s", cl->reply);
		cl->accepted += r->result == CLIENT_ACCEPTED;
	} else if (i == m->nrcpts + 1) { /* DATA */
		if (cl->code == 354 && cl->mail_ok && cl->accepted > 0) {
			cl->off = 0;
			cl->bol = true;
			conn_stream(cl->c, client_body_more, cl);
			return;
		}
		if (cl->code == 354) {
			/* Pipelined, and no recipient was taken: RFC 2920
			 * 3.1 says end the (empty) data at once. */
			cl->dot_ignored = true;
			cl->state = CL_DOT;
			client_send(cl, ".");
			return;
		}
		client_settle_rcpts(cl, CLIENT_ACCEPTED, bad, cl->reply, true);
		client_tx_end(cl, true);
		client_next(cl);
		return;
	}
	if (cl->pipelining)
		return; /* the rest is sent; wait for its replies */
	/* One by one: what comes next, if anything. */
	if (!cl->mail_ok || (i == m->nrcpts && cl->accepted == 0)) {
		client_tx_end(cl, true);
		client_next(cl);
		return;
	}
	client_tx_send(cl, i + 1);
}

/* The reply to the end of the data decides for every accepted recipient. */
static void client_dot_reply(struct client *cl)
{
	enum client_result res = cl->code / 100 == 2 ? CLIENT_DELIVERED
				 : cl->code >= 500   ? CLIENT_PERM
						     : CLIENT_TEMP;

	if (!cl->dot_ignored)
		client_settle_rcpts(cl, CLIENT_ACCEPTED, res, cl->reply, true);
	client_tx_end(cl, false);
	client_next(cl);
}

/* --- replies ----------------------------------------------------------------
 */

/* One complete reply: what it means depends on what we wait for. */
static void client_reply(struct client *cl)
{
	int cls = cl->code / 100;

	switch (cl->state) {
	case CL_CONNECT:
	case CL_TLS:
		/* Nothing was asked: a server talking out of turn. */
		client_fail_reply(cl, "nothing");
		break;
	case CL_GREETING:
		if (cls != 2) {
			client_fail_reply(cl, "the greeting");
			break;
		}
		cl->state = CL_EHLO;
		conn_printf(cl->c, "EHLO %s\r\n", cl->p->helo);
		break;
	case CL_EHLO:
		if (cls == 2) {
			cl->esmtp = true;
			client_ready(cl);
		} else if (cls == 5) { /* RFC 5321 3.2: fall back to HELO */
			cl->state = CL_HELO;
			conn_printf(cl->c, "HELO %s\r\n", cl->p->helo);
		} else {
			client_fail_reply(cl, "EHLO");
		}
		break;
	case CL_HELO:
		if (cls != 2)
			client_fail_reply(cl, "HELO");
		else
			client_ready(cl);
		break;
	case CL_STARTTLS:
		if (cls == 2) {
			cl->state = CL_TLS;
			client_tls_start(cl);
		} else if (cl->p->tls == CLIENT_TLS_REQUIRED) {
			client_fail_reply(cl, "STARTTLS");
		} else {
			cl->starttls = false; /* on without it */
			client_ready(cl);
		}
		break;
	case CL_AUTH:
		if (cls == 2) {
			cl->authed = true;
			log_msg(LOG_INFO, "deliver",
				"sid=%s event=auth user=%s peer=%s",
				conn_sid(cl->c), log_str(cl->p->auth_user),
				log_str(cl->peer));
			client_next(cl);
		} else if (cl->code == 334) { /* AUTH LOGIN asks for the user */
			cl->state = CL_AUTH_USER;
			client_auth_login(cl, cl->p->auth_user);
		} else {
			client_fail_reply(cl, "AUTH");
		}
		break;
	case CL_AUTH_USER:
		if (cl->code != 334) {
			client_fail_reply(cl, "AUTH");
			break;
		}
		cl->state = CL_AUTH_PASS;
		client_auth_login(cl, cl->p->auth_pass);
		break;
	case CL_AUTH_PASS:
		if (cls != 2) {
			client_fail_reply(cl, "AUTH");
			break;
		}
		cl->authed = true;
		log_msg(LOG_INFO, "deliver",
			"sid=%s event=auth user=%s peer=%s", conn_sid(cl->c),
			log_str(cl->p->auth_user), log_str(cl->peer));
		client_next(cl);
		break;
	case CL_RSET:
		/* Whatever it says, the next MAIL will tell. */
		client_next(cl);
		break;
	case CL_TX:
		client_tx_reply(cl);
		break;
	case CL_DOT:
		client_dot_reply(cl);
		break;
	case CL_QUIT:
		cl->quit = true;
		conn_close(cl->c);
		break;
	}
}

/* Collects reply lines ("250-..." continues, "250 ..." ends) and hands
 * each complete reply to client_reply(). */
static void client_input(struct client *cl)
{
	char *line;
	size_t len;

	while (!conn_closing(cl->c)) {
		switch (conn_getline(cl->c, CLIENT_LINE_MAX, &line, &len)) {
		case CONN_AGAIN:
			return;
		case CONN_LINE_TOOLONG:
			cl->code = 0;
			client_fail(cl, "reply line too long");
			return;
		case CONN_LINE: /* servers that end lines in a bare LF are */
		case CONN_LINE_BARELF: /* few, but harmless here */
			break;
		}
		if (len < 3 || line[0] < '2' || line[0] > '5' ||
		    line[1] < '0' || line[1] > '9' || line[2] < '0' ||
		    line[2] > '9' ||
		    (len > 3 && line[3] != ' ' && line[3] != '-')) {
			cl->code = 0;
			client_fail(cl, "malformed reply from the server");
			return;
		}
		if (!cl->in_reply) {
			cl->in_reply = true;
			cl->code = atoi(line);
			cl->reply_len = 0;
			if (cl->state == CL_EHLO) /* a new list of keywords */
				client_ehlo_reset(cl);
		} else if (cl->state == CL_EHLO && cl->code / 100 == 2 &&
			   len > 4) {
			client_ehlo_line(cl, line + 4);
		}
		/* Join the lines' texts for logs and bounces. */
		if (cl->reply_len == 0)
			cl->reply_len = (size_t)snprintf(
			    cl->reply, sizeof cl->reply, "%.3s%s%s", line,
			    len > 4 ? " " : "", len > 4 ? line + 4 : "");
		else if (len > 4 && cl->reply_len + 2 < sizeof cl->reply)
			cl->reply_len += (size_t)snprintf(
			    cl->reply + cl->reply_len,
			    sizeof cl->reply - cl->reply_len, " %s", line + 4);
		if (cl->reply_len >= sizeof cl->reply)
			cl->reply_len = sizeof cl->reply - 1;
		if (len > 3 && line[3] == '-')
			continue; /* more lines to come */
		cl->in_reply = false;
		client_reply(cl);
	}
}

/* --- the protocol ------------------------------------------------------------
 */

static void client_event(struct conn *c, void *session, enum conn_event ev)
{
	struct client *cl = session;
	char why[CLIENT_PEER_MAX + 64];

	switch (ev) {
	case CONN_OPEN:
		cl->state = CL_GREETING;
		break;
	case CONN_DATAIN:
		client_input(cl);
		break;
	case CONN_TIMEOUT:
	case CONN_LIFETIME:
		snprintf(why, sizeof why, "conversation with %s timed out",
			 cl->peer);
		cl->code = 0;
		client_fail(cl, why);
		break;
	case CONN_SHUTDOWN:
		cl->code = 0;
		client_fail(cl, "the server is shutting down");
		break;
	case CONN_TLS_READY:
		/* RFC 3207 4.2: forget what EHLO said in clear; ask again. */
		log_msg(LOG_INFO, "deliver", "sid=%s event=tls peer=%s tls=%s",
			conn_sid(c), log_str(cl->peer),
			log_str(conn_tls_info(c) ? conn_tls_info(c) : "-"));
		cl->tls_done = true;
		client_ehlo_reset(cl);
		cl->state = CL_EHLO;
		conn_printf(c, "EHLO %s\r\n", cl->p->helo);
		break;
	}
	(void)c;
}

static void client_free(void *session)
{
	struct client *cl = session;
	char why[CLIENT_REPLY_MAX];
	int err = conn_error(cl->c);

	if (!cl->quit && cl->error[0] == '\0') {
		cl->tls_failed = cl->state == CL_TLS;
		if (cl->tls_failed)
			snprintf(why, sizeof why,
				 "TLS handshake with %s failed", cl->peer);
		else if (err != 0)
			snprintf(why, sizeof why, "connect to %s: %s", cl->peer,
				 loop_strerror(err));
		else
			snprintf(why, sizeof why, "lost connection with %s",
				 cl->peer);
		cl->code = 0;
		client_fail(cl, why); /* only records: conn is closing */
	}
	cl->ops->closed(cl->arg, cl->quit ? NULL : cl->error, cl->tls_failed);
	free(cl);
}

static const struct conn_proto client_proto = {"deliver", NULL, client_event,
					       client_free};

struct client *client_start(const struct sockaddr *addr,
			    const struct client_params *p,
			    const struct client_ops *ops, void *arg)
{
	struct client *cl = xcalloc(1, sizeof *cl);
	struct netaddr na;
	char ip[NETADDR_TEXT_MAX];

	cl->p = p;
	cl->ops = ops;
	cl->arg = arg;
	cl->state = CL_CONNECT;
	netaddr_from_sockaddr(&na, addr);
	netaddr_format(&na, ip, sizeof ip);
	snprintf(cl->peer, sizeof cl->peer, "%s[%s]", p->peer_name, ip);
	cl->c = conn_connect(loop_get(), addr, &client_proto, cl,
			     p->connect_timeout, p->command_timeout);
	return cl;
}

void client_abort(struct client *cl)
{
	cl->code = 0;
	client_fail(cl, "the server is shutting down");
}

const char *client_peer(const struct client *cl)
{
	return cl->peer;
}
