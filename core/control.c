/* control.c - the control socket: the server on the loop (uv_pipe), and
 * the blocking client the command line uses. see control.h */
#include "core/control.h"

#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "base/log.h"
#include "core/loop.h"

/* Answer lines are "OK", data lines, "."; or one "ERR ...". */
struct control_out {
	char *buf;
	size_t len, cap;
	bool failed;
};

/* One control connection: read one request, write its answer, close. */
struct client {
	uv_pipe_t pipe;
	uv_timer_t timer; /* CONTROL_IDLE_MS to send, as long to read */
	uv_write_t wreq;
	struct client *prev, *next;
	int handles; /* open uv handles: freed at 0 */
	bool closing;
	bool answered; /* input after the request is read and dropped */
	size_t in_len;
	char in[CONTROL_LINE_MAX];
	struct control_out out;
};

static struct {
	uv_pipe_t pipe;
	bool listening; /* pipe is open (bound or not): close it at stop */
	const struct control_cmd *cmds;
	struct cmd_spec *specs; /* cmds as core/cmd.h's dispatcher sees them */
	size_t ncmds;
	void *ctx;
	struct client *clients;
	size_t nclients;
} ctl;

/* DATA_DIR/control.sock into *sun. 0, or -ENAMETOOLONG: sun_path holds
 * 107 octets, and a truncated path would be someone else's file. */
static int control_addr(const char *data_dir, struct sockaddr_un *sun)
{
	int n;

	memset(sun, 0, sizeof *sun);
	sun->sun_family = AF_UNIX;
	n = snprintf(sun->sun_path, sizeof sun->sun_path, "%s/%s", data_dir,
		     CONTROL_SOCKET);
	return n < 0 || (size_t)n >= sizeof sun->sun_path ? -ENAMETOOLONG : 0;
}

/* --- answers ------------------------------------------------------------ */

static void out_add(struct control_out *o, const char *p, size_t n)
{
	if (o->len + n > o->cap) {
		o->cap =
		    o->cap * 2 > o->len + n ? o->cap * 2 : o->len + n + 256;
		o->buf = xrealloc(o->buf, o->cap);
	}
	memcpy(o->buf + o->len, p, n);
	o->len += n;
}

void control_printf(struct control_out *o, const char *fmt, ...)
{
	char line[CONTROL_LINE_MAX - 2]; /* room for a stuffed "." and LF */
	va_list ap;
	size_t n;

	if (o->failed)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	n = strlen(line);
	/* A value with a line end in it must not end or forge a line. */
	for (size_t i = 0; i < n; i++)
		if (line[i] == '\n' || line[i] == '\r')
			line[i] = '?';
	if (line[0] == '.')
		out_add(o, ".", 1); /* so "." alone always ends the answer */
	out_add(o, line, n);
	out_add(o, "\n", 1);
}

void control_error(struct control_out *o, const char *why)
{
	o->len = 0;
	o->failed = true;
	out_add(o, "ERR ", 4);
	out_add(o, why, strnlen(why, CONTROL_LINE_MAX - 6));
	out_add(o, "\n", 1);
}

/* --- the server --------------------------------------------------------- */

static void client_freed(uv_handle_t *h)
{
	struct client *c = h->data;

	if (--c->handles > 0)
		return;
	free(c->out.buf);
	free(c);
}

/* Closes c now; an unfinished write is cancelled. Idempotent. */
static void client_close(struct client *c)
{
	if (c->closing)
		return;
	c->closing = true;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		ctl.clients = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	ctl.nclients--;
	uv_close((uv_handle_t *)&c->pipe, client_freed);
	uv_close((uv_handle_t *)&c->timer, client_freed);
}

static void on_client_timer(uv_timer_t *t)
{
	struct client *c = t->data;

	log_msg(LOG_INFO, "control", "event=timeout");
	client_close(c);
}

static void on_written(uv_write_t *req, int status)
{
	(void)status; /* written or not, this connection is done */
	client_close(req->data);
}

/* Sends the answer built in c->out and closes once it is written (or
 * after CONTROL_IDLE_MS, if the client does not read it). */
static void client_answer(struct client *c)
{
	uv_buf_t b;

	if (!c->out.failed)
		out_add(&c->out, ".\n", 2);
	b = uv_buf_init(c->out.buf, (unsigned)c->out.len);
	/* Reading goes on, into the void: closing with unread input would
	 * reset the connection, and the client might lose its answer. */
	c->answered = true;
	c->in_len = 0;
	uv_timer_start(&c->timer, on_client_timer, CONTROL_IDLE_MS, 0);
	c->wreq.data = c;
	if (uv_write(&c->wreq, (uv_stream_t *)&c->pipe, &b, 1, on_written) < 0)
		client_close(c);
}

/* Runs the request line through the command table into c->out. */
static void client_request(struct client *c, char *line, size_t len)
{
	size_t i = 0;
	char *arg;
	enum cmd_check r;

	r = cmd_parse(ctl.specs, ctl.ncmds, 1, line, &i, &arg);
	if (strlen(line) != len) {
		control_error(&c->out, "bad request"); /* a NUL inside */
	} else if (r == CMD_OK) {
		ctl.cmds[i].run(&c->out, arg, ctl.ctx);
	} else {
		control_error(&c->out, r == CMD_UNKNOWN	 ? "unknown command"
				       : r == CMD_NO_ARG ? "missing argument"
				       : r == CMD_EXTRA_ARG
					   ? "too many arguments"
					   : "bad request");
	}
	log_msg(LOG_INFO, "control", "event=request verb=%s result=%s",
		log_value(line, strcspn(line, " ")),
		c->out.failed ? "err" : "ok");
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct client *c = h->data;

	(void)suggested;
	*buf = uv_buf_init(c->in + c->in_len,
			   (unsigned)(sizeof c->in - c->in_len));
}

static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct client *c = s->data;
	char *lf;
	size_t len;

	(void)buf;
	if (c->answered) { /* the answer is on its way: drop the rest */
		c->in_len = 0;
		if (nread < 0)
			uv_read_stop(s);
		return;
	}
	if (nread < 0) { /* gone (or EOF) before its request was whole */
		client_close(c);
		return;
	}
	c->in_len += (size_t)nread;
	assert(c->in_len <= sizeof c->in);
	lf = memchr(c->in, '\n', c->in_len);
	if (lf == NULL) {
		if (c->in_len < sizeof c->in)
			return; /* wait for the rest, within the idle time */
		log_msg(LOG_WARN, "control", "event=refused reason=too-long");
		control_error(&c->out, "line too long");
		client_answer(c);
		return;
	}
	len = (size_t)(lf - c->in);
	if (len > 0 && c->in[len - 1] == '\r')
		len--;
	c->in[len] = '\0';
	out_add(&c->out, "OK\n", 3);
	client_request(c, c->in, len);
	client_answer(c);
}

static void on_control_connection(uv_stream_t *server, int status)
{
	struct client *c;

	if (status < 0) {
		log_msg(LOG_WARN, "control", "event=accept-error error=%s",
			uv_err_name(status));
		return;
	}
	c = xcalloc(1, sizeof *c);
	uv_pipe_init(server->loop, &c->pipe, 0);
	uv_timer_init(server->loop, &c->timer);
	c->pipe.data = c->timer.data = c;
	c->handles = 2;
	c->next = ctl.clients;
	if (ctl.clients != NULL)
		ctl.clients->prev = c;
	ctl.clients = c;
	ctl.nclients++;
	if (uv_accept(server, (uv_stream_t *)&c->pipe) < 0 ||
	    uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_client_read) <
		0) {
		client_close(c);
		return;
	}
	if (ctl.nclients > CONTROL_CLIENTS_MAX) {
		log_msg(LOG_WARN, "control", "event=refused reason=busy");
		control_error(&c->out, "busy");
		client_answer(c);
		return;
	}
	uv_timer_start(&c->timer, on_client_timer, CONTROL_IDLE_MS, 0);
}

/* Is a server answering on sun? 1 yes; 0 no (no file, or one left by a
 * server that died, now removed); or a negative errno. Never waits: the
 * socket is non-blocking, and a full backlog (EAGAIN) means a live
 * server. */
static int control_probe(const struct sockaddr_un *sun)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int r;

	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)sun, sizeof *sun) == 0)
		r = 1;
	else if (errno == EAGAIN)
		r = 1;
	else if (errno == ENOENT)
		r = 0;
	else if (errno == ECONNREFUSED) /* a file nobody listens on */
		r = unlink(sun->sun_path) == 0 || errno == ENOENT ? 0 : -errno;
	else
		r = -errno;
	close(fd);
	return r;
}

int control_start(const char *data_dir, const struct control_cmd *cmds,
		  size_t n, void *ctx)
{
	struct sockaddr_un sun;
	int r;

	assert(!ctl.listening && cmds != NULL);
	ctl.cmds = cmds;
	ctl.ncmds = n;
	ctl.ctx = ctx;
	ctl.specs = xcalloc(n > 0 ? n : 1, sizeof *ctl.specs);
	for (size_t i = 0; i < n; i++)
		ctl.specs[i] =
		    (struct cmd_spec){cmds[i].verb, 1, cmds[i].arity};
	r = control_addr(data_dir, &sun);
	if (r == 0)
		r = control_probe(&sun);
	if (r == 1) {
		log_msg(LOG_ERROR, "control",
			"event=control-error path=%s "
			"error=another-server-is-running",
			log_str(sun.sun_path));
		control_stop();
		return UV_EADDRINUSE;
	}
	if (r < 0) {
		log_msg(LOG_ERROR, "control",
			"event=control-error path=%s/%s error=%s",
			log_str(data_dir), CONTROL_SOCKET, uv_strerror(r));
		control_stop();
		return r; /* libuv errors are negative errnos */
	}
	uv_pipe_init(loop_get(), &ctl.pipe, 0);
	ctl.listening = true;
	r = uv_pipe_bind(&ctl.pipe, sun.sun_path);
	/* Before listen(2) nobody can connect, so the file is never open to
	 * others: only the server's user may talk to it. */
	if (r == 0 && chmod(sun.sun_path, 0600) < 0)
		r = -errno;
	if (r == 0)
		r = uv_listen((uv_stream_t *)&ctl.pipe, CONTROL_CLIENTS_MAX,
			      on_control_connection);
	if (r < 0) {
		log_msg(LOG_ERROR, "control",
			"event=control-error path=%s error=%s",
			log_str(sun.sun_path), uv_strerror(r));
		control_stop();
		return r;
	}
	log_msg(LOG_INFO, "control", "event=listening path=%s",
		log_str(sun.sun_path));
	return 0;
}

void control_stop(void)
{
	while (ctl.clients != NULL)
		client_close(ctl.clients);
	/* libuv unlinks the file of a pipe it bound when it closes it. */
	if (ctl.listening)
		uv_close((uv_handle_t *)&ctl.pipe, NULL);
	ctl.listening = false;
	free(ctl.specs);
	ctl.specs = NULL;
	ctl.cmds = NULL;
	ctl.ncmds = 0;
}

/* --- the client --------------------------------------------------------- */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Handles one answer line: 1 for more, 0 at its end, or an error. */
static int control_answer_line(char *text, bool *ok_seen,
			       void (*line)(const char *text, void *arg),
			       void *arg, char *err, size_t errlen)
{
	if (*ok_seen) {
		if (strcmp(text, ".") == 0)
			return 0;
		if (line != NULL)
			line(text + (text[0] == '.'), arg);
		return 1;
	}
	if (strcmp(text, "OK") == 0) {
		*ok_seen = true;
		return 1;
	}
	if (strncmp(text, "ERR", 3) == 0 && (text[3] == ' ' || !text[3])) {
		snprintf(err, errlen, "%s", text[3] ? text + 4 : "error");
		return -EBADMSG;
	}
	return -EPROTO;
}

int control_request(const char *data_dir, const char *request,
		    void (*line)(const char *text, void *arg), void *arg,
		    char *err, size_t errlen)
{
	struct timeval tv = {CONTROL_REQUEST_TIMEOUT_MS / 1000,
			     CONTROL_REQUEST_TIMEOUT_MS % 1000 * 1000};
	int64_t deadline = now_ms() + CONTROL_REQUEST_TIMEOUT_MS;
	char buf[2 * CONTROL_LINE_MAX];
	struct sockaddr_un sun;
	size_t have, sent = 0;
	bool ok_seen = false;
	int fd = -1, r, n;

	r = control_addr(data_dir, &sun);
	if (r < 0)
		return r;
	n = snprintf(buf, sizeof buf, "%s\n", request);
	if (n < 0 || n > CONTROL_LINE_MAX || strchr(request, '\n') != NULL)
		return -EINVAL;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* connect(2) waits for room in a busy server's backlog, and send(2)
	 * for room in its buffer, no longer than this. */
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
		r = errno == ECONNREFUSED ? -ENOENT /* a dead server's file */
		    : errno == EAGAIN || errno == EINPROGRESS ? -ETIMEDOUT
							      : -errno;
		goto done;
	}
	while (sent < (size_t)n) {
		ssize_t w =
		    send(fd, buf + sent, (size_t)n - sent, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			r = errno == EAGAIN ? -ETIMEDOUT : -errno;
			goto done;
		}
		sent += (size_t)w;
	}
	have = 0;
	for (;;) {
		char *lf;
		while ((lf = memchr(buf, '\n', have)) != NULL) {
			size_t len = (size_t)(lf - buf);
			*lf = '\0';
			r = control_answer_line(buf, &ok_seen, line, arg, err,
						errlen);
			if (r <= 0)
				goto done;
			memmove(buf, lf + 1, have - len - 1);
			have -= len + 1;
		}
		if (have == sizeof buf) {
			r = -EPROTO; /* a line longer than any answer's */
			goto done;
		}
		int64_t left = deadline - now_ms();
		struct pollfd pfd = {fd, POLLIN, 0};
		if (left <= 0) {
			r = -ETIMEDOUT;
			goto done;
		}
		r = poll(&pfd, 1, (int)left);
		if (r < 0 && errno != EINTR) {
			r = -errno;
			goto done;
		}
		if (r <= 0)
			continue; /* interrupted, or time is up: see above */
		ssize_t got = recv(fd, buf + have, sizeof buf - have, 0);
		if (got == 0) {
			r = -EPROTO; /* closed before the end of the answer */
			goto done;
		}
		if (got < 0 && errno != EINTR && errno != EAGAIN) {
			r = -errno;
			goto done;
		}
		if (got > 0)
			have += (size_t)got;
	}
done:
	close(fd);
	return r;
}
