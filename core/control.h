/*
 * control.h - the control socket: how the command line (and any other
 * local tool) asks the running server something only it knows, such as
 * its POP-before-SMTP grants, or tells it to do something now (a queue
 * flush, later).
 *
 * A unix stream socket, DATA_DIR/control.sock, mode 0600: only the
 * server's own user (and root) may connect. It is served on the loop and
 * never blocks it: the request is read into a fixed buffer, every client
 * has CONTROL_IDLE_MS to send its request and as long again to read the
 * answer, and at most CONTROL_CLIENTS_MAX are served at once.
 *
 * The protocol, one request per connection (like POP3's multi-line
 * replies, with "\n" line ends):
 *
 *   request    VERB [ARG]\n           at most CONTROL_LINE_MAX octets; a
 *                                     CR before the LF is ignored
 *   answer     OK\n                   the command ran; its lines follow,
 *              DATA LINES\n...        a leading "." doubled ("..x" is
 *              .\n                    ".x"), then "." alone ends them
 *         or   ERR what is wrong\n    unknown command, bad argument, ...
 *
 * and the server closes the connection. Example:
 *
 *   > GRANTS
 *   < OK
 *   < 127.0.0.3 alice@localhost 2026-12-01T03:18:22Z 1799
 *   < .
 *
 * Commands are rows of a table the caller hands to control_start() (the
 * app, which knows every module: core cannot call up into smtp/ for a
 * queue flush). Adding a command is adding a row.
 */
#ifndef PILLARBOX_CONTROL_H
#define PILLARBOX_CONTROL_H

#include <stddef.h>

#include "core/cmd.h"

#define CONTROL_SOCKET	    "control.sock" /* in data_dir */
#define CONTROL_LINE_MAX    512 /* a request or answer line, "\n" included */
#define CONTROL_CLIENTS_MAX 16	/* served at once; more get "ERR busy" */
/* A local tool sends its request at once and reads the answer at once:
 * this frees the slot of one that does not. */
#define CONTROL_IDLE_MS 5000
/* How long control_request() waits for the whole answer. */
#define CONTROL_REQUEST_TIMEOUT_MS 10000

/* An answer being built by a command. */
struct control_out;

/* Adds one data line (no "\n": it is added; a line longer than
 * CONTROL_LINE_MAX is cut there). */
void control_printf(struct control_out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Makes the answer "ERR why" instead, whatever was added before. */
void control_error(struct control_out *o, const char *why);

struct control_cmd {
	const char *verb; /* matched without regard to case */
	enum cmd_arity arity;
	/* Answers before it returns, with control_printf/control_error
	 * (an OK with no line when it writes nothing). arg is "" when
	 * there is none; ctx is control_start's. Runs on the loop: it must
	 * not block (a long job starts here and reports elsewhere). */
	void (*run)(struct control_out *o, const char *arg, void *ctx);
};

/* Serves cmds[0..n) on DATA_DIR/control.sock (data_dir must exist; cmds
 * and ctx must outlive control_stop). A socket file left by a server that
 * died is replaced; if a server answers on it, this one must not start:
 * UV_EADDRINUSE. Returns 0 or a negative libuv error, logged
 * (event=control-error). */
int control_start(const char *data_dir, const struct control_cmd *cmds,
		  size_t n, void *ctx);

/* Closes the socket (and unlinks its file) and every control connection;
 * their handles are gone once the loop has run their close callbacks.
 * Safe to call when control_start failed or was never called. */
void control_stop(void);

/* --- the client side: for the command line, never on the loop ---------- */

/* Sends request (one line, no "\n") to the server whose data_dir is given
 * and calls line(text, arg) for each data line of an OK answer (text is
 * valid during the call; line may be NULL). Blocks for
 * CONTROL_REQUEST_TIMEOUT_MS at most. Returns 0 for OK; -EBADMSG for an ERR
 * answer, its text in err (size errlen); -ENOENT when no server runs there (no
 * socket file, or one left by a server that died); -ETIMEDOUT; -EPROTO for a
 * garbled answer; or another negative errno (-EACCES: another user's server).
 */
int control_request(const char *data_dir, const char *request,
		    void (*line)(const char *text, void *arg), void *arg,
		    char *err, size_t errlen);

#endif
