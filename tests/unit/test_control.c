/* test_control.c - loop tests of the control socket (core/control.c) over
 * a real unix socket in a temporary data_dir.
 *
 * The loop runs in the test's thread with a small command table; a client
 * thread talks to it with control_request() and with raw sockets, records
 * what it saw (cmocka cannot fail from another thread), and at the end
 * asks the loop through a uv_async to call control_stop(). The loop must
 * then run dry and uv_loop_close() succeed: no live handle and, under
 * ASan, no leak. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/control.h"
#include "core/loop.h"

#define CLIENT_WAIT_MS (CONTROL_IDLE_MS + 5000) /* the client gives up */

static char dir[64], sock_path[128];
static uv_async_t done_async;

/* --- the commands ------------------------------------------------------- */

static void cmd_echo(struct control_out *o, const char *arg, void *ctx)
{
	control_printf(o, "%s", arg);
	control_printf(o, "ctx=%s", (const char *)ctx);
}

static void cmd_lines(struct control_out *o, const char *arg, void *ctx)
{
	(void)arg;
	(void)ctx;
	control_printf(o, ".dot");
	control_printf(o, ".");
	control_printf(o, "two\nlines");
}

static void cmd_fail(struct control_out *o, const char *arg, void *ctx)
{
	(void)arg;
	(void)ctx;
	control_printf(o, "dropped");
	control_error(o, "it failed");
	control_printf(o, "dropped too");
}

static const struct control_cmd cmds[] = {
    {"ECHO", CMD_ARG_REQ, cmd_echo},
    {"LINES", CMD_ARG_NONE, cmd_lines},
    {"FAIL", CMD_ARG_ANY, cmd_fail},
};

/* --- the client thread -------------------------------------------------- */

static struct {
	char log[4096]; /* what it saw, one entry per exchange */
	bool idle_closed;
	long idle_ms;
} seen;

static void note(const char *fmt, ...)
{
	size_t n = strlen(seen.log);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(seen.log + n, sizeof seen.log - n, fmt, ap);
	va_end(ap);
}

static void add_line(const char *text, void *arg)
{
	(void)arg;
	note("[%s]", text);
}

/* control_request as text: "[line][line] r=R err" */
static void request(const char *req)
{
	char err[CONTROL_LINE_MAX] = "";
	int r = control_request(dir, req, add_line, NULL, err, sizeof err);

	note(" r=%d%s%s;", r, err[0] ? " " : "", err);
}

static int raw_connect(void)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	strcpy(sun.sun_path, sock_path);
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static long ms_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0->tv_sec) * 1000 +
	       (t.tv_nsec - t0->tv_nsec) / 1000000;
}

/* Reads until EOF (or CLIENT_WAIT_MS) into buf. */
static void raw_read_all(int fd, char *buf, size_t n)
{
	size_t have = 0;
	struct pollfd p = {fd, POLLIN, 0};

	while (have < n - 1 && poll(&p, 1, CLIENT_WAIT_MS) == 1) {
		ssize_t r = read(fd, buf + have, n - 1 - have);
		if (r <= 0)
			break;
		have += (size_t)r;
	}
	buf[have] = '\0';
}

/* Sends data as is and notes the whole answer. */
static void raw(const char *data, size_t len)
{
	char buf[1024];
	int fd = raw_connect();

	if (fd < 0 || write(fd, data, len) != (ssize_t)len) {
		note("raw: cannot send;");
		return;
	}
	raw_read_all(fd, buf, sizeof buf);
	close(fd);
	note("<%s>;", buf);
}

static void *client(void *arg)
{
	char big[CONTROL_LINE_MAX + 10];
	int idle[CONTROL_CLIENTS_MAX];
	struct timespec t0;

	(void)arg;
	request("ECHO hello world");
	request("echo x");
	request("LINES");
	request("FAIL now");
	request("NOPE");
	request("ECHO");
	request("LINES x");
	raw("ECHO crlf\r\n", 11);
	raw("ECHO a\nECHO b\n", 14); /* one request per connection */
	raw("LI\0NES\n", 7);
	memset(big, 'A', sizeof big);
	raw(big, sizeof big); /* no line end within CONTROL_LINE_MAX */

	/* CONTROL_CLIENTS_MAX silent clients: the next one is told "busy",
	 * and once they go, requests are served again. */
	for (int i = 0; i < CONTROL_CLIENTS_MAX; i++)
		idle[i] = raw_connect();
	request("LINES");
	for (int i = 0; i < CONTROL_CLIENTS_MAX; i++)
		close(idle[i]);
	for (int i = 0; i < 100; i++) { /* until the server saw them go */
		char err[CONTROL_LINE_MAX] = "";
		if (control_request(dir, "FAIL", NULL, NULL, err, sizeof err) ==
			-EBADMSG &&
		    strcmp(err, "it failed") == 0)
			break;
		usleep(10000);
	}
	request("ECHO after");

	/* A client that never sends is dropped after CONTROL_IDLE_MS. */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int fd = raw_connect();
	char buf[64];
	raw_read_all(fd, buf, sizeof buf);
	seen.idle_ms = ms_since(&t0);
	seen.idle_closed = buf[0] == '\0';
	close(fd);

	uv_async_send(&done_async);
	return NULL;
}

static void on_done(uv_async_t *a)
{
	control_stop();
	uv_close((uv_handle_t *)a, NULL);
}

/* --- the tests ---------------------------------------------------------- */

static int setup(void **state)
{
	(void)state;
	strcpy(dir, "/tmp/test_control.XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(sock_path, sizeof sock_path, "%s/%s", dir, CONTROL_SOCKET);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(sock_path);
	rmdir(dir);
	return 0;
}

/* Leaves a socket file nobody listens on, as a killed server does. */
static void make_stale_socket(void)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	strcpy(sun.sun_path, sock_path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0);
	assert_int_equal(listen(fd, 1), 0);
	close(fd);
}

static void test_conversation(void **state)
{
	uv_loop_t loop;
	pthread_t t;
	struct stat st;
	char err[CONTROL_LINE_MAX];

	(void)state;
	/* no server yet: the client says so at once */
	assert_int_equal(
	    control_request(dir, "LINES", add_line, NULL, err, sizeof err),
	    -ENOENT);
	make_stale_socket();
	assert_int_equal(
	    control_request(dir, "LINES", add_line, NULL, err, sizeof err),
	    -ENOENT);

	uv_loop_init(&loop);
	loop_init(&loop);
	/* the stale file is replaced */
	assert_int_equal(
	    control_start(dir, cmds, sizeof cmds / sizeof *cmds, "the-ctx"), 0);
	assert_int_equal(stat(sock_path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);
	uv_async_init(&loop, &done_async, on_done);
	pthread_create(&t, NULL, client, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	pthread_join(t, NULL);
	assert_int_equal(uv_loop_close(&loop), 0);

	/* closed: the file is gone */
	assert_int_equal(stat(sock_path, &st), -1);
	assert_string_equal(seen.log, "[hello world][ctx=the-ctx] r=0;"
				      "[x][ctx=the-ctx] r=0;"
				      "[.dot][.][two?lines] r=0;"
				      " r=-74 it failed;" /* EBADMSG */
				      " r=-74 unknown command;"
				      " r=-74 missing argument;"
				      " r=-74 too many arguments;"
				      "<OK\ncrlf\nctx=the-ctx\n.\n>;"
				      "<OK\na\nctx=the-ctx\n.\n>;"
				      "<ERR bad request\n>;"
				      "<ERR line too long\n>;"
				      " r=-74 busy;"
				      "[after][ctx=the-ctx] r=0;");
	assert_true(seen.idle_closed);
	assert_true(seen.idle_ms >= CONTROL_IDLE_MS - 100);
}

static void test_path_too_long(void **state)
{
	char longdir[200], err[16];
	uv_loop_t loop;

	(void)state;
	memset(longdir, 'd', sizeof longdir - 1);
	longdir[0] = '/';
	longdir[sizeof longdir - 1] = '\0';
	assert_int_equal(
	    control_request(longdir, "LINES", add_line, NULL, err, sizeof err),
	    -ENAMETOOLONG);
	uv_loop_init(&loop);
	loop_init(&loop);
	assert_int_equal(control_start(longdir, cmds, 1, NULL),
			 UV_ENAMETOOLONG);
	control_stop();
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_conversation, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_path_too_long, setup,
					    teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
