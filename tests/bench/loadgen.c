/* loadgen - load generator for the pillarbox benchmark (tests/bench/bench.sh).
 * One process, one libuv loop, many TCP sessions to one IPv4 address.
 *
 *   loadgen smtp HOST PORT CONC SECONDS MSGSIZE NRCPTUSERS [RCPTDOMAIN]
 *     CONC sessions, no pipelining: EHLO once, then MAIL/RCPT/DATA/body,
 *     waiting for each reply, until SECONDS have passed; then QUIT.
 *     Recipients cycle over u1..uN@RCPTDOMAIN (default localhost; another
 *     domain makes every message relayed, for a client allowed to relay).
 *     Only 250 after the body counts.
 *   loadgen smtp-starttls (the arguments of smtp)
 *     the same, each session beginning EHLO, STARTTLS, EHLO (RFC 3207)
 *     and sending every message over that TLS.
 *   loadgen fill HOST PORT NUSERS PERUSER MSGSIZE
 *     one session per user uK@localhost delivering PERUSER messages to it,
 *     MAIL+RCPT+DATA sent as one pipelined group (RFC 2920); a 4xx reply
 *     restarts the session, which sends that message again.
 *   loadgen pop3 HOST PORT CONC NUSERS PASSWORD
 *     CONC <= NUSERS clients; client i logs in as u(i+1)@localhost with
 *     USER/PASS, STAT, RETRs every message with up to 16 in flight, checks
 *     each ends in CRLF.CRLF, then QUIT (no DELE).
 *   loadgen pop3s HOST PORT CONC NUSERS PASSWORD
 *     the same over implicit TLS.
 *   loadgen idle smtp|pop3 HOST PORT N
 *     opens N sessions, reads the greetings, prints "ready greeted=G
 *     failed=F", holds them until stdin (a pipe) reaches EOF or
 *     SIGTERM/SIGINT arrives.
 *   loadgen body MSGSIZE
 *     writes the message the other modes send (CRLF lines) to stdout.
 * Results: one "key=value ..." line on stdout; problems on stderr. Exit 0
 * when every session went as expected, 1 on any error, 2 on bad usage.
 *
 * TLS (BearSSL, TLS 1.2 as the server offers it): a client engine per
 * session, pumped by hand: ciphertext read goes into the engine and the
 * plaintext out of it into the session's buffer, where the same parsers
 * read it; what a session sends goes in as plaintext and leaves as
 * records. The server's certificate is taken unchecked (its public key,
 * nothing else): a bench measures the server, not the trust in it. */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <bearssl.h>
#include <uv.h>

#define RETR_WINDOW  16	  /* POP3 RETRs in flight per client */
#define IDLE_PENDING 64	  /* idle mode: sessions connecting at once */
#define MAX_ERRMSG   20	  /* error lines printed before going quiet */
#define MAX_RETRIES  1000 /* fill: sessions restarted after a 4xx reply */

#define TLS_NAME "mx.test" /* SNI; the name is not checked */

/* clang-format off */
enum mode { M_SMTP, M_FILL, M_POP3, M_IDLE };
enum state {
	S_GREET, S_EHLO, S_STARTTLS, S_HANDSHAKE, S_EHLO_TLS, S_MAIL, S_RCPT,
	S_DATA, S_BODY, S_QUIT,
	P_GREET, P_USER, P_PASS, P_STAT, P_RETR, P_QUIT,
	X_IDLE, X_DONE
};
static const char *state_name[] = {
	"greeting", "EHLO", "STARTTLS", "TLS handshake", "EHLO after TLS",
	"MAIL", "RCPT", "DATA", "end of data", "QUIT",
	"greeting", "USER", "PASS", "STAT", "RETR", "QUIT", "idle", "done"};
/* clang-format on */

struct tls; /* a session's TLS engine and its buffers */

typedef struct conn {
	uv_tcp_t tcp;
	uv_connect_t creq;
	int id, user, closing, retry;
	enum state state;
	char *buf; /* received (plaintext), not yet parsed */
	size_t len, cap, scan;
	long sent;		 /* fill: messages delivered so far */
	long nmsg, nsent, nrecv; /* pop3: messages, RETRs sent, answered */
	struct tls *tls;	 /* NULL until TLS begins */
} conn;

static struct {
	enum mode mode;
	int pop3; /* sessions speak POP3 */
	int tls;  /* smtp: STARTTLS after EHLO; pop3: implicit TLS */
	struct sockaddr_in addr;
	int nusers, target;
	long peruser;
	const char *password;
	const char *rcpt_domain; /* smtp: recipients' domain */
	char *body;		 /* the message followed by ".\r\n" */
	size_t bodylen, chunk;
	uint64_t deadline;
	long msgs, errors, rr, retries;
	uint64_t bytes;
	int active, launched, pending, greeted, failed, dropped;
	int stopping, ready;
	int logged_in;	 /* pop3: sessions past login, waiting to retrieve */
	uint64_t t_retr; /* pop3: when retrieval began (all logged in) */
	conn **conns;
	uv_loop_t *loop;
	uv_timer_t watchdog;
	uv_signal_t sigterm, sigint;
	uv_pipe_t in;
} G;

static void conn_close(conn *c);
static void launch(void);
static conn *start_conn(int id);

static void errorf(conn *c, const char *fmt, ...)
{
	va_list ap;

	if (G.errors++ >= MAX_ERRMSG) {
		if (G.errors == MAX_ERRMSG + 1)
			fprintf(stderr, "loadgen: further errors not shown\n");
		return;
	}
	fprintf(stderr, "loadgen: ");
	if (c)
		fprintf(stderr, "session %d (%s): ", c->id,
			state_name[c->state]);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* Unexpected reply: report it with the offending line, end the session. */
static void bad_reply(conn *c, const char *want, const char *line, size_t n)
{
	errorf(c, "expected %s, got \"%.*s\"", want, (int)(n > 200 ? 200 : n),
	       line);
	conn_close(c);
}

/* The number after the first space of a reply line, -1 if none. */
static long reply_num(const char *line, size_t n)
{
	char tmp[64];
	char *sp;

	snprintf(tmp, sizeof tmp, "%.*s", (int)(n < 63 ? n : 63), line);
	sp = strchr(tmp, ' ');
	return sp && isdigit((unsigned char)sp[1]) ? strtol(sp + 1, NULL, 10)
						   : -1;
}

/* Header block, then lines of letters of at most 80 octets (CRLF
 * included): exactly `size` octets ending in CRLF, no line starts with a
 * dot. ".\r\n" follows in the buffer. */
static char *make_body(size_t size, size_t *outlen)
{
	static const char hdr[] =
	    "From: Bench <bench@localhost>\r\nTo: <bench@localhost>\r\n"
	    "Subject: pillarbox benchmark message\r\n"
	    "Message-ID: <bench@pillarbox.bench>\r\n\r\n";
	size_t h = sizeof hdr - 1, left, line = 0, n, i;
	char *b, *p;

	if (size < h + 2)
		size = h + 2;
	b = malloc(size + 3);
	if (!b)
		abort();
	memcpy(b, hdr, h);
	p = b + h;
	for (left = size - h; left >= 2; left -= n, p += n, line++) {
		n = left < 80 ? left : 80;
		if (left - n == 1)
			n -= 2; /* never leave a single octet behind */
		for (i = 0; i + 2 < n; i++)
			p[i] = (char)('a' + (line + i) % 26);
		memcpy(p + n - 2, "\r\n", 2);
	}
	memcpy(p, ".\r\n", 3);
	*outlen = size;
	return b;
}

/* ---- TLS ----------------------------------------------------------------- */

/* The server's certificate, unchecked: the end entity's public key is
 * taken whatever its chain, name or dates say (as core/tls.c's
 * opportunistic client does). */
typedef struct {
	const br_x509_class *vtable;
	br_x509_decoder_context dc;
	unsigned ncerts;
} anykey;

static void ak_start_chain(const br_x509_class **ctx, const char *name)
{
	anykey *ak = (anykey *)ctx;

	(void)name;
	ak->ncerts = 0;
	br_x509_decoder_init(&ak->dc, NULL, NULL);
}

static void ak_start_cert(const br_x509_class **ctx, uint32_t length)
{
	(void)ctx;
	(void)length;
}

static void ak_append(const br_x509_class **ctx, const unsigned char *buf,
		      size_t len)
{
	anykey *ak = (anykey *)ctx;

	if (ak->ncerts == 0)
		br_x509_decoder_push(&ak->dc, buf, len);
}

static void ak_end_cert(const br_x509_class **ctx)
{
	((anykey *)ctx)->ncerts++;
}

static unsigned ak_end_chain(const br_x509_class **ctx)
{
	anykey *ak = (anykey *)ctx;

	return ak->ncerts == 0 ? BR_ERR_X509_EMPTY_CHAIN
			       : (unsigned)br_x509_decoder_last_error(&ak->dc);
}

static const br_x509_pkey *ak_get_pkey(const br_x509_class *const *ctx,
				       unsigned *usages)
{
	anykey *ak = (anykey *)ctx;

	if (usages != NULL)
		*usages = BR_KEYTYPE_KEYX | BR_KEYTYPE_SIGN;
	return br_x509_decoder_get_pkey(&ak->dc);
}

static const br_x509_class anykey_vtable = {
    sizeof(anykey), ak_start_chain, ak_start_cert, ak_append,
    ak_end_cert,    ak_end_chain,   ak_get_pkey};

typedef struct {
	uv_write_t req;
	char text[];
} wreq;

struct tls {
	br_ssl_client_context cc;
	anykey x509;
	unsigned char io[BR_SSL_BUFSIZE_BIDI];
	char *out; /* plaintext the engine has not taken yet */
	size_t outlen, outoff, outcap;
	char *w; /* a wreq: the records one pump collected, to write */
	size_t wlen, wcap;
	size_t cinlen; /* ciphertext read, not taken by the engine yet */
	char cin[65536];
};

/* Appends n octets to a buffer that grows by doubling. */
static void grow_add(char **buf, size_t *len, size_t *cap, size_t head,
		     const void *p, size_t n)
{
	size_t want = head + *len + n;

	if (n == 0)
		return;
	if (want > *cap) {
		*cap = *cap * 2 > want ? *cap * 2 : want;
		*buf = realloc(*buf, *cap);
		if (!*buf)
			abort();
	}
	memcpy(*buf + head + *len, p, n);
	*len += n;
}

static void on_write(uv_write_t *req, int status);

/* Moves data through c's engine until it can do no more: plaintext
 * queued by sendv in, records out (collected, then written at once) and,
 * with `in`, ciphertext read in and plaintext out into c->buf. Without
 * `in` c->buf is left alone: a parser may be reading it. Returns 0, 1
 * when the server has closed TLS cleanly (close_notify: what came before
 * it is in c->buf), or -1 on an error (the session is being closed). */
static int tls_pump(conn *c, int in)
{
	struct tls *t = c->tls;
	br_ssl_engine_context *e = &t->cc.eng;
	unsigned char *b;
	unsigned st;
	size_t n;
	uv_buf_t buf;
	wreq *w;
	int r;

	for (;;) {
		st = br_ssl_engine_current_state(e);
		if (st & BR_SSL_CLOSED) {
			if (br_ssl_engine_last_error(e) == BR_ERR_OK)
				return 1;
			errorf(c, "TLS error %d", br_ssl_engine_last_error(e));
			conn_close(c);
			return -1;
		}
		if (st & BR_SSL_SENDREC) {
			b = br_ssl_engine_sendrec_buf(e, &n);
			grow_add(&t->w, &t->wlen, &t->wcap, sizeof(wreq), b, n);
			br_ssl_engine_sendrec_ack(e, n);
		} else if (in && (st & BR_SSL_RECVAPP)) {
			b = br_ssl_engine_recvapp_buf(e, &n);
			grow_add(&c->buf, &c->len, &c->cap, 0, b, n);
			br_ssl_engine_recvapp_ack(e, n);
		} else if (t->outoff < t->outlen && (st & BR_SSL_SENDAPP)) {
			b = br_ssl_engine_sendapp_buf(e, &n);
			if (n > t->outlen - t->outoff)
				n = t->outlen - t->outoff;
			memcpy(b, t->out + t->outoff, n);
			br_ssl_engine_sendapp_ack(e, n);
			t->outoff += n;
			if (t->outoff == t->outlen) {
				t->outoff = t->outlen = 0;
				br_ssl_engine_flush(e, 0);
			}
		} else if (in && t->cinlen > 0 && (st & BR_SSL_RECVREC)) {
			b = br_ssl_engine_recvrec_buf(e, &n);
			if (n > t->cinlen)
				n = t->cinlen;
			memcpy(b, t->cin, n);
			br_ssl_engine_recvrec_ack(e, n);
			memmove(t->cin, t->cin + n, t->cinlen - n);
			t->cinlen -= n;
		} else {
			break;
		}
	}
	if (t->wlen == 0)
		return 0;
	w = (wreq *)t->w; /* malloc'd: aligned for any type */
	buf = uv_buf_init(w->text, (unsigned)t->wlen);
	t->w = NULL;
	t->wlen = t->wcap = 0;
	r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write);
	if (r < 0) {
		free(w);
		errorf(c, "write: %s", uv_strerror(r));
		conn_close(c);
		return -1;
	}
	return 0;
}

/* Begins TLS on c: its ClientHello goes out. */
static void tls_start(conn *c)
{
	br_x509_minimal_context unused; /* init_full's; anykey replaces it */
	struct tls *t = calloc(1, sizeof *t);

	if (!t)
		abort();
	c->tls = t;
	br_ssl_client_init_full(&t->cc, &unused, NULL, 0);
	t->x509.vtable = &anykey_vtable;
	br_ssl_engine_set_x509(&t->cc.eng, &t->x509.vtable);
	br_ssl_engine_set_buffer(&t->cc.eng, t->io, sizeof t->io, 1);
	if (!br_ssl_client_reset(&t->cc, TLS_NAME, 0)) {
		errorf(c, "TLS reset failed: %d",
		       br_ssl_engine_last_error(&t->cc.eng));
		conn_close(c);
		return;
	}
	tls_pump(c, 0);
}

static void tls_free(struct tls *t)
{
	if (t) {
		free(t->out);
		free(t->w);
		free(t);
	}
}

/* ---- writing ------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status)
{
	conn *c = req->handle->data;

	if (status < 0 && !c->closing)
		errorf(c, "write: %s", uv_strerror(status));
	free(req);
}

/* Sends `text` (copied) followed by `extra` (not copied: static data; over
 * TLS both are copied into the engine's plaintext queue). */
static void sendv(conn *c, const char *text, size_t n, const char *extra,
		  size_t xn)
{
	wreq *w;
	uv_buf_t bufs[2];
	unsigned nb = 0;
	int r;

	if (c->tls) {
		struct tls *t = c->tls;

		grow_add(&t->out, &t->outlen, &t->outcap, 0, text, n);
		grow_add(&t->out, &t->outlen, &t->outcap, 0, extra, xn);
		tls_pump(c, 0);
		return;
	}
	w = malloc(sizeof *w + n + 1);
	if (!w)
		abort();
	if (n) {
		memcpy(w->text, text, n);
		bufs[nb++] = uv_buf_init(w->text, (unsigned)n);
	}
	if (xn)
		bufs[nb++] = uv_buf_init((char *)extra, (unsigned)xn);
	r = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, nb, on_write);
	if (r < 0) {
		free(w);
		errorf(c, "write: %s", uv_strerror(r));
		conn_close(c);
	}
}

static void sendf(conn *c, const char *fmt, ...)
{
	char line[600];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof line)
		abort();
	sendv(c, line, (size_t)n, NULL, 0);
}

/* A session in idle mode got its greeting. */
static void greeted(conn *c)
{
	c->state = X_IDLE;
	G.greeted++;
	G.pending--;
	launch();
}

/* ---- SMTP ------------------------------------------------------------------
 */

static void smtp_next_message(conn *c)
{
	int stop =
	    G.mode == M_SMTP ? uv_hrtime() >= G.deadline : c->sent >= G.peruser;

	if (stop) {
		sendf(c, "QUIT\r\n");
		c->state = S_QUIT;
		return;
	}
	if (G.mode == M_FILL) { /* one pipelined group, DATA last */
		sendf(c,
		      "MAIL FROM:<bench@localhost>\r\n"
		      "RCPT TO:<u%d@localhost>\r\nDATA\r\n",
		      c->user);
	} else {
		c->user = (int)(G.rr++ % G.nusers) + 1;
		sendf(c, "MAIL FROM:<bench@localhost>\r\n");
	}
	c->state = S_MAIL;
}

static void smtp_reply(conn *c, int code, const char *line, size_t n)
{
	int piped = G.mode == M_FILL;

	/* fill is set-up, not measurement: a temporary failure is retried
	 * on a new session, as a real client would later */
	if (piped && code / 100 == 4 && c->state != S_GREET &&
	    G.retries < MAX_RETRIES) {
		if (G.retries++ < MAX_ERRMSG)
			fprintf(stderr,
				"loadgen: session %d (%s): \"%.*s\", "
				"retrying on a new session\n",
				c->id, state_name[c->state],
				(int)(n > 200 ? 200 : n), line);
		c->retry = 1;
		return conn_close(c);
	}
	switch (c->state) {
	case S_GREET:
		if (code != 220)
			return bad_reply(c, "220 greeting", line, n);
		if (G.mode == M_IDLE)
			return greeted(c);
		sendf(c, "EHLO loadgen.bench\r\n");
		c->state = S_EHLO;
		return;
	case S_EHLO:
		if (code != 250)
			return bad_reply(c, "250 to EHLO", line, n);
		if (G.tls) {
			sendf(c, "STARTTLS\r\n");
			c->state = S_STARTTLS;
			return;
		}
		return smtp_next_message(c);
	case S_STARTTLS:
		if (code != 220)
			return bad_reply(c, "220 to STARTTLS", line, n);
		c->state = S_HANDSHAKE; /* then EHLO again: see on_read */
		return tls_start(c);
	case S_EHLO_TLS:
		if (code != 250)
			return bad_reply(c, "250 to EHLO after STARTTLS", line,
					 n);
		return smtp_next_message(c);
	case S_MAIL:
		if (code != 250)
			return bad_reply(c, "250 to MAIL", line, n);
		if (!piped)
			sendf(c, "RCPT TO:<u%d@%s>\r\n", c->user,
			      G.rcpt_domain);
		c->state = S_RCPT;
		return;
	case S_RCPT:
		if (code != 250)
			return bad_reply(c, "250 to RCPT", line, n);
		if (!piped)
			sendf(c, "DATA\r\n");
		c->state = S_DATA;
		return;
	case S_DATA:
		if (code != 354)
			return bad_reply(c, "354 to DATA", line, n);
		sendv(c, NULL, 0, G.body, G.bodylen + 3);
		c->state = S_BODY;
		return;
	case S_BODY:
		if (code != 250)
			return bad_reply(c, "250 after the message", line, n);
		G.msgs++;
		c->sent++;
		return smtp_next_message(c);
	case S_QUIT:
		if (code != 221)
			return bad_reply(c, "221 to QUIT", line, n);
		c->state = X_DONE;
		return conn_close(c);
	default:
		return bad_reply(c, "no reply", line, n);
	}
}

/* One complete, possibly multi-line reply at the start of c->buf: returns
 * the octets it takes, 0 when more input is needed (or on error). */
static size_t smtp_parse(conn *c)
{
	size_t pos = 0, n;
	char *line, *eol;

	for (;;) {
		line = c->buf + pos;
		eol = memmem(line, c->len - pos, "\r\n", 2);
		if (!eol)
			return 0;
		n = (size_t)(eol - line);
		if (n < 3 || !isdigit((unsigned char)line[0]) ||
		    !isdigit((unsigned char)line[1]) ||
		    !isdigit((unsigned char)line[2]) ||
		    (n > 3 && line[3] != ' ' && line[3] != '-')) {
			bad_reply(c, "an SMTP reply line", line, n);
			return 0;
		}
		pos += n + 2;
		if (n > 3 && line[3] == '-')
			continue; /* the reply goes on */
		smtp_reply(c,
			   (line[0] - '0') * 100 + (line[1] - '0') * 10 +
			       line[2] - '0',
			   line, n);
		return pos;
	}
}

/* ---- POP3 ------------------------------------------------------------------
 */

static void pop3_send_retrs(conn *c)
{
	char cmds[RETR_WINDOW * 24];
	size_t n = 0;

	while (c->nsent < c->nmsg && c->nsent - c->nrecv < RETR_WINDOW)
		n += (size_t)sprintf(cmds + n, "RETR %ld\r\n", ++c->nsent);
	if (n)
		sendv(c, cmds, n, NULL, 0);
}

static void pop3_quit(conn *c)
{
	sendf(c, "QUIT\r\n");
	c->state = P_QUIT;
}

static void pop3_reply(conn *c, int ok, const char *line, size_t n)
{
	if (!ok || c->state == X_IDLE)
		return bad_reply(c, c->state == X_IDLE ? "nothing" : "+OK",
				 line, n);
	switch (c->state) {
	case P_GREET:
		if (G.mode == M_IDLE)
			return greeted(c);
		sendf(c, "USER u%d@localhost\r\n", c->user);
		c->state = P_USER;
		return;
	case P_USER:
		sendf(c, "PASS %s\r\n", G.password);
		c->state = P_PASS;
		return;
	case P_PASS:
		sendf(c, "STAT\r\n");
		c->state = P_STAT;
		return;
	case P_STAT:
		c->nmsg = reply_num(line, n);
		if (c->nmsg < 0)
			return bad_reply(c, "+OK <count> <size>", line, n);
		if (c->nmsg == 0)
			return pop3_quit(c);
		c->state = P_RETR;
		/* Retrieval is timed on its own: every session waits until all
		 * have logged in (password hashing is not what we measure). */
		if (++G.logged_in < G.target)
			return;
		G.t_retr = uv_hrtime();
		for (int i = 0; i < G.target; i++)
			if (G.conns[i] != NULL && G.conns[i]->state == P_RETR)
				pop3_send_retrs(G.conns[i]);
		return;
	case P_QUIT:
		c->state = X_DONE;
		return conn_close(c);
	default:
		return bad_reply(c, "no reply", line, n);
	}
}

/* A whole RETR answer arrived: status line `line`, `body` octets. */
static void pop3_retr_done(conn *c, const char *line, size_t n, size_t body)
{
	long claimed = reply_num(line, n);

	c->nrecv++;
	/* dot-stuffing only adds octets: fewer than announced is truncation */
	if (claimed >= 0 && body < (size_t)claimed) {
		errorf(c, "RETR %ld: %zu octets received, %ld announced",
		       c->nrecv, body, claimed);
		return conn_close(c);
	}
	G.msgs++;
	G.bytes += body;
	if (c->nrecv == c->nmsg)
		pop3_quit(c);
	else
		pop3_send_retrs(c);
}

static size_t pop3_parse(conn *c)
{
	char *b = c->buf, *eol = memmem(b, c->len, "\r\n", 2), *end;
	size_t n, from;
	int ok;

	if (!eol)
		return 0;
	n = (size_t)(eol - b);
	ok = n >= 3 && memcmp(b, "+OK", 3) == 0;
	if (!ok && !(n >= 4 && memcmp(b, "-ERR", 4) == 0)) {
		bad_reply(c, "+OK or -ERR", b, n);
		return 0;
	}
	if (c->state != P_RETR || !ok) {
		pop3_reply(c, ok, b, n);
		return n + 2;
	}
	/* The body ends at the first CRLF "." CRLF, counting the status
	 * line's CRLF (empty body); go on where the last search stopped. */
	from = c->scan > n ? c->scan : n;
	end = memmem(b + from, c->len - from, "\r\n.\r\n", 5);
	if (!end) {
		c->scan = c->len - 4;
		return 0;
	}
	c->scan = 0;
	pop3_retr_done(c, b, n, (size_t)(end + 2 - (eol + 2)));
	return (size_t)(end + 5 - b);
}

/* ---- sessions --------------------------------------------------------------
 */

static void close_any(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

/* No session left (and, in idle mode, told to stop): close the rest so
 * uv_run returns. */
static void finish_if_done(void)
{
	if (G.active == 0 && (G.mode != M_IDLE || G.stopping))
		uv_walk(G.loop, close_any, NULL);
}

static void on_closed(uv_handle_t *h)
{
	conn *c = h->data;

	G.conns[c->id] = NULL;
	if (c->retry && !G.stopping)
		start_conn(c->id)->sent = c->sent;
	free(c->buf);
	tls_free(c->tls);
	free(c);
	G.active--;
	finish_if_done();
}

static void conn_close(conn *c)
{
	if (c->closing)
		return;
	c->closing = 1;
	if (G.mode == M_IDLE && !G.stopping) {
		if (c->state == X_IDLE) {
			G.dropped++;
		} else {
			G.failed++;
			G.pending--;
			launch();
		}
	}
	uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	conn *c = h->data;
	size_t cap;

	(void)suggested;
	if (c->tls) { /* ciphertext, for the engine */
		*buf = uv_buf_init(
		    c->tls->cin + c->tls->cinlen,
		    (unsigned)(sizeof c->tls->cin - c->tls->cinlen));
		return;
	}
	if (c->cap - c->len < G.chunk) {
		cap = c->cap * 2 > c->len + G.chunk ? c->cap * 2
						    : c->len + G.chunk;
		c->buf = realloc(c->buf, cap);
		if (!c->buf)
			abort();
		c->cap = cap;
	}
	*buf = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	conn *c = s->data;
	int tls_closed = 0;
	size_t used;

	(void)buf;
	if (c->closing)
		return;
	if (nread < 0) {
		if (nread == UV_EOF)
			errorf(c, "connection closed by the server");
		else
			errorf(c, "read: %s", uv_strerror((int)nread));
		return conn_close(c);
	}
	if (c->tls) {
		c->tls->cinlen += (size_t)nread;
		if ((tls_closed = tls_pump(c, 1)) < 0)
			return;
		if (c->state == S_HANDSHAKE &&
		    (br_ssl_engine_current_state(&c->tls->cc.eng) &
		     BR_SSL_SENDAPP)) {
			sendf(c, "EHLO loadgen.bench\r\n"); /* RFC 3207 4.2 */
			c->state = S_EHLO_TLS;
		}
	} else {
		c->len += (size_t)nread;
	}
	while (!c->closing && c->len > 0) {
		used = G.pop3 ? pop3_parse(c) : smtp_parse(c);
		if (used == 0)
			break;
		memmove(c->buf, c->buf + used, c->len - used);
		c->len -= used;
	}
	if (tls_closed && !c->closing) { /* a close_notify before QUIT's 221 */
		errorf(c, "TLS closed by the server");
		conn_close(c);
	}
}

static void on_connect(uv_connect_t *req, int status)
{
	conn *c = req->handle->data;
	int r = status;

	if (c->closing)
		return;
	if (r == 0) {
		uv_tcp_nodelay(&c->tcp, 1);
		r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
	}
	if (r == 0 && G.pop3 && G.tls) /* pop3s: the handshake first */
		tls_start(c);
	if (r < 0) {
		errorf(c, "connect: %s", uv_strerror(r));
		conn_close(c);
	}
}

static conn *start_conn(int id)
{
	conn *c = calloc(1, sizeof *c);
	int r;

	if (!c)
		abort();
	c->id = id;
	c->user = id % G.nusers + 1;
	c->state = G.pop3 ? P_GREET : S_GREET;
	c->tcp.data = c;
	G.conns[id] = c;
	G.active++;
	G.pending++;
	uv_tcp_init(G.loop, &c->tcp);
	r = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&G.addr,
			   on_connect);
	if (r < 0) {
		errorf(c, "connect: %s", uv_strerror(r));
		conn_close(c);
	}
	return c;
}

/* Starts sessions up to the target; idle mode keeps a bounded number of
 * them connecting at once so the listen backlog never overflows. */
static void launch(void)
{
	while (!G.stopping && G.launched < G.target &&
	       (G.mode != M_IDLE || G.pending < IDLE_PENDING))
		start_conn(G.launched++);
	if (G.mode == M_IDLE && !G.ready && G.greeted + G.failed == G.target) {
		G.ready = 1;
		printf("ready greeted=%d failed=%d\n", G.greeted, G.failed);
		fflush(stdout);
	}
}

static void stop_all(void)
{
	G.stopping = 1;
	for (int i = 0; i < G.target; i++)
		if (G.conns[i])
			conn_close(G.conns[i]);
	finish_if_done();
}

static void on_watchdog(uv_timer_t *t)
{
	(void)t;
	errorf(NULL, "time limit reached, %d sessions still open", G.active);
	stop_all();
}

static void on_signal(uv_signal_t *s, int sig)
{
	(void)s;
	(void)sig;
	stop_all();
}

static void on_stdin_alloc(uv_handle_t *h, size_t sug, uv_buf_t *buf)
{
	static char junk[256];

	(void)h;
	(void)sug;
	*buf = uv_buf_init(junk, sizeof junk);
}

static void on_stdin(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	(void)s;
	(void)buf;
	if (nread < 0)
		stop_all();
}

/* ---- main ------------------------------------------------------------------
 */

static void usage(void)
{
	fprintf(stderr,
		"usage: loadgen smtp|smtp-starttls HOST PORT CONC SECONDS "
		"MSGSIZE NRCPTUSERS [RCPTDOMAIN]\n"
		"       loadgen fill HOST PORT NUSERS PERUSER MSGSIZE\n"
		"       loadgen pop3|pop3s HOST PORT CONC NUSERS PASSWORD\n"
		"       loadgen idle smtp|pop3 HOST PORT N\n"
		"       loadgen body MSGSIZE\n");
	exit(2);
}

static long num(const char *s, long min, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max) {
		fprintf(stderr, "loadgen: bad number \"%s\" (%ld..%ld)\n", s,
			min, max);
		exit(2);
	}
	return v;
}

static void target(const char *host, const char *port)
{
	if (uv_ip4_addr(host, (int)num(port, 1, 65535), &G.addr) < 0) {
		fprintf(stderr, "loadgen: bad IPv4 address \"%s\"\n", host);
		exit(2);
	}
}

int main(int argc, char **argv)
{
	const char *m = argc > 1 ? argv[1] : "";
	double secs = 0, limit = 1800, t;
	struct rlimit rl;
	uint64_t t0;

	signal(SIGPIPE, SIG_IGN);
	G.chunk = 4096;
	G.nusers = 1;
	if (!strcmp(m, "body") && argc == 3) {
		G.body =
		    make_body((size_t)num(argv[2], 1, 1L << 30), &G.bodylen);
		return fwrite(G.body, 1, G.bodylen, stdout) != G.bodylen;
	} else if ((!strcmp(m, "smtp") || !strcmp(m, "smtp-starttls")) &&
		   (argc == 8 || argc == 9)) {
		G.rcpt_domain = argc == 9 ? argv[8] : "localhost";
		G.mode = M_SMTP;
		G.tls = !strcmp(m, "smtp-starttls");
		target(argv[2], argv[3]);
		G.target = (int)num(argv[4], 1, 10000);
		secs = (double)num(argv[5], 1, 3600);
		G.body =
		    make_body((size_t)num(argv[6], 1, 1L << 30), &G.bodylen);
		G.nusers = (int)num(argv[7], 1, 100000);
		limit = secs + 120;
	} else if (!strcmp(m, "fill") && argc == 7) {
		G.mode = M_FILL;
		target(argv[2], argv[3]);
		G.target = G.nusers = (int)num(argv[4], 1, 10000);
		G.peruser = num(argv[5], 0, 10000000);
		G.body =
		    make_body((size_t)num(argv[6], 1, 1L << 30), &G.bodylen);
	} else if ((!strcmp(m, "pop3") || !strcmp(m, "pop3s")) && argc == 7) {
		G.mode = M_POP3;
		G.pop3 = 1;
		G.tls = !strcmp(m, "pop3s");
		G.chunk = 65536;
		target(argv[2], argv[3]);
		G.target = (int)num(argv[4], 1, 10000);
		G.nusers = (int)num(argv[5], 1, 100000);
		G.password = argv[6];
		if (G.target > G.nusers) {
			fprintf(stderr, "loadgen: pop3 needs CONC <= NUSERS "
					"(one client per mailbox)\n");
			return 2;
		}
	} else if (!strcmp(m, "idle") && argc == 6 &&
		   (!strcmp(argv[2], "smtp") || !strcmp(argv[2], "pop3"))) {
		G.mode = M_IDLE;
		G.pop3 = !strcmp(argv[2], "pop3");
		G.chunk = 512;
		target(argv[3], argv[4]);
		G.target = (int)num(argv[5], 1, 1000000);
		limit = 3600;
	} else {
		usage();
	}

	/* one descriptor per session: take what the hard limit allows */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	G.loop = uv_default_loop();
	G.conns = calloc((size_t)G.target, sizeof *G.conns);
	if (!G.conns)
		abort();
	uv_timer_init(G.loop, &G.watchdog);
	uv_timer_start(&G.watchdog, on_watchdog, (uint64_t)(limit * 1000), 0);
	if (G.mode == M_IDLE) {
		uv_signal_init(G.loop, &G.sigterm);
		uv_signal_start(&G.sigterm, on_signal, SIGTERM);
		uv_signal_init(G.loop, &G.sigint);
		uv_signal_start(&G.sigint, on_signal, SIGINT);
		if (uv_guess_handle(0) == UV_NAMED_PIPE &&
		    uv_pipe_init(G.loop, &G.in, 0) == 0 &&
		    uv_pipe_open(&G.in, 0) == 0)
			uv_read_start((uv_stream_t *)&G.in, on_stdin_alloc,
				      on_stdin);
	}

	t0 = uv_hrtime();
	G.deadline = t0 + (uint64_t)(secs * 1e9);
	launch();
	uv_run(G.loop, UV_RUN_DEFAULT);
	t = (double)(uv_hrtime() - (G.t_retr ? G.t_retr : t0)) / 1e9;

	switch (G.mode) {
	case M_SMTP:
	case M_FILL:
		printf("mode=%s conc=%d msgs=%ld errors=%ld retries=%ld "
		       "secs=%.3f msgs_per_s=%.1f\n",
		       m, G.target, G.msgs, G.errors, G.retries, t,
		       (double)G.msgs / t);
		break;
	case M_POP3:
		printf("mode=%s conc=%d msgs=%ld bytes=%llu errors=%ld "
		       "secs=%.3f msgs_per_s=%.1f mb_per_s=%.2f "
		       "mib_per_s=%.2f\n",
		       m, G.target, G.msgs, (unsigned long long)G.bytes,
		       G.errors, t, (double)G.msgs / t,
		       (double)G.bytes / 1e6 / t,
		       (double)G.bytes / 1048576.0 / t);
		break;
	case M_IDLE:
		if (!G.ready)
			printf("ready greeted=%d failed=%d\n", G.greeted,
			       G.failed);
		printf("mode=idle greeted=%d failed=%d dropped=%d "
		       "errors=%ld\n",
		       G.greeted, G.failed, G.dropped, G.errors);
		break;
	}
	uv_loop_close(G.loop);
	free(G.conns);
	free(G.body);
	return G.errors ? 1 : 0;
}
