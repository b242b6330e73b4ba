/* test_transcripts.c - the real SMTP and POP3 sessions (smtp_proto,
 * pop3_proto) on conn_listen() listeners over loopback, with a real store
 * and its commit thread, fed whole conversations cut into pieces.
 *
 * The server is wired as app/main.c's serve() wires it: a store opened in a
 * mkdtemp directory, users added with store_user_add and auth_hash, the
 * config from config_defaults() (hostname mx.test, login_delay 0),
 * loop_init, store_commit_start, and one listener per protocol on
 * 127.0.0.1 at a port picked at run time. The loop runs in the test's
 * thread; a client thread sends each transcript
 *   - whole (one packet: every command pipelined),
 *   - byte by byte,
 *   - in two pieces cut at offset k, for every k,
 * with a short gap after each piece so that each is a read of its own, and
 * collects what the server says until it closes. Every run must give the
 * same bytes: the expected output, with only the queue id in "250 2.0.0
 * Ok: stored as ID" normalised. Transcripts up to FULL_CUTS_MAX octets are
 * cut at every offset; longer ones at every offset within CUT_WINDOW
 * octets of a boundary that matters: the start of the transcript and of
 * each line (which covers each command boundary, each CRLF.CRLF and each
 * dot-stuffed line) and each end of a BDAT chunk (see plan_cuts). The
 * whole file runs in 20 to 30 s under the sanitizers on two cores, most
 * of it in fsyncs (one per message stored) and in yescrypt (one hash per
 * POP3 login).
 *
 * SMTP runs add messages to the store: after the loop, every mailbox the
 * SMTP transcripts deliver to must hold, in order, exactly one message per
 * delivery per run, each with its trace header naming the id its 250 gave
 * and with the body un-dot-stuffed. The POP3 mailbox is filled before the
 * loop with known messages, so RETR and TOP are compared byte for byte;
 * POP3 transcripts never QUIT with a message marked (RSET first), so every
 * run sees the same maildrop, and the test checks it is still whole.
 *
 * The client thread never asserts (cmocka cannot fail from another
 * thread): it records its first error, checked once the loop is closed.
 * The server's log lines go to /dev/null, or to the file named by
 * PILLARBOX_TEST_LOG. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
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

#include "core/auth.h"
#include "core/config.h"
#include "core/conn.h"
#include "core/event.h"
#include "core/loop.h"
#include "pop3/pop3.h"
#include "smtp/data.h"
#include "smtp/smtp.h"
#include "store/store.h"

#define CLIENT_WAIT_MS 10000 /* the client gives up on a silent server */
#define PIECE_GAP_US   2000  /* between pieces, so each is its own read */
#define FULL_CUTS_MAX  200   /* octets: up to this, cut at every offset */
#define CUT_WINDOW     2     /* longer ones: within this of a boundary */
#define PASSWORD       "secret"

#include "client.h"

/* --- the transcripts ---------------------------------------------------- */

/* One message an SMTP run stores: the mailboxes it goes to, the address
 * of the Received: "for" clause (only with a single recipient), and the
 * body as stored after the trace header. */
struct delivery {
	const char *to[2];
	const char *for_rcpt;
	const char *body;
};

struct transcript {
	const char *name;
	const char *in;
	const char *out; /* with "stored as ID" */
	/* SMTP: the trace header's sender, HELO name, its line saying who
	 * logged in (or NULL) and protocol, and what each run stores, in
	 * order. */
	const char *from, *helo, *auth, *with;
	struct delivery stored[3];
};

#define GREETING "220 mx.test ESMTP pillarbox\r\n"
#define EHLO	 "EHLO client.test\r\n"
#define EHLO_OK                                                                \
	"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 26214400\r\n"               \
	"250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n"          \
	"250-STARTTLS\r\n"                                                     \
	"250-AUTH PLAIN LOGIN\r\n250 CHUNKING\r\n"
#define MAIL	  "MAIL FROM:<a@b.test>\r\n"
#define TO_ALICE  "RCPT TO:<alice@localhost>\r\n"
#define TO_BOB	  "RCPT TO:<bob@localhost>\r\n"
#define MAIL_OK	  "250 2.1.0 Ok\r\n"
#define RCPT_OK	  "250 2.1.5 Ok\r\n"
#define DATA_GO	  "354 End data with <CR><LF>.<CR><LF>\r\n"
#define STORED	  "250 2.0.0 Ok: stored as ID\r\n"
#define OK	  "250 2.0.0 Ok\r\n"
#define BYE	  "221 2.0.0 Bye\r\n"
#define ALICE	  "alice@localhost"
#define AUTH_OK	  "235 2.7.0 Authentication successful\r\n"
#define AUTH_LINE "\t(authenticated as alice@localhost)\r\n"
#define BOB	  "bob@localhost"

static const struct transcript smtp_cases[] = {
    {.name = "pipelined EHLO, MAIL, RCPT, RCPT, DATA; dot-stuffed lines",
     .in = EHLO MAIL TO_ALICE TO_BOB "DATA\r\n"
				     "Subject: dots\r\n"
				     "\r\n"
				     "..leading dot\r\n"
				     "..\r\n"
				     "...\r\n"
				     "x.\r\n"
				     "last line\r\n"
				     ".\r\n"
				     "QUIT\r\n",
     .out = GREETING EHLO_OK MAIL_OK RCPT_OK RCPT_OK DATA_GO STORED BYE,
     .from = "a@b.test",
     .helo = "client.test",
     .with = "ESMTP",
     .stored = {{.to = {ALICE, BOB},
		 .body = "Subject: dots\r\n\r\n.leading dot\r\n.\r\n..\r\n"
			 "x.\r\nlast line\r\n"}}},
    /* The first message's last line ends in a dot; the second is the
     * line ".." alone, stored as ".". */
    {.name = "commands right after the end marker",
     .in = "HELO client.test\r\n" MAIL TO_ALICE "DATA\r\n"
	   "one.\r\n"
	   ".\r\n" MAIL TO_BOB "DATA\r\n"
	   "..\r\n"
	   ".\r\n"
	   "QUIT\r\n",
     .out = GREETING "250 mx.test\r\n" MAIL_OK RCPT_OK DATA_GO STORED MAIL_OK
	 RCPT_OK DATA_GO STORED BYE,
     .from = "a@b.test",
     .helo = "client.test",
     .with = "SMTP",
     .stored = {{.to = {ALICE}, .for_rcpt = ALICE, .body = "one.\r\n"},
		{.to = {BOB}, .for_rcpt = BOB, .body = ".\r\n"}}},
    {.name = "empty message, then the next command",
     .in = EHLO MAIL TO_ALICE "DATA\r\n"
			      ".\r\n"
			      "NOOP\r\n"
			      "QUIT\r\n",
     .out = GREETING EHLO_OK MAIL_OK RCPT_OK DATA_GO STORED OK BYE,
     .from = "a@b.test",
     .helo = "client.test",
     .with = "ESMTP",
     .stored = {{.to = {ALICE}, .for_rcpt = ALICE, .body = ""}}},
    /* Chunk octets are never commands nor end markers; a chunk may end
     * inside a CRLF; the next command follows the chunk at once. */
    {.name = "BDAT chunks, BDAT LAST, BDAT 0 LAST",
     .in = EHLO MAIL TO_ALICE "BDAT 14\r\n"
			      "one\r\n.\r\nQUIT\r\n"
			      "BDAT 3\r\n"
			      "ab\r"
			      "BDAT 4 LAST\r\n"
			      "\ncd."
			      "NOOP\r\n" MAIL TO_BOB "BDAT 0 LAST\r\n"
			      "RSET\r\n"
			      "QUIT\r\n",
     .out = GREETING EHLO_OK MAIL_OK RCPT_OK
     "250 2.0.0 14 octets received\r\n"
     "250 2.0.0 17 octets received\r\n" STORED OK MAIL_OK RCPT_OK STORED OK BYE,
     .from = "a@b.test",
     .helo = "client.test",
     .with = "ESMTP",
     .stored = {{.to = {ALICE},
		 .for_rcpt = ALICE,
		 .body = "one\r\n.\r\nQUIT\r\nab\r\ncd.\r\n"},
		{.to = {BOB}, .for_rcpt = BOB, .body = ""}}},
    /* A RSET between chunks ends the transaction: the next chunk is
     * still read, then refused (RFC 3030 2). */
    {.name = "NOOP and RSET between BDAT chunks",
     .in = EHLO MAIL TO_ALICE "BDAT 3\r\n"
			      "abc"
			      "NOOP\r\n"
			      "BDAT 2 LAST\r\n"
			      "de" MAIL TO_BOB "BDAT 2\r\n"
			      "xy"
			      "RSET\r\n"
			      "BDAT 1 LAST\r\n"
			      "z"
			      "QUIT\r\n",
     .out = GREETING EHLO_OK MAIL_OK RCPT_OK
     "250 2.0.0 3 octets received\r\n" OK STORED MAIL_OK RCPT_OK
     "250 2.0.0 2 octets received\r\n" OK
     "503 5.5.1 Error: need MAIL command\r\n" BYE,
     .from = "a@b.test",
     .helo = "client.test",
     .with = "ESMTP",
     .stored = {{.to = {ALICE}, .for_rcpt = ALICE, .body = "abcde\r\n"}}},
    {.name = "RSET and NOOP interleaved, bare-LF command lines",
     .in = "NOOP\r\n" MAIL EHLO TO_ALICE MAIL "NOOP\n"
	   "RSET\r\n"
	   "DATA\r\n" MAIL "RCPT TO:<alice@localhost>\n"
	   "NOOP\r\n"
	   "DATA\r\n"
	   "QUIT\r\n",
     .out = GREETING OK "503 5.5.1 Error: send HELO/EHLO first\r\n" EHLO_OK
			"503 5.5.1 Error: need MAIL command\r\n" MAIL_OK
			"500 5.5.2 Line must end with CRLF\r\n" OK
			"503 5.5.1 Error: need MAIL command\r\n" MAIL_OK
			"500 5.5.2 Line must end with CRLF\r\n" OK
			"503 5.5.1 Error: need RCPT command\r\n" BYE},
    /* SMTP smuggling: "\n.\n" and "\r.\r\n" end nothing; the whole is
     * one message, refused for its bare LF and CR, and the MAIL inside it
     * is never a command. */
    {.name = "bare LF and CR inside DATA end nothing",
     .in = EHLO MAIL TO_ALICE "DATA\r\n"
			      "a\n.\nMAIL FROM:<evil@b.test>\r\n"
			      "b\r.\r\n"
			      ".\r\n"
			      "NOOP\r\n"
			      "QUIT\r\n",
     .out = GREETING EHLO_OK MAIL_OK RCPT_OK DATA_GO
     "500 5.5.2 Bare CR or LF in message\r\n" OK BYE},
    /* Over FULL_CUTS_MAX: cut near line starts only (plan_cuts). */
    {.name = "a longer message",
     .in = EHLO MAIL TO_ALICE
     "DATA\r\n"
     "From: <a@b.test>\r\n"
     "To: <alice@localhost>\r\n"
     "Subject: a longer message\r\n"
     "\r\n"
     "This message is longer than the transcripts cut at\r\n"
     "every offset, so it is cut near each line start.\r\n"
     "..A line that starts with a dot is sent with two.\r\n"
     "...\r\n"
     "A line with a dot. In the middle, and one at the end.\r\n"
     "\r\n"
     "..\r\n"
     "The last line ends right before the end marker.\r\n"
     ".\r\n"
     "QUIT\r\n",
     .out = GREETING EHLO_OK MAIL_OK RCPT_OK DATA_GO STORED BYE,
     .from = "a@b.test",
     .helo = "client.test",
     .with = "ESMTP",
     .stored = {{.to = {ALICE},
		 .for_rcpt = ALICE,
		 .body = "From: <a@b.test>\r\n"
			 "To: <alice@localhost>\r\n"
			 "Subject: a longer message\r\n"
			 "\r\n"
			 "This message is longer than the transcripts cut "
			 "at\r\n"
			 "every offset, so it is cut near each line start.\r\n"
			 ".A line that starts with a dot is sent with two.\r\n"
			 "..\r\n"
			 "A line with a dot. In the middle, and one at the "
			 "end.\r\n"
			 "\r\n"
			 ".\r\n"
			 "The last line ends right before the end "
			 "marker.\r\n"}}},
    /* SMTP AUTH (the client is on the server's own address: AUTH is
     * offered without TLS). Nothing here fails a password: failures
     * count toward the per-address throttle across runs. */
    {.name = "AUTH PLAIN with an initial response, AUTH again, DATA",
     .in = EHLO "AUTH PLAIN AGFsaWNlQGxvY2FsaG9zdABzZWNyZXQ=\r\n"
		"AUTH PLAIN\r\n"
		"MAIL FROM:<alice@localhost>\r\n" TO_BOB "DATA\r\n"
		"From: alice@localhost\r\n"
		"\r\n"
		"hi\r\n"
		".\r\n"
		"QUIT\r\n",
     .out = GREETING EHLO_OK AUTH_OK
     "503 5.5.1 Error: already authenticated\r\n" MAIL_OK RCPT_OK DATA_GO STORED
	 BYE,
     .from = "alice@localhost",
     .helo = "client.test",
     .auth = AUTH_LINE,
     .with = "ESMTPA",
     .stored = {{.to = {BOB},
		 .for_rcpt = BOB,
		 .body = "From: alice@localhost\r\n\r\nhi\r\n"}}},
    {.name = "AUTH LOGIN cancelled, then with an initial response",
     .in = EHLO "AUTH LOGIN\r\n"
		"*\r\n"
		"AUTH LOGIN YWxpY2VAbG9jYWxob3N0\r\n"
		"c2VjcmV0\r\n"
		"MAIL FROM:<bob@localhost>\r\n"
		"QUIT\r\n",
     .out = GREETING EHLO_OK
     "334 VXNlcm5hbWU6\r\n"
     "501 5.7.0 Authentication cancelled\r\n"
     "334 UGFzc3dvcmQ6\r\n" AUTH_OK "553 5.7.1 <bob@localhost>: Sender address "
     "rejected: not owned by user alice@localhost\r\n" BYE},
};

/* The POP3 user's maildrop, stored before the loop runs (uids 1 and 2).
 * The first has lines that start with a dot, its last line among them. */
#define CAROL "carol@localhost"
#define MSG1                                                                   \
	"From: <a@b.test>\r\n"                                                 \
	"Subject: dots\r\n"                                                    \
	"\r\n"                                                                 \
	".dot line\r\n"                                                        \
	"..two\r\n"                                                            \
	"plain\r\n"                                                            \
	".\r\n"
#define MSG1_STUFFED                                                           \
	"From: <a@b.test>\r\n"                                                 \
	"Subject: dots\r\n"                                                    \
	"\r\n"                                                                 \
	"..dot line\r\n"                                                       \
	"...two\r\n"                                                           \
	"plain\r\n"                                                            \
	"..\r\n"
#define MSG2                                                                   \
	"Subject: two\r\n"                                                     \
	"\r\n"                                                                 \
	"line 1\r\n"                                                           \
	"line 2\r\n"
#define MSG1_SIZE "63"
#define MSG2_SIZE "32"
#define TOTAL	  "95"

/* Dave's one message has a trace of its own, kept with the mailbox entry
 * (as SMTP stores Return-Path:), sent before the stored bytes and
 * counted in every size; its first stored line starts with a dot. */
#define DAVE	   "dave@localhost"
#define DAVE_RP	   "Return-Path: <a@b.test>\r\n"
#define MSG3	   ".Received: x\r\n\r\nbody\r\n"
#define MSG3_SIZE  "47" /* 25 + 22 */
#define DAVE_LOGIN "USER " DAVE "\r\nPASS " PASSWORD "\r\n"

#define POP_HI	 "+OK pillarbox ready.\r\n"
#define LOGIN	 "USER " CAROL "\r\nPASS " PASSWORD "\r\n"
#define LOGIN_OK "+OK\r\n+OK Logged in.\r\n"
#define POP_BYE	 "+OK Logging out.\r\n"

static const struct transcript pop3_cases[] = {
    {.name = "USER, PASS, STAT, LIST, UIDL",
     .in = LOGIN "STAT\r\nLIST\r\nUIDL\r\nLIST 2\r\nUIDL 1\r\nNOOP\r\nQUIT\r\n",
     .out = POP_HI LOGIN_OK "+OK 2 " TOTAL "\r\n"
			    "+OK 2 messages\r\n1 " MSG1_SIZE "\r\n2 " MSG2_SIZE
			    "\r\n.\r\n"
			    "+OK\r\n1 1\r\n2 2\r\n.\r\n"
			    "+OK 2 " MSG2_SIZE "\r\n"
			    "+OK 1 1\r\n"
			    "+OK\r\n" POP_BYE},
    {.name = "RETR with byte-stuffing, TOP n 0, TOP n 1",
     .in = LOGIN "RETR 1\r\nTOP 1 0\r\nTOP 2 1\r\nRETR 2\r\nQUIT\r\n",
     .out =
	 POP_HI LOGIN_OK "+OK " MSG1_SIZE " octets\r\n" MSG1_STUFFED ".\r\n"
			 "+OK\r\nFrom: <a@b.test>\r\nSubject: dots\r\n\r\n.\r\n"
			 "+OK\r\nSubject: two\r\n\r\nline 1\r\n.\r\n"
			 "+OK " MSG2_SIZE " octets\r\n" MSG2 ".\r\n" POP_BYE},
    /* RSET unmarks: the QUIT deletes nothing, the next run sees all. */
    {.name = "DELE, RSET",
     .in = LOGIN "DELE 1\r\nSTAT\r\nLIST\r\nRETR 1\r\nDELE 1\r\nRSET\r\n"
		 "STAT\r\nLIST 1\r\nQUIT\r\n",
     .out = POP_HI LOGIN_OK "+OK Marked to be deleted.\r\n"
			    "+OK 1 " MSG2_SIZE "\r\n"
			    "+OK 1 messages\r\n2 " MSG2_SIZE "\r\n.\r\n"
			    "-ERR Message is deleted.\r\n"
			    "-ERR Message is deleted.\r\n"
			    "+OK\r\n"
			    "+OK 2 " TOTAL "\r\n"
			    "+OK 1 " MSG1_SIZE "\r\n" POP_BYE},
    /* base64 of "\0carol@localhost\0secret" */
    {.name = "AUTH PLAIN with an initial response",
     .in = "AUTH PLAIN AGNhcm9sQGxvY2FsaG9zdABzZWNyZXQ=\r\nSTAT\r\nUIDL 2\r\n"
	   "QUIT\r\n",
     .out = POP_HI "+OK Logged in.\r\n+OK 2 " TOTAL "\r\n+OK 2 2\r\n" POP_BYE},
    {.name = "CAPA, AUTH PLAIN answered after \"+ \"",
     .in = "CAPA\r\nAUTH PLAIN\r\nAGNhcm9sQGxvY2FsaG9zdABzZWNyZXQ=\r\n"
	   "TOP 2 0\r\nQUIT\r\n",
     .out = POP_HI
     "+OK Capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\n"
     "SASL PLAIN\r\nSTLS\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
     "EXPIRE NEVER\r\nLOGIN-DELAY 0\r\nIMPLEMENTATION pillarbox\r\n.\r\n"
     "+ \r\n+OK Logged in.\r\n+OK\r\nSubject: two\r\n\r\n.\r\n" POP_BYE},
    {.name = "a mailbox entry's own trace: STAT, LIST, RETR, TOP",
     .in = DAVE_LOGIN "STAT\r\nLIST 1\r\nRETR 1\r\nTOP 1 0\r\nQUIT\r\n",
     .out = POP_HI LOGIN_OK
     "+OK 1 " MSG3_SIZE "\r\n"
     "+OK 1 " MSG3_SIZE "\r\n"
     "+OK " MSG3_SIZE " octets\r\n" DAVE_RP "..Received: x\r\n\r\nbody\r\n.\r\n"
     "+OK\r\n" DAVE_RP "..Received: x\r\n\r\n.\r\n" POP_BYE},
};

#define NSMTP (sizeof smtp_cases / sizeof *smtp_cases)
#define NPOP3 (sizeof pop3_cases / sizeof *pop3_cases)

/* --- what the client saw ------------------------------------------------ */

/* A growing byte string, always NUL-terminated once used. */

/* Every run of one transcript: its output (normalised), the queue ids its
 * 250s named (one per line, in order) and how it was sent. */
struct case_runs {
	size_t n;
	struct buf *got, *ids;
	char (*how)[32];
};

/* Freed by the teardown, so that a failed assertion leaks nothing. */
static struct {
	struct case_runs *runs;
	size_t ncases;
	double elapsed;
} res;

/* --- the server --------------------------------------------------------- */

static struct {
	char dir[64];
	struct config cfg;
	struct store *st;
	struct smtp_server smtp;
	struct pop3_server pop3;
	uv_loop_t *loop;
	uv_async_t stop;
	int smtp_port, pop3_port;
	int done_calls; /* conn_shutdown's done */
	void (*client)(void);
} h;

/* A port that was free a moment ago, or -1. */
static int free_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof sa;
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

/* Listens on 127.0.0.1 at a port picked now; returns it, or -1. */
static int listen_on(struct config_listener *cfg, const struct conn_proto *p,
		     void *ctx, const char *busy, const char *full)
{
	struct conn_listen_opts opts = {.proto = p,
					.ctx = ctx,
					.cfg = cfg,
					.busy_reply = busy,
					.full_reply = full};

	for (int attempt = 0; attempt < 2; attempt++) {
		int port = free_port();
		snprintf(cfg->listen, sizeof cfg->listen, "127.0.0.1:%d", port);
		if (port > 0 && conn_listen(h.loop, &opts) == 0)
			return port;
	}
	return -1;
}

/* conn_shutdown's done: every connection is gone, so no commit is
 * pending and no read open; the commit thread can stop (as serve() does). */
static void on_all_closed(void *arg)
{
	(void)arg;
	store_commit_stop(h.st);
	h.done_calls++;
}

static void on_stop(uv_async_t *a)
{
	conn_shutdown(on_all_closed, NULL);
	uv_close((uv_handle_t *)a, NULL);
}

static void *client_main(void *arg)
{
	(void)arg;
	h.client();
	uv_async_send(&h.stop);
	return NULL;
}

/* The server's log lines go where PILLARBOX_TEST_LOG says, else nowhere:
 * thousands of connections would bury cmocka's report. Returns the saved
 * stderr, or -1. */
static int logs_away(void)
{
	const char *path = getenv("PILLARBOX_TEST_LOG");
	int saved = dup(STDERR_FILENO), fd;

	fd = open(path != NULL ? path : "/dev/null",
		  O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd >= 0) {
		dup2(fd, STDERR_FILENO);
		close(fd);
	}
	return saved;
}

static void logs_back(int saved)
{
	if (saved >= 0) {
		dup2(saved, STDERR_FILENO);
		close(saved);
	}
}

/* Runs both listeners, the commit thread and the client in its thread
 * until the client is done and conn_shutdown() has closed everything.
 * Then checks the loop closes clean and the client had no error. Nothing
 * asserts while stderr is away. */
static void run_server(void (*client)(void))
{
	pthread_t th;
	double t0 = now_s();
	int saved, ran = -1, started;

	h.client = client;
	h.done_calls = 0;
	client_err[0] = '\0';
	h.loop = malloc(sizeof *h.loop); /* leaked if it does not close */
	assert_non_null(h.loop);
	assert_int_equal(uv_loop_init(h.loop), 0);
	loop_init(h.loop);
	saved = logs_away();
	smtp_server_init(&h.smtp, &h.cfg, h.st);
	pop3_server_init(&h.pop3, &h.cfg, h.st);
	started = store_commit_start(h.st, h.loop) == 0 &&
		  (h.smtp_port =
		       listen_on(&h.cfg.smtp, &smtp_proto, &h.smtp,
				 h.smtp.busy_reply, h.smtp.full_reply)) > 0 &&
		  (h.pop3_port =
		       listen_on(&h.cfg.pop3, &pop3_proto, &h.pop3,
				 h.pop3.busy_reply, h.pop3.full_reply)) > 0 &&
		  uv_async_init(h.loop, &h.stop, on_stop) == 0 &&
		  pthread_create(&th, NULL, client_main, NULL) == 0;
	if (started) {
		ran = uv_run(h.loop, UV_RUN_DEFAULT);
		pthread_join(th, NULL);
	}
	logs_back(saved);
	res.elapsed = now_s() - t0;
	assert_true(started);
	assert_int_equal(ran, 0);

	/* Everything closed: no connection, no handle, no maildrop lock,
	 * the commit thread stopped, and conn_shutdown's done ran once. */
	assert_int_equal(conn_count(), 0);
	assert_int_equal(uv_loop_close(h.loop), 0);
	free(h.loop);
	h.loop = NULL;
	assert_null(h.pop3.locks);
	assert_int_equal(h.done_calls, 1);
	if (client_err[0] != '\0')
		print_error("client: %s\n", client_err);
	assert_string_equal(client_err, "");
}

/* --- the client side ---------------------------------------------------- */

/* One connection: sends in[0..n) cut at cuts[0..ncuts), a short pause
 * after each piece, and returns everything received until EOF. */
static struct buf converse(int port, const char *in, size_t n,
			   const size_t *cuts, size_t ncuts)
{
	struct buf out = {0};
	size_t start = 0;
	int fd = cl_connect(port);

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

/* Replaces the queue id after each "stored as " with "ID", keeping the
 * ids, one per line, in *ids. */
static void normalise(struct buf *b, struct buf *ids)
{
	static const char key[] = "stored as ";
	char *p = b->p, *id, *end;

	buf_add(ids, "", 0);
	while ((p = strstr(p, key)) != NULL) {
		id = p + sizeof key - 1;
		for (end = id; isxdigit((unsigned char)*end); end++)
			;
		buf_add(ids, id, (size_t)(end - id));
		buf_add(ids, "\n", 1);
		p = id;
		if (end - id < 2)
			continue; /* not an id: left for the comparison */
		memmove(id + 2, end, (size_t)(b->p + b->n - end) + 1);
		memcpy(id, "ID", 2);
		b->n -= (size_t)(end - id) - 2;
	}
}

/* Offsets k (0 < k < n) at which in[0..n) is cut in two, into cuts
 * (n entries); returns how many. Every offset of a transcript up to
 * FULL_CUTS_MAX octets. Of a longer one, those within CUT_WINDOW of a
 * boundary: the start of each line (a command, a DATA line, so every
 * CRLF.CRLF and every dot-stuffed line) and each end of a BDAT chunk,
 * whose octets are skipped, not read as lines. */
static size_t plan_cuts(const char *in, size_t n, size_t *cuts)
{
	bool *near = calloc(n + 1, sizeof *near);
	size_t pos = 0, ncuts = 0;

	if (near == NULL)
		abort();
	for (size_t k = 0; k <= CUT_WINDOW && k <= n; k++)
		near[k] = true; /* the first command's start */
	while (pos < n) {
		const char *lf = memchr(in + pos, '\n', n - pos);
		size_t next = lf != NULL ? (size_t)(lf - in) + 1 : n, b[2];
		int nb = 0;

		b[nb++] = next;
		if (strncmp(in + pos, "BDAT ", 5) == 0) {
			next += strtoul(in + pos + 5, NULL, 10);
			b[nb++] = next < n ? next : n;
		}
		for (int i = 0; i < nb; i++)
			for (size_t k = b[i] > CUT_WINDOW ? b[i] - CUT_WINDOW
							  : 0;
			     k <= b[i] + CUT_WINDOW && k <= n; k++)
				near[k] = true;
		pos = next;
	}
	for (size_t k = 1; k < n; k++)
		if (n <= FULL_CUTS_MAX || near[k])
			cuts[ncuts++] = k;
	free(near);
	return ncuts;
}

/* Sends each transcript whole, byte by byte and cut at each planned
 * offset; stops at the first error (a stuck server costs CLIENT_WAIT_MS
 * per run). */
static void run_cases(const struct transcript *cases, size_t ncases, int port)
{
	for (size_t i = 0; i < ncases && client_err[0] == '\0'; i++) {
		struct case_runs *r = &res.runs[i];
		const char *in = cases[i].in;
		size_t n = strlen(in), *cuts = malloc(n * sizeof *cuts);
		size_t *bytes = malloc(n * sizeof *bytes), max;

		if (cuts == NULL || bytes == NULL)
			abort();
		max = plan_cuts(in, n, cuts) + 2;
		r->got = calloc(max, sizeof *r->got);
		r->ids = calloc(max, sizeof *r->ids);
		r->how = calloc(max, sizeof *r->how);
		if (r->got == NULL || r->ids == NULL || r->how == NULL)
			abort();
		for (size_t k = 0; k + 1 < n; k++)
			bytes[k] = k + 1;
		for (size_t k = 0; k < max && client_err[0] == '\0'; k++) {
			if (k == 0) {
				r->got[k] = converse(port, in, n, NULL, 0);
				snprintf(r->how[k], 32, "whole");
			} else if (k == 1) {
				r->got[k] = converse(port, in, n, bytes, n - 1);
				snprintf(r->how[k], 32, "byte by byte");
			} else {
				r->got[k] =
				    converse(port, in, n, &cuts[k - 2], 1);
				snprintf(r->how[k], 32, "cut at %zu",
					 cuts[k - 2]);
			}
			normalise(&r->got[k], &r->ids[k]);
			r->n++;
		}
		free(cuts);
		free(bytes);
	}
}

static void smtp_client(void)
{
	run_cases(smtp_cases, NSMTP, h.smtp_port);
}

static void pop3_client(void)
{
	run_cases(pop3_cases, NPOP3, h.pop3_port);
}

/* --- checks ------------------------------------------------------------- */

/* s[0..n) with CR, LF and other controls shown as escapes, into out
 * (truncated to size). */
static const char *visible(const char *s, size_t n, char *out, size_t size)
{
	size_t o = 0;

	for (size_t i = 0; i < n && o + 8 < size; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '\r')
			o += (size_t)snprintf(out + o, size - o, "\\r");
		else if (ch == '\n')
			o += (size_t)snprintf(out + o, size - o, "\\n");
		else if (ch < ' ' || ch >= 0x7f)
			o += (size_t)snprintf(out + o, size - o, "\\x%02x", ch);
		else
			out[o++] = (char)ch;
	}
	out[o] = '\0';
	return out;
}

/* Whole, byte by byte, and one per cut. */
static size_t planned_runs(const char *in)
{
	size_t n = strlen(in), *cuts = malloc(n * sizeof *cuts), runs;

	if (cuts == NULL)
		abort();
	runs = plan_cuts(in, n, cuts) + 2;
	free(cuts);
	return runs;
}

/* Every run of every case gave the expected bytes; reports the first
 * few that did not. */
static void check_outputs(const struct transcript *cases, size_t ncases)
{
	size_t bad = 0, runs = 0;
	char a[4096], b[4096];

	for (size_t i = 0; i < ncases; i++) {
		const char *want = cases[i].out;
		struct case_runs *r = &res.runs[i];

		assert_int_equal(r->n, planned_runs(cases[i].in));
		runs += r->n;
		for (size_t k = 0; k < r->n; k++) {
			const char *got = r->got[k].p;
			size_t at = 0;
			if (strcmp(got, want) == 0)
				continue;
			while (got[at] != '\0' && got[at] == want[at])
				at++;
			if (bad++ < 3)
				print_error(
				    "\"%s\" sent %s differs at octet "
				    "%zu:\n want: %s\n  got: %s\n",
				    cases[i].name, r->how[k], at,
				    visible(want, strlen(want), a, sizeof a),
				    visible(got, strlen(got), b, sizeof b));
		}
	}
	print_message("%zu runs of %zu transcripts in %.1f s\n", runs, ncases,
		      res.elapsed);
	if (bad > 0)
		print_error("%zu runs of %zu gave other output\n", bad, runs);
	assert_int_equal(bad, 0);
}

/* Why a mailbox entry is not its own Return-Path (trace) and the stored
 * message the Received: trace header (RFC 5321 4.4, tests/PROTOCOL.md)
 * with queue id `id`, then body; NULL if it is. */
static const char *stored_problem(const struct store_mail *m, const char *msg,
				  size_t len, const struct transcript *t,
				  const struct delivery *d, const char *id,
				  size_t idlen)
{
	char head[512];
	size_t blen = strlen(d->body), hlen;
	const char *p, *end;
	int n;

	n = snprintf(head, sizeof head, "Return-Path: <%s>\r\n", t->from);
	if (m->trace_len != (size_t)n || memcmp(m->trace, head, (size_t)n) ||
	    m->size != m->trace_len + len)
		return "the mailbox entry's Return-Path (or size) differs";
	n = snprintf(head, sizeof head,
		     "Received: from %s ([127.0.0.1])\r\n%s"
		     "\tby mx.test (pillarbox) with %s id %.*s",
		     t->helo, t->auth ? t->auth : "", t->with, (int)idlen, id);
	hlen = (size_t)n;
	if (len < hlen + blen || memcmp(msg, head, hlen) != 0)
		return "trace header (or queue id) differs";
	if (memcmp(msg + len - blen, d->body, blen) != 0)
		return "body differs";
	p = msg + hlen;
	/* "\r\n\tfor <rcpt>; DATE\r\n" for one recipient, else
	 * ";\r\n\tDATE\r\n" */
	end = msg + len - blen;
	if (d->for_rcpt != NULL)
		n = snprintf(head, sizeof head, "\r\n\tfor <%s>; ",
			     d->for_rcpt);
	else
		n = snprintf(head, sizeof head, ";\r\n\t");
	if ((size_t)(end - p) < (size_t)n || memcmp(p, head, (size_t)n) != 0)
		return d->for_rcpt != NULL
			   ? "no \"for\" clause for its one recipient"
			   : "the date is not on a line of its own";
	p += n;
	if (end - p < 3 ||
	    memcmp(end - 2, "\r\n", 2) != 0 ||
	    memchr(p, '\r', (size_t)(end - p)) != end - 2 ||
	    memchr(p, '\n', (size_t)(end - p)) != end - 1)
		return "the date line, or what ends the header, differs";
	return NULL;
}

/* A mailbox as the store lists it, checked message by message. */
struct mbox_check {
	struct store_txn *txn;
	const char *user;
	size_t seen;
	char why[512];
};

/* The delivery the store must hold at position pos of user's mailbox,
 * with the queue id its run's 250 named; false when there are fewer. */
static bool expected_at(const char *user, size_t pos,
			const struct transcript **t, const struct delivery **d,
			const char **id, size_t *idlen)
{
	for (size_t i = 0; i < NSMTP; i++) {
		const struct case_runs *r = &res.runs[i];
		for (size_t k = 0; k < r->n; k++) {
			const char *ids = r->ids[k].p;
			for (size_t j = 0; j < 3; j++) {
				const struct delivery *dj =
				    &smtp_cases[i].stored[j];
				bool mine = false;
				for (size_t u = 0; u < 2 && dj->to[u]; u++)
					mine |= strcmp(dj->to[u], user) == 0;
				if (dj->body != NULL && mine && pos-- == 0) {
					*t = &smtp_cases[i];
					*d = dj;
					*id = ids;
					*idlen = strcspn(ids, "\n");
					return true;
				}
				if (dj->body != NULL)
					ids += strcspn(ids, "\n") +
					       (ids[strcspn(ids, "\n")] != 0);
			}
		}
	}
	return false;
}

static int mbox_check_one(const struct store_mail *m, void *arg)
{
	struct mbox_check *mc = arg;
	const struct transcript *t;
	const struct delivery *d;
	const char *id, *why;
	const void *data;
	size_t idlen, len;
	int r;

	if (!expected_at(mc->user, mc->seen, &t, &d, &id, &idlen)) {
		snprintf(mc->why, sizeof mc->why,
			 "%s: more messages than deliveries", mc->user);
		return 1;
	}
	r = store_msg_get(mc->txn, m->id, &data, &len);
	why = r < 0 ? "cannot be read"
		    : stored_problem(m, data, len, t, d, id, idlen);
	if (why != NULL) {
		char v[2048];
		snprintf(mc->why, sizeof mc->why,
			 "%s message %zu (uid %u, of \"%s\"): %s: %s", mc->user,
			 mc->seen, m->uid, t->name, why,
			 r < 0 ? "" : visible(data, len, v, sizeof v));
		return 1;
	}
	mc->seen++;
	return 0;
}

/* Each SMTP recipient's mailbox holds what every run stored, in order. */
static void check_mailbox(const char *user)
{
	struct mbox_check mc = {.user = user};
	const struct transcript *t;
	const struct delivery *d;
	const char *id;
	size_t idlen, want = 0;

	while (expected_at(user, want, &t, &d, &id, &idlen))
		want++;
	assert_int_equal(store_txn_begin(h.st, false, &mc.txn), 0);
	store_mailbox_list(mc.txn, user, mbox_check_one, &mc);
	store_txn_abort(mc.txn);
	if (mc.why[0] != '\0')
		print_error("%s\n", mc.why);
	assert_string_equal(mc.why, "");
	assert_int_equal(mc.seen, want);
}

static int count_one(const struct store_mail *m, void *arg)
{
	(void)m;
	++*(size_t *)arg;
	return 0;
}

static size_t mailbox_size(const char *user)
{
	struct store_txn *txn;
	size_t n = 0;

	assert_int_equal(store_txn_begin(h.st, false, &txn), 0);
	assert_int_equal(store_mailbox_list(txn, user, count_one, &n), 0);
	store_txn_abort(txn);
	return n;
}

/* --- the tests ---------------------------------------------------------- */

static void test_smtp_transcripts(void **state)
{
	size_t stored = 0, n;

	(void)state;
	res.runs = calloc(NSMTP, sizeof *res.runs);
	assert_non_null(res.runs);
	res.ncases = NSMTP;
	run_server(smtp_client);
	check_outputs(smtp_cases, NSMTP);
	/* The queue id a whole run was told: one, in lower-case hex. */
	n = strspn(res.runs[0].ids[0].p, "0123456789abcdef");
	assert_true(n > 0);
	assert_string_equal(res.runs[0].ids[0].p + n, "\n");
	/* Every message each run stored, and nothing else. */
	for (size_t i = 0; i < NSMTP; i++)
		for (size_t j = 0; j < 3; j++)
			stored += res.runs[i].n *
				  (smtp_cases[i].stored[j].body != NULL);
	assert_int_equal(h.smtp.accepted, stored);
	assert_int_equal(h.smtp.refused, 0);
	check_mailbox(ALICE);
	check_mailbox(BOB);
}

/* The offsets of a long transcript: near its start, near each line start
 * and near each chunk end, whose octets are not read as lines. */
static void test_plan_cuts(void **state)
{
	static const size_t want[] = {1,   2,	8,   9,	  10,  11,  12,
				      258, 259, 260, 261, 262, 264, 265};
	char in[300];
	size_t cuts[300], n;

	(void)state;
	strcpy(in, "BDAT 250\r\n");
	memset(in + 10, 'x', 250);
	strcpy(in + 260, "QUIT\r\n");
	n = plan_cuts(in, strlen(in), cuts);
	assert_int_equal(n, sizeof want / sizeof *want);
	assert_memory_equal(cuts, want, sizeof want);
	/* Up to FULL_CUTS_MAX octets: every offset. */
	in[FULL_CUTS_MAX] = '\0';
	assert_int_equal(plan_cuts(in, FULL_CUTS_MAX, cuts), FULL_CUTS_MAX - 1);
}

static void test_pop3_transcripts(void **state)
{
	(void)state;
	res.runs = calloc(NPOP3, sizeof *res.runs);
	assert_non_null(res.runs);
	res.ncases = NPOP3;
	run_server(pop3_client);
	check_outputs(pop3_cases, NPOP3);
	/* Nobody QUIT with a message marked: the maildrop is whole. */
	assert_int_equal(mailbox_size(CAROL), 2);
}

static int free_res(void **state)
{
	(void)state;
	for (size_t i = 0; i < res.ncases; i++) {
		for (size_t k = 0; k < res.runs[i].n; k++) {
			buf_free(&res.runs[i].got[k]);
			buf_free(&res.runs[i].ids[k]);
		}
		free(res.runs[i].got);
		free(res.runs[i].ids);
		free(res.runs[i].how);
	}
	free(res.runs);
	memset(&res, 0, sizeof res);
	return 0;
}

/* Adds a message to user's mailbox (before the commit thread runs). */
static void deliver(struct store_txn *txn, const char *user, const char *msg)
{
	uint64_t id;
	void *dst;

	assert_int_equal(store_msg_put(txn, strlen(msg), &id, &dst), 0);
	memcpy(dst, msg, strlen(msg));
	assert_int_equal(store_mailbox_add(txn, user, id, NULL), 0);
}

/* The store and config every test shares: domain localhost, users alice,
 * bob and carol (password "secret"), carol's two messages. */
static int setup(void **state)
{
	const char *users[] = {ALICE, BOB, CAROL, DAVE};
	char hash[STORE_HASH_MAX + 1];
	struct store_txn *txn;

	(void)state;
	memset(&h, 0, sizeof h);
	client_err[0] = '\0';
	strcpy(h.dir, "/tmp/test_transcripts.XXXXXX");
	assert_non_null(mkdtemp(h.dir));
	config_defaults(&h.cfg);
	strcpy(h.cfg.hostname, "mx.test");
	strcpy(h.cfg.data_dir, h.dir);
	h.cfg.login_delay = 0;
	msgbuf_spill_dir = h.dir;
	assert_int_equal(auth_init(), 0);
	assert_int_equal(store_open(h.dir, h.cfg.max_store_size, &h.st), 0);
	assert_int_equal(store_txn_begin(h.st, true, &txn), 0);
	assert_int_equal(store_domain_add(txn, "localhost"), 0);
	for (size_t i = 0; i < sizeof users / sizeof *users; i++) {
		assert_int_equal(auth_hash(PASSWORD, hash, sizeof hash), 0);
		assert_int_equal(store_user_add(txn, users[i], hash), 0);
	}
	deliver(txn, CAROL, MSG1);
	deliver(txn, CAROL, MSG2);
	{
		uint64_t id;
		void *dst;
		assert_int_equal(store_msg_put(txn, strlen(MSG3), &id, &dst),
				 0);
		memcpy(dst, MSG3, strlen(MSG3));
		assert_int_equal(
		    store_mailbox_add_trace(txn, DAVE, id, DAVE_RP, NULL), 0);
	}
	assert_int_equal(store_txn_commit(txn), 0);
	return 0;
}

static int teardown(void **state)
{
	char path[128];

	(void)state;
	store_close(h.st);
	h.st = NULL;
	auth_cleanup();
	event_reset();
	snprintf(path, sizeof path, "%s/data.mdb", h.dir);
	unlink(path);
	snprintf(path, sizeof path, "%s/lock.mdb", h.dir);
	unlink(path);
	return rmdir(h.dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plan_cuts),
	    cmocka_unit_test_teardown(test_smtp_transcripts, free_res),
	    cmocka_unit_test_teardown(test_pop3_transcripts, free_res),
	};

	/* As serve() does: a peer gone mid-write is an error return. */
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
