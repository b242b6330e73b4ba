/* test_conn.c - loop tests of the connection layer (core/conn.c) over real
 * loopback sockets.
 *
 * A tiny line protocol runs on conn_listen(); a client thread talks to it
 * with plain blocking sockets while the loop runs in the test's thread.
 * When the client is done it asks the loop (through a uv_async) to call
 * conn_shutdown(); the loop must then run dry, and uv_loop_close() must
 * succeed: no live handle, and (under ASan) no leak.
 *
 * The protocol answers each line of at most TP_LINE_MAX octets:
 *   "<text>" CRLF  -> "LINE <text>"      "<text>" LF -> "BARELF <text>"
 *   too long       -> "TOOLONG"          "QUIT"      -> "BYE", then closes
 *   "PAUSE [ms]"   -> conn_pause(); after ms (10) "RESUMED", conn_resume()
 *   "S n len"      -> conn_stream(): n lines "S<i>" padded with dots to len
 *                     octets (CRLF included), one per call of the producer
 * It greets with "HI", says "IDLE" on CONN_TIMEOUT, "LIFE" on
 * CONN_LIFETIME and "SHUTDOWN" on CONN_SHUTDOWN, and closes after them, as
 * conn.h asks.
 *
 * The client thread never asserts (cmocka cannot fail from another
 * thread): it records transcripts and its first error, and the test
 * checks them once the loop is closed. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/conn.h"

#define TP_LINE_MAX	16    /* octets per line, line end included */
#define CLIENT_WAIT_MS	10000 /* the client gives up on a silent server */
#define PIECE_GAP_US	2000  /* between pieces, so each is its own read */
#define STREAM_LINE_MAX 65536 /* octets per streamed line, at most */

/* --- the test protocol -------------------------------------------------- */

struct tp_session {
	struct conn *c;
	uv_timer_t resume; /* initialised on the first PAUSE */
	bool has_timer;
	unsigned stream_next, stream_n, stream_len;
};

static struct {
	int opened, freed, timeouts, shutdowns, lifetimes;
	_Atomic unsigned
	    pieces; /* stream lines produced (read by the client) */
} stats;

static uv_loop_t *tp_loop; /* the loop run_server runs */

static void *tp_open(struct conn *c, void *ctx)
{
	struct tp_session *s = calloc(1, sizeof *s);

	(void)ctx;
	if (s == NULL)
		abort();
	s->c = c;
	stats.opened++;
	conn_puts(c, "HI\r\n");
	return s;
}

static void on_resume_timer(uv_timer_t *t)
{
	struct tp_session *s = t->data;

	conn_puts(s->c, "RESUMED\r\n");
	conn_resume(s->c); /* may free the session: nothing after this */
}

static void tp_pause(struct tp_session *s, const char *arg)
{
	if (!s->has_timer) {
		uv_timer_init(tp_loop, &s->resume);
		s->resume.data = s;
		s->has_timer = true;
	}
	conn_pause(s->c);
	uv_timer_start(&s->resume, on_resume_timer,
		       *arg == ' ' ? strtoull(arg + 1, NULL, 10) : 10, 0);
}

static bool tp_stream_more(struct conn *c, void *arg)
{
	struct tp_session *s = arg;
	static char line[STREAM_LINE_MAX];
	size_t len = s->stream_len;
	int n = snprintf(line, len, "S%u", s->stream_next++);

	memset(line + n, '.', len - (size_t)n - 2);
	memcpy(line + len - 2, "\r\n", 2);
	conn_write(c, line, len);
	stats.pieces++;
	return s->stream_next == s->stream_n;
}

static void tp_event(struct conn *c, void *session, enum conn_event ev)
{
	struct tp_session *s = session;
	char *line;
	size_t len;

	switch (ev) {
	case CONN_OPEN:
	case CONN_TLS_READY:
		return;
	case CONN_LIFETIME:
		stats.lifetimes++;
		conn_puts(c, "LIFE\r\n");
		conn_close(c);
		return;
	case CONN_TIMEOUT:
		stats.timeouts++;
		conn_puts(c, "IDLE\r\n");
		conn_close(c);
		return;
	case CONN_SHUTDOWN:
		stats.shutdowns++;
		conn_puts(c, "SHUTDOWN\r\n");
		conn_close(c);
		return;
	case CONN_DATAIN:
		break;
	}
	for (;;) {
		switch (conn_getline(c, TP_LINE_MAX, &line, &len)) {
		case CONN_AGAIN:
			return;
		case CONN_LINE:
			if (strcmp(line, "QUIT") == 0) {
				conn_puts(c, "BYE\r\n");
				conn_close(c);
				return;
			}
			if (strncmp(line, "PAUSE", 5) == 0) {
				tp_pause(s, line + 5);
				return;
			}
			if (strncmp(line, "S ", 2) == 0) {
				s->stream_next = 0;
				s->stream_n =
				    (unsigned)strtoul(line + 2, &line, 10);
				s->stream_len =
				    (unsigned)strtoul(line, NULL, 10);
				if (s->stream_len < 8 ||
				    s->stream_len > STREAM_LINE_MAX)
					abort(); /* a broken test */
				conn_stream(c, tp_stream_more, s);
				continue; /* the next line waits for the end */
			}
			conn_printf(c, "LINE %s\r\n", line);
			break;
		case CONN_LINE_BARELF:
			conn_printf(c, "BARELF %s\r\n", line);
			break;
		case CONN_LINE_TOOLONG:
			conn_puts(c, "TOOLONG\r\n");
			break;
		}
	}
}

static void tp_free_timer(uv_handle_t *h)
{
	free(h->data);
}

static void tp_free(void *session)
{
	struct tp_session *s = session;

	stats.freed++;
	if (s->has_timer)
		uv_close((uv_handle_t *)&s->resume, tp_free_timer);
	else
		free(s);
}

static const struct conn_proto tp_proto = {
    .name = "test",
    .open = tp_open,
    .event = tp_event,
    .free = tp_free,
};

/* --- the loop side ------------------------------------------------------ */

static struct {
	uv_loop_t *loop;
	uv_async_t stop;
	int port;
	bool stop_sent; /* client thread only */
	int done_calls; /* conn_shutdown's done */
	char err[512];	/* the client's first error */
	void (*client)(void *arg);
	void *arg;
} h;

/* conn_shutdown's done: static data only, as conn.c keeps the pointer. */
static void on_all_closed(void *arg)
{
	(void)arg;
	h.done_calls++;
}

static void on_stop(uv_async_t *a)
{
	conn_shutdown(on_all_closed, NULL);
	uv_close((uv_handle_t *)a, NULL);
}

/* Called once from the client thread: shut the server down. */
static void request_stop(void)
{
	if (!h.stop_sent) {
		h.stop_sent = true;
		uv_async_send(&h.stop);
	}
}

static void *client_main(void *arg)
{
	(void)arg;
	h.client(h.arg);
	request_stop();
	return NULL;
}

/* A port that was free a moment ago. */
static int free_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof sa;
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	assert_true(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	close(fd);
	assert_true(port > 0);
	return port;
}

/* Runs a listener with cfg's timeout and per-IP limit and the client in
 * its thread, until the client is done and conn_shutdown() has closed
 * everything. Then checks the loop closes clean and the client had no
 * error. */
static unsigned next_lifetime; /* max_session_time of the next run */

static void run_server(unsigned timeout, unsigned max_per_ip,
		       void (*client)(void *), void *arg)
{
	struct config_listener cfg = {.timeout = timeout,
				      .max_conn_per_ip = max_per_ip,
				      .max_session_time = next_lifetime};
	struct conn_listen_opts opts = {.proto = &tp_proto,
					.cfg = &cfg,
					.busy_reply = "BUSY\r\n",
					.full_reply = "FULL\r\n"};
	pthread_t th;
	int r = -1;

	memset(&stats, 0, sizeof stats);
	memset(&h, 0, sizeof h);
	h.client = client;
	h.arg = arg;
	h.loop = malloc(sizeof *h.loop); /* leaked if it does not close */
	assert_non_null(h.loop);
	assert_int_equal(uv_loop_init(h.loop), 0);
	tp_loop = h.loop;
	next_lifetime = 0;
	for (int attempt = 0; attempt < 2 && r != 0; attempt++) {
		h.port = free_port();
		snprintf(cfg.listen, sizeof cfg.listen, "127.0.0.1:%d", h.port);
		r = conn_listen(h.loop, &opts);
	}
	assert_int_equal(r, 0);
	assert_int_equal(uv_async_init(h.loop, &h.stop, on_stop), 0);
	assert_int_equal(pthread_create(&th, NULL, client_main, NULL), 0);
	assert_int_equal(uv_run(h.loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(pthread_join(th, NULL), 0);

	/* Everything closed: no connection, no handle, every session freed
	 * once, and conn_shutdown reported its end once. */
	assert_int_equal(conn_count(), 0);
	assert_int_equal(uv_loop_close(h.loop), 0);
	free(h.loop);
	h.loop = NULL;
	assert_int_equal(stats.freed, stats.opened);
	if (h.done_calls != 1)
		print_error("conn_shutdown's done ran %d times\n",
			    h.done_calls);
	assert_int_equal(h.done_calls, 1);
	if (h.err[0] != '\0')
		print_error("client: %s\n", h.err);
	assert_string_equal(h.err, "");
}

/* --- the client side ---------------------------------------------------- */

static void cfail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void cfail(const char *fmt, ...)
{
	va_list ap;

	if (h.err[0] != '\0')
		return;
	va_start(ap, fmt);
	vsnprintf(h.err, sizeof h.err, fmt, ap);
	va_end(ap);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A growing byte string. */
struct buf {
	char *p;
	size_t n, cap;
};

static void buf_add(struct buf *b, const char *p, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		b->cap = 2 * (b->n + n + 1);
		b->p = realloc(b->p, b->cap);
		if (b->p == NULL)
			abort();
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
	b->p[b->n] = '\0';
}

static void buf_free(struct buf *b)
{
	free(b->p);
	memset(b, 0, sizeof *b);
}

static int cl_connect(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons((uint16_t)h.port)};
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	if (fd < 0) {
		cfail("socket: %s", strerror(errno));
		return -1;
	}
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		cfail("connect: %s", strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* Sends p[0..n) while taking in whatever the server answers meanwhile
 * (a big input can fill both directions). Returns false on error or EOF
 * before all was sent. */
static bool cl_send(int fd, const char *p, size_t n, struct buf *in)
{
	char tmp[65536];

	while (n > 0) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN | POLLOUT};
		ssize_t r;

		if (poll(&pfd, 1, CLIENT_WAIT_MS) <= 0) {
			cfail("send: server stuck");
			return false;
		}
		if (pfd.revents & POLLIN) {
			r = recv(fd, tmp, sizeof tmp, MSG_DONTWAIT);
			if (r == 0) {
				cfail("send: EOF with %zu octets unsent", n);
				return false;
			}
			if (r > 0)
				buf_add(in, tmp, (size_t)r);
		}
		if (pfd.revents & (POLLOUT | POLLERR | POLLHUP)) {
			r = send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
			if (r < 0 && errno != EAGAIN) {
				cfail("send: %s", strerror(errno));
				return false;
			}
			if (r > 0)
				p += r, n -= (size_t)r;
		}
	}
	return true;
}

/* Reads until EOF. */
static void cl_read_eof(int fd, struct buf *in)
{
	char tmp[65536];

	buf_add(in, "", 0); /* a string even when nothing comes */
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		ssize_t r;

		if (poll(&pfd, 1, CLIENT_WAIT_MS) <= 0) {
			cfail("no EOF after \"%s\"", in->p ? in->p : "");
			return;
		}
		r = recv(fd, tmp, sizeof tmp, 0);
		if (r == 0)
			return;
		if (r < 0) {
			cfail("recv: %s", strerror(errno));
			return;
		}
		buf_add(in, tmp, (size_t)r);
	}
}

/* Reads exactly strlen(want) octets and compares them. */
static void cl_expect(int fd, const char *want)
{
	size_t n = strlen(want), got = 0;
	char tmp[256];

	while (got < n) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		ssize_t r;

		if (poll(&pfd, 1, CLIENT_WAIT_MS) <= 0) {
			cfail("waiting for \"%s\": nothing", want);
			return;
		}
		r = recv(fd, tmp + got, n - got, 0);
		if (r <= 0) {
			cfail("waiting for \"%s\": %s", want,
			      r == 0 ? "EOF" : strerror(errno));
			return;
		}
		got += (size_t)r;
	}
	if (memcmp(tmp, want, n) != 0)
		cfail("want \"%s\", got \"%.*s\"", want, (int)n, tmp);
}

static void cl_send_str(int fd, const char *s)
{
	struct buf ignored = {0};

	cl_send(fd, s, strlen(s), &ignored);
	if (ignored.n > 0)
		cfail("unexpected \"%s\" before sending \"%s\"", ignored.p, s);
	buf_free(&ignored);
}

/* One connection: sends in[0..n) cut at cuts[0..ncuts), a short pause
 * after each piece, and returns everything received until EOF. */
static struct buf converse(const char *in, size_t n, const size_t *cuts,
			   size_t ncuts)
{
	struct buf out = {0};
	size_t start = 0;
	int fd = cl_connect();

	buf_add(&out, "", 0);
	if (fd < 0)
		return out;
	for (size_t k = 0; k <= ncuts; k++) {
		size_t end = k < ncuts ? cuts[k] : n;
		if (!cl_send(fd, in + start, end - start, &out))
			break;
		if (k < ncuts)
			usleep(PIECE_GAP_US);
		start = end;
	}
	cl_read_eof(fd, &out);
	close(fd);
	return out;
}

/* --- conversations, each sent whole, byte by byte, split anywhere ----- */

struct convo_case {
	const char *name;
	const char *in;
	const char *out;
};

static const struct convo_case convo_cases[] = {
    {"three lines", "a\r\nbb\r\nccc\r\nQUIT\r\n",
     "HI\r\nLINE a\r\nLINE bb\r\nLINE ccc\r\nBYE\r\n"},
    {"16 octets fit", "12345678901234\r\nQUIT\r\n",
     "HI\r\nLINE 12345678901234\r\nBYE\r\n"},
    {"17 octets too long", "123456789012345\r\nok\r\nQUIT\r\n",
     "HI\r\nTOOLONG\r\nLINE ok\r\nBYE\r\n"},
    {"two too long",
     "1234567890123456789012345\r\n123456789012345678\n"
     "ok\r\nQUIT\r\n",
     "HI\r\nTOOLONG\r\nTOOLONG\r\nLINE ok\r\nBYE\r\n"},
    {"bare LF", "abc\nd\r\nQUIT\r\n", "HI\r\nBARELF abc\r\nLINE d\r\nBYE\r\n"},
    {"16 octets bare LF", "123456789012345\nQUIT\r\n",
     "HI\r\nBARELF 123456789012345\r\nBYE\r\n"},
    {"empty lines", "\r\n\n\r\nQUIT\r\n",
     "HI\r\nLINE \r\nBARELF \r\nLINE \r\nBYE\r\n"},
    {"CR inside a line", "a\rb\r\r\nQUIT\r\n", "HI\r\nLINE a\rb\r\r\nBYE\r\n"},
    /* Pipelined behind a pause: held back, then answered in order. */
    {"pause pipelined", "PAUSE\r\nx\r\ny\r\nQUIT\r\n",
     "HI\r\nRESUMED\r\nLINE x\r\nLINE y\r\nBYE\r\n"},
    {"two pauses", "PAUSE\r\nx\r\nPAUSE\r\ny\r\nQUIT\r\n",
     "HI\r\nRESUMED\r\nLINE x\r\nRESUMED\r\nLINE y\r\nBYE\r\n"},
    /* Pipelined behind a stream: answered once it is complete. */
    {"stream pipelined", "S 2 8\r\nx\r\nS 1 9\r\nQUIT\r\n",
     "HI\r\nS0....\r\nS1....\r\nLINE x\r\nS0.....\r\nBYE\r\n"},
    {"pause then quit", "a\r\nPAUSE\r\nQUIT\r\n",
     "HI\r\nLINE a\r\nRESUMED\r\nBYE\r\n"},
};

#define CONVO_MAX 64 /* transcripts per case */

struct convo_run {
	const struct convo_case *c;
	struct buf got[CONVO_MAX];
	char how[CONVO_MAX][32];
	size_t n;
};

/* What the client saw, checked once the loop is closed. The teardown
 * frees it, so that a failed assertion leaks nothing. */
static struct {
	struct buf got[4], want;
	double elapsed[4];
	struct convo_run *runs;
	size_t nruns;
} res;

static void convo_client(void *arg)
{
	struct convo_run *runs = arg;

	/* Stops at the first error: a stuck server costs CLIENT_WAIT_MS per
	 * conversation. */
	for (size_t i = 0;
	     i < sizeof convo_cases / sizeof *convo_cases && h.err[0] == '\0';
	     i++) {
		struct convo_run *run = &runs[i];
		const char *in = run->c->in;
		size_t n = strlen(in), cuts[CONVO_MAX];

		/* Whole, byte by byte, then two pieces cut at each offset. */
		run->got[run->n] = converse(in, n, NULL, 0);
		snprintf(run->how[run->n++], 32, "whole");
		for (size_t k = 0; k + 1 < n; k++)
			cuts[k] = k + 1;
		run->got[run->n] = converse(in, n, cuts, n - 1);
		snprintf(run->how[run->n++], 32, "byte by byte");
		for (size_t k = 1; k < n && h.err[0] == '\0'; k++) {
			run->got[run->n] = converse(in, n, &k, 1);
			snprintf(run->how[run->n++], 32, "split at %zu", k);
		}
	}
}

static void test_conversations(void **state)
{
	const size_t ncases = sizeof convo_cases / sizeof *convo_cases;
	struct convo_run *runs = res.runs = calloc(ncases, sizeof *runs);
	size_t conns = 0;

	(void)state;
	assert_non_null(runs);
	res.nruns = ncases;
	for (size_t i = 0; i < ncases; i++) {
		runs[i].c = &convo_cases[i];
		assert_true(strlen(convo_cases[i].in) + 1 <= CONVO_MAX);
	}
	run_server(30, 0, convo_client, runs);
	for (size_t i = 0; i < ncases; i++) {
		for (size_t k = 0; k < runs[i].n; k++) {
			const char *got = runs[i].got[k].p;
			if (strcmp(got, runs[i].c->out) != 0)
				print_error("\"%s\" sent %s: got \"%s\"\n",
					    runs[i].c->name, runs[i].how[k],
					    got);
			assert_string_equal(got, runs[i].c->out);
		}
		conns += runs[i].n;
	}
	assert_int_equal(stats.opened, conns);
	assert_int_equal(stats.timeouts, 0);
	assert_int_equal(stats.shutdowns, 0);
}

/* --- large inputs ------------------------------------------------------- */

static void megabyte_client(void *arg)
{
	(void)arg;
	size_t n = 1u << 20;
	char *in = malloc(n + 16);

	if (in == NULL)
		abort();
	memset(in, 'x', n);
	memcpy(in + n, "\r\nok\r\nQUIT\r\n", 12);
	res.got[0] = converse(in, n + 12, NULL, 0);
	free(in);
}

/* A megabyte with no LF: reported once, dropped, and the next line
 * works. */
static void test_megabyte_line(void **state)
{
	(void)state;
	run_server(30, 0, megabyte_client, NULL);
	assert_string_equal(res.got[0].p,
			    "HI\r\nTOOLONG\r\nLINE ok\r\nBYE\r\n");
}

#define PIPE_LINES 100000 /* 300 kB in, 800 kB out: past both marks */

static void pipeline_client(void *arg)
{
	(void)arg;
	struct buf in = {0};

	buf_add(&in, "PAUSE\r\n", 7);
	buf_add(&res.want, "HI\r\nRESUMED\r\n", 13);
	for (int i = 0; i < PIPE_LINES; i++) {
		char line[32];
		int n = snprintf(line, sizeof line, "%d\r\n", i % 100000);
		buf_add(&in, line, (size_t)n);
		n = snprintf(line, sizeof line, "LINE %d\r\n", i % 100000);
		buf_add(&res.want, line, (size_t)n);
	}
	buf_add(&in, "QUIT\r\n", 6);
	buf_add(&res.want, "BYE\r\n", 5);
	res.got[0] = converse(in.p, in.n, NULL, 0);
	buf_free(&in);
}

/* A long pipelined batch behind a pause: input is held back past
 * CONN_IN_MAX, output passes CONN_OUT_HIGH, and every line is answered,
 * in order, exactly once. */
static void test_pipeline_backpressure(void **state)
{
	(void)state;
	run_server(30, 0, pipeline_client, NULL);
	assert_int_equal(res.got[0].n, res.want.n);
	assert_memory_equal(res.got[0].p, res.want.p, res.want.n);
}

/* --- closing ------------------------------------------------------------ */

static void peer_gone_client(void *arg)
{
	(void)arg;
	int fd;

	/* Half-closed while paused: the close waits for the resume, whose
	 * reply still goes out. */
	if ((fd = cl_connect()) < 0)
		return;
	cl_expect(fd, "HI\r\n");
	cl_send_str(fd, "PAUSE 50\r\n");
	shutdown(fd, SHUT_WR);
	cl_read_eof(fd, &res.got[0]);
	close(fd);

	/* Gone entirely while paused: nothing to see, but the session must
	 * be freed once (checked by run_server). */
	if ((fd = cl_connect()) < 0)
		return;
	cl_expect(fd, "HI\r\n");
	cl_send_str(fd, "PAUSE 50\r\n");
	close(fd);
	usleep(100 * 1000);

	/* The peer closes while a big reply is still queued. */
	if ((fd = cl_connect()) < 0)
		return;
	cl_expect(fd, "HI\r\n");
	{
		struct buf in = {0}, ignored = {0};
		for (int i = 0; i < 50000; i++)
			buf_add(&in, "x\r\n", 3);
		cl_send(fd, in.p, in.n, &ignored);
		buf_free(&in);
		buf_free(&ignored);
	}
	close(fd);
	usleep(100 * 1000);
}

static void test_peer_gone(void **state)
{
	(void)state;
	run_server(30, 0, peer_gone_client, NULL);
	assert_string_equal(res.got[0].p, "RESUMED\r\n");
	assert_int_equal(stats.opened, 3);
}

static void idle_client(void *arg)
{
	(void)arg;
	double t0 = now_s();
	int fd;

	/* Silent: IDLE after the 1 s timeout, then EOF. */
	if ((fd = cl_connect()) < 0)
		return;
	cl_read_eof(fd, &res.got[0]);
	res.elapsed[0] = now_s() - t0;
	close(fd);

	/* Each line restarts the timer. */
	t0 = now_s();
	if ((fd = cl_connect()) < 0)
		return;
	cl_expect(fd, "HI\r\n");
	usleep(600 * 1000);
	cl_send_str(fd, "a\r\n");
	cl_expect(fd, "LINE a\r\n");
	usleep(600 * 1000);
	cl_send_str(fd, "b\r\n");
	cl_expect(fd, "LINE b\r\n");
	cl_read_eof(fd, &res.got[1]);
	res.elapsed[1] = now_s() - t0;
	close(fd);

	/* No timeout while paused (the operation is ours, not the
	 * client's): the clock starts again at the resume. */
	t0 = now_s();
	if ((fd = cl_connect()) < 0)
		return;
	cl_expect(fd, "HI\r\n");
	cl_send_str(fd, "PAUSE 1500\r\n");
	cl_read_eof(fd, &res.got[2]);
	res.elapsed[2] = now_s() - t0;
	close(fd);
}

static void test_idle_timeout(void **state)
{
	(void)state;
	run_server(1, 0, idle_client, NULL);
	assert_string_equal(res.got[0].p, "HI\r\nIDLE\r\n");
	assert_true(res.elapsed[0] > 0.9 && res.elapsed[0] < 3);
	assert_string_equal(res.got[1].p, "IDLE\r\n");
	assert_true(res.elapsed[1] > 2.1 && res.elapsed[1] < 4.5);
	assert_string_equal(res.got[2].p, "RESUMED\r\nIDLE\r\n");
	assert_true(res.elapsed[2] > 2.4 && res.elapsed[2] < 5);
	assert_int_equal(stats.timeouts, 3);
}

static void per_ip_client(void *arg)
{
	(void)arg;
	int fd1, fd2, fd3;

	if ((fd1 = cl_connect()) < 0)
		return;
	cl_expect(fd1, "HI\r\n");
	/* Over the limit: the busy reply, then EOF. */
	if ((fd2 = cl_connect()) < 0)
		return;
	cl_read_eof(fd2, &res.got[0]);
	close(fd2);
	/* The first is unaffected... */
	cl_send_str(fd1, "a\r\nQUIT\r\n");
	cl_read_eof(fd1, &res.got[1]);
	close(fd1);
	/* ...and once it is gone there is room again. */
	if ((fd3 = cl_connect()) < 0)
		return;
	cl_expect(fd3, "HI\r\n");
	cl_send_str(fd3, "QUIT\r\n");
	cl_read_eof(fd3, &res.got[2]);
	close(fd3);
}

static void test_per_ip_limit(void **state)
{
	(void)state;
	run_server(30, 1, per_ip_client, NULL);
	assert_string_equal(res.got[0].p, "BUSY\r\n");
	assert_string_equal(res.got[1].p, "LINE a\r\nBYE\r\n");
	assert_string_equal(res.got[2].p, "BYE\r\n");
	assert_int_equal(stats.opened, 2); /* the refused one had none */
}

static void shutdown_idle_client(void *arg)
{
	(void)arg;
	double t0;
	int fd;

	if ((fd = cl_connect()) < 0)
		return;
	cl_expect(fd, "HI\r\n");
	t0 = now_s();
	request_stop();
	cl_read_eof(fd, &res.got[0]);
	res.elapsed[0] = now_s() - t0;
	close(fd);
}

/* conn_shutdown() with an idle connection open: the farewell goes out and
 * the connection closes at once (the idle timeout is 3 s here). */
static void test_shutdown_idle(void **state)
{
	(void)state;
	run_server(3, 0, shutdown_idle_client, NULL);
	if (strcmp(res.got[0].p, "SHUTDOWN\r\n") != 0 || res.elapsed[0] >= 1)
		print_error("got \"%s\" and EOF after %.1f s\n", res.got[0].p,
			    res.elapsed[0]);
	assert_int_equal(stats.shutdowns, 1);
	assert_string_equal(res.got[0].p, "SHUTDOWN\r\n");
	assert_true(res.elapsed[0] < 1);
}

static void shutdown_paused_client(void *arg)
{
	(void)arg;
	int fd;

	if ((fd = cl_connect()) < 0)
		return;
	cl_expect(fd, "HI\r\n");
	cl_send_str(fd, "PAUSE 300\r\nx\r\n");
	usleep(100 * 1000);
	request_stop();
	cl_read_eof(fd, &res.got[0]);
	close(fd);
}

/* conn_shutdown() while a connection waits on its operation: no farewell
 * may come before the reply still due (an SMTP 250 after its commit), so
 * none is sent; the close waits for the resume; input behind the pause is
 * not taken. */
static void test_shutdown_paused(void **state)
{
	(void)state;
	run_server(30, 0, shutdown_paused_client, NULL);
	assert_int_equal(stats.shutdowns, 0);
	assert_string_equal(res.got[0].p, "RESUMED\r\n");
}

static void quit_client(void *arg)
{
	(void)arg;

	res.got[0] = converse("QUIT\r\n", 6, NULL, 0);
}

/* done runs once per conn_shutdown() and never again: a later server in
 * the same process (here: the next run_server) must not see a call left
 * over from the previous shutdown, whose arg may be long gone. The first
 * shutdown finds a paused connection, so its done is deferred. */
static void test_shutdown_done_once(void **state)
{
	(void)state;
	run_server(30, 0, shutdown_paused_client, NULL);
	buf_free(&res.got[0]);
	run_server(30, 0, quit_client, NULL);
	assert_string_equal(res.got[0].p, "HI\r\nBYE\r\n");
}

static int free_res(void **state)
{
	(void)state;
	for (int i = 0; i < 4; i++)
		buf_free(&res.got[i]);
	buf_free(&res.want);
	for (size_t i = 0; i < res.nruns; i++)
		for (size_t k = 0; k < res.runs[i].n; k++)
			buf_free(&res.runs[i].got[k]);
	free(res.runs);
	memset(&res, 0, sizeof res);
	return 0;
}

/* A stream into a client that does not read: the producer runs only while
 * output has room (the socket's buffers plus CONN_OUT_HIGH), however long
 * the reply; once the client reads, every line comes, in order, and the
 * pipelined command behind the stream is answered after it. */
#define BIG_LINES                                                              \
	2048 /* of 16 KiB: 32 MiB, far past the socket buffers                 \
	      * (a few MiB each way on loopback) */

static void stream_client(void *arg)
{
	char want[32];
	struct buf in = {0};
	int fd;

	(void)arg;
	if ((fd = cl_connect()) < 0)
		return;
	cl_expect(fd, "HI\r\n");
	cl_send_str(fd, "S 2048 16384\r\nafter\r\nQUIT\r\n");
	usleep(500 * 1000); /* the server fills what it may, then stops */
	res.elapsed[0] = stats.pieces;
	cl_read_eof(fd, &in);
	close(fd);
	/* Every line in order, then the pipelined ones. */
	for (unsigned i = 0; i < BIG_LINES && h.err[0] == '\0'; i++) {
		snprintf(want, sizeof want, "S%u.", i);
		if (in.n < (i + 1) * 16384u ||
		    memcmp(in.p + i * 16384u, want, strlen(want)) != 0)
			cfail("stream line %u missing or out of order (%zu "
			      "octets: %.20s)",
			      i, in.n, in.p ? in.p : "");
	}
	if (in.n != BIG_LINES * 16384u + strlen("LINE after\r\nBYE\r\n") ||
	    strcmp(in.p + BIG_LINES * 16384u, "LINE after\r\nBYE\r\n") != 0)
		cfail("after the stream: %zu octets", in.n);
	buf_free(&in);
}

static void test_stream_backpressure(void **state)
{
	(void)state;
	run_server(30, 0, stream_client, NULL);
	/* 32 MiB were due; only what the buffers hold was produced. */
	if (res.elapsed[0] * 16384 >= 16 << 20)
		print_error("%.0f lines produced for a client not reading\n",
			    res.elapsed[0]);
	assert_true(res.elapsed[0] * 16384 < 16 << 20);
	assert_int_equal(stats.pieces, BIG_LINES);
}

/* max_session_time: a client that keeps sending (the idle clock restarts
 * on every byte) is still told goodbye when its time is up. */
static void lifetime_client(void *arg)
{
	struct buf in = {0};
	int fd;

	(void)arg;
	if ((fd = cl_connect()) < 0)
		return;
	cl_expect(fd, "HI\r\n");
	for (int i = 0; i < 40; i++) { /* a byte each 0.2 s: idle 1 s never
					* passes */
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		if (poll(&pfd, 1, 200) > 0)
			break;
		send(fd, "x", 1, MSG_NOSIGNAL);
	}
	cl_read_eof(fd, &in);
	close(fd);
	if (in.p == NULL || strcmp(in.p, "LIFE\r\n") != 0)
		cfail("want LIFE, got \"%s\"", in.p ? in.p : "");
	buf_free(&in);
}

static void test_lifetime(void **state)
{
	(void)state;
	next_lifetime = 2;
	run_server(1, 0, lifetime_client, NULL);
	assert_int_equal(stats.lifetimes, 1);
	assert_int_equal(stats.timeouts, 0);
}

/* conn_set_max: the global cap counts every listener's connections. */
static void global_cap_client(void *arg)
{
	int fd1, fd2, fd3;

	(void)arg;
	if ((fd1 = cl_connect()) < 0 || (fd2 = cl_connect()) < 0)
		return;
	cl_expect(fd1, "HI\r\n");
	cl_expect(fd2, "HI\r\n");
	if ((fd3 = cl_connect()) < 0)
		return;
	cl_read_eof(fd3, &res.got[0]);
	close(fd3);
	cl_send_str(fd1, "QUIT\r\n");
	cl_read_eof(fd1, &res.got[1]);
	close(fd1);
	if ((fd3 = cl_connect()) < 0) /* room again */
		return;
	cl_expect(fd3, "HI\r\n");
	close(fd3);
	close(fd2);
}

static void test_global_cap(void **state)
{
	(void)state;
	conn_set_max(2);
	run_server(30, 0, global_cap_client, NULL);
	conn_set_max(0);
	assert_string_equal(res.got[0].p, "FULL\r\n");
	assert_string_equal(res.got[1].p, "BYE\r\n");
}

/* conn_connect: an outbound connection to our own listener talks to it;
 * one to a closed port ends with UV_ECONNREFUSED, reported from the loop,
 * never from inside conn_connect. */
struct out_session {
	struct conn *c;
	struct buf got;
	int opened, freed, err;
};

static void out_event(struct conn *c, void *session, enum conn_event ev)
{
	struct out_session *o = session;
	char *line;
	size_t len;

	if (ev == CONN_OPEN) {
		o->opened++;
		conn_puts(c, "hello\r\nQUIT\r\n");
		return;
	}
	while (conn_getline(c, 64, &line, &len) == CONN_LINE) {
		buf_add(&o->got, line, len);
		buf_add(&o->got, "|", 1);
	}
	if (strstr(o->got.p ? o->got.p : "", "BYE|") != NULL)
		conn_close(c);
}

static void out_free(void *session)
{
	struct out_session *o = session;

	o->freed++;
	o->err = conn_error(o->c);
}

static const struct conn_proto out_proto = {
    .name = "out", .event = out_event, .free = out_free};

static struct out_session outs[2];

static void out_poll(uv_timer_t *t)
{
	if (outs[0].freed && outs[1].freed && stats.freed == stats.opened) {
		uv_close((uv_handle_t *)t, NULL);
		conn_shutdown(on_all_closed, NULL);
	}
}

static void test_connect(void **state)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	struct config_listener cfg = {.timeout = 30};
	struct conn_listen_opts opts = {.proto = &tp_proto,
					.cfg = &cfg,
					.busy_reply = "BUSY\r\n",
					.full_reply = "FULL\r\n"};
	uv_loop_t loop;
	uv_timer_t poll;
	int port = free_port();

	(void)state;
	memset(&stats, 0, sizeof stats);
	memset(&h, 0, sizeof h);
	memset(outs, 0, sizeof outs);
	assert_int_equal(uv_loop_init(&loop), 0);
	tp_loop = &loop;
	snprintf(cfg.listen, sizeof cfg.listen, "127.0.0.1:%d", port);
	assert_int_equal(conn_listen(&loop, &opts), 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons((uint16_t)port);
	outs[0].c = conn_connect(&loop, (struct sockaddr *)&sa, &out_proto,
				 &outs[0], 5, 5);
	sa.sin_port = htons((uint16_t)free_port()); /* nobody listens */
	outs[1].c = conn_connect(&loop, (struct sockaddr *)&sa, &out_proto,
				 &outs[1], 5, 5);
	assert_int_equal(outs[1].freed, 0);
	uv_timer_init(&loop, &poll);
	uv_timer_start(&poll, out_poll, 10, 10);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&loop), 0);
	assert_int_equal(h.done_calls, 1);
	assert_int_equal(conn_count(), 0);
	assert_int_equal(outs[0].opened, 1);
	assert_string_equal(outs[0].got.p, "HI|LINE hello|BYE|");
	assert_int_equal(outs[0].freed, 1);
	assert_int_equal(outs[0].err, 0);
	assert_int_equal(outs[1].opened, 0);
	assert_int_equal(outs[1].freed, 1);
	assert_int_equal(outs[1].err, UV_ECONNREFUSED);
	buf_free(&outs[0].got);
	buf_free(&outs[1].got);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_conversations, free_res),
	    cmocka_unit_test_teardown(test_megabyte_line, free_res),
	    cmocka_unit_test_teardown(test_pipeline_backpressure, free_res),
	    cmocka_unit_test_teardown(test_peer_gone, free_res),
	    cmocka_unit_test_teardown(test_per_ip_limit, free_res),
	    cmocka_unit_test_teardown(test_idle_timeout, free_res),
	    cmocka_unit_test_teardown(test_shutdown_idle, free_res),
	    cmocka_unit_test_teardown(test_shutdown_paused, free_res),
	    cmocka_unit_test_teardown(test_shutdown_done_once, free_res),
	    cmocka_unit_test_teardown(test_stream_backpressure, free_res),
	    cmocka_unit_test_teardown(test_lifetime, free_res),
	    cmocka_unit_test_teardown(test_global_cap, free_res),
	    cmocka_unit_test(test_connect),
	};

	/* As core/main.c does: a peer gone mid-write is an error return. */
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
