/*
 * client.h - the client side of the loop tests (test_conn, test_transcripts):
 * a thread with plain blocking sockets talks to the server that the test's
 * loop runs. cmocka cannot fail from another thread, so the client records
 * its first error in client_err (cfail) and the test checks it once the
 * loop is closed. Header-only: include it once, after the system headers.
 */
#ifndef PILLARBOX_TEST_CLIENT_H
#define PILLARBOX_TEST_CLIENT_H

#ifndef CLIENT_WAIT_MS
#define CLIENT_WAIT_MS 10000 /* the client gives up on a silent server */
#endif

static char client_err[512]; /* the client's first error, "" if none */

static inline void cfail(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static inline void cfail(const char *fmt, ...)
{
	va_list ap;

	if (client_err[0] != '\0')
		return;
	va_start(ap, fmt);
	vsnprintf(client_err, sizeof client_err, fmt, ap);
	va_end(ap);
}

static inline double now_s(void)
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

static inline void buf_add(struct buf *b, const char *p, size_t n)
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

static inline void buf_free(struct buf *b)
{
	free(b->p);
	memset(b, 0, sizeof *b);
}

static inline int cl_connect(int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons((uint16_t)port)};
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
static inline bool cl_send(int fd, const char *p, size_t n, struct buf *in)
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
static inline void cl_read_eof(int fd, struct buf *in)
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
static inline void cl_expect(int fd, const char *want)
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

static inline void cl_send_str(int fd, const char *s)
{
	struct buf ignored = {0};

	cl_send(fd, s, strlen(s), &ignored);
	if (ignored.n > 0)
		cfail("unexpected \"%s\" before sending \"%s\"", ignored.p, s);
	buf_free(&ignored);
}

#endif
