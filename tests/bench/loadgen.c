/* loadgen - load generator for the pillarbox benchmark (tests/bench/bench.sh).
 *
 * One process, one libuv loop, many TCP sessions to 127.0.0.1-style targets.
 *   loadgen smtp HOST PORT CONC SECONDS MSGSIZE NRCPTUSERS
 *       CONC sessions, no pipelining: EHLO once, then MAIL/RCPT/DATA/body,
 *       waiting for every reply, until SECONDS have passed; then QUIT.
 *       Recipients cycle over u1..uN@localhost.
 *   loadgen fill HOST PORT NUSERS PERUSER MSGSIZE
 *       one session per user uK@localhost delivering PERUSER messages to
 *       it, MAIL+RCPT+DATA sent as one pipelined group (RFC 2920).
 *   loadgen pop3 HOST PORT CONC NUSERS PASSWORD
 *       CONC clients (CONC <= NUSERS), client i logs in as u(i+1)@localhost
 *       with USER/PASS, STAT, RETRs every message with up to 16 in flight,
 *       checks each ends in CRLF.CRLF, QUIT (no DELE).
 *   loadgen idle smtp|pop3 HOST PORT N
 *       opens N sessions, reads the greetings, prints "ready greeted=G
 *       failed=F", then holds them until stdin (a pipe or tty) reaches EOF
 *       or SIGTERM/SIGINT arrives.
 *   loadgen body MSGSIZE
 *       writes the exact message body the other modes send (CRLF lines).
 * Results: one "key=value ..." line on stdout; problems on stderr.
 * Exit 0 when every session went as expected, 1 on any error, 2 on usage. */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

enum mode { M_SMTP, M_FILL, M_POP3, M_IDLE };
enum state {
    S_GREET, S_EHLO, S_MAIL, S_RCPT, S_DATA, S_BODY, S_QUIT, /* SMTP */
    P_GREET, P_USER, P_PASS, P_STAT, P_RETR, P_QUIT,         /* POP3 */
    X_IDLE, X_DONE
};
static const char *state_name[] = {
    "greeting", "EHLO", "MAIL", "RCPT", "DATA", "end of data", "QUIT",
    "greeting", "USER", "PASS", "STAT", "RETR", "QUIT", "idle", "done"};

#define RETR_WINDOW 16  /* POP3 RETRs in flight per client */
#define IDLE_PENDING 64 /* idle mode: connects not yet greeted at once */
#define MAX_ERRMSG 20   /* error lines printed before going quiet */

typedef struct conn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    int id, user, closing;
    enum state state;
    char *buf; /* received, not yet parsed */
    size_t len, cap, scan;
    long sent;                    /* fill: messages delivered so far */
    long nmsg, next_send, next_recv; /* pop3 */
} conn;

static struct {
    enum mode mode;
    int pop3proto; /* sessions speak POP3 (pop3 mode, idle pop3) */
    struct sockaddr_in addr;
    int conc, nusers, target;
    double secs;
    long peruser;
    const char *password;
    char *body; /* message + ".\r\n" */
    size_t bodylen;
    size_t chunk; /* read buffer growth step */
    uint64_t t0, deadline;
    long msgs, errors, errmsgs, rr;
    uint64_t bytes;
    int active, launched, pending, greeted, failed, dropped, stopping;
    int ready_printed;
    conn **conns;
    uv_loop_t *loop;
    uv_timer_t watchdog;
    uv_signal_t sigterm, sigint;
    uv_pipe_t in_pipe;
    uv_tty_t in_tty;
    int in_kind; /* 0 none, 1 pipe, 2 tty */
} G;

static void conn_close(conn *c);
static void launch(void);

static void errorf(conn *c, const char *fmt, ...) {
    G.errors++;
    if (G.errmsgs++ >= MAX_ERRMSG) {
        if (G.errmsgs == MAX_ERRMSG + 1)
            fprintf(stderr, "loadgen: further errors not shown\n");
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    if (c)
        fprintf(stderr, "loadgen: session %d (%s): ", c->id, state_name[c->state]);
    else
        fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Unexpected reply: report it with the offending line and end the session. */
static void bad_reply(conn *c, const char *want, const char *line, size_t n) {
    if (n > 200)
        n = 200;
    errorf(c, "expected %s, got \"%.*s\"", want, (int)n, line);
    conn_close(c);
}

static double now_s(void) { return (double)uv_hrtime() / 1e9; }

/* ---- message body ---------------------------------------------------- */

/* Header block plus lines of at most 80 octets (CRLF included) of letters,
 * exactly `size` octets, ending in CRLF, no line starting with '.'. */
static char *make_body(size_t size, size_t *outlen) {
    static const char hdr[] =
        "From: Bench <bench@localhost>\r\nTo: <bench@localhost>\r\n"
        "Subject: pillarbox benchmark message\r\n"
        "Message-ID: <bench@pillarbox.bench>\r\n\r\n";
    size_t h = sizeof hdr - 1;
    if (size < h + 2)
        size = h + 2;
    char *b = malloc(size + 3), *p = b + h;
    if (!b)
        abort();
    memcpy(b, hdr, h);
    size_t left = size - h, line = 0;
    while (left >= 2) {
        size_t n = left < 80 ? left : 80;
        if (left - n == 1)
            n -= 2; /* never leave a single octet behind */
        for (size_t i = 0; i + 2 < n; i++)
            p[i] = (char)('a' + (line + i) % 26);
        p[n - 2] = '\r';
        p[n - 1] = '\n';
        p += n;
        left -= n;
        line++;
    }
    memcpy(p, ".\r\n", 3);
    *outlen = size;
    return b;
}

/* ---- writing ----------------------------------------------------------- */

typedef struct {
    uv_write_t req;
    char text[];
} wreq;

static void on_write(uv_write_t *req, int status) {
    conn *c = req->handle->data;
    if (status < 0 && !c->closing)
        errorf(c, "write: %s", uv_strerror(status));
    free(req);
}

/* Sends `text` (copied) followed by `extra` (static, e.g. the body). */
static void sendv(conn *c, const char *text, size_t n, const char *extra, size_t xn) {
    wreq *w = malloc(sizeof *w + n + 1);
    if (!w)
        abort();
    memcpy(w->text, text, n);
    uv_buf_t bufs[2];
    int nb = 0;
    if (n)
        bufs[nb++] = uv_buf_init(w->text, (unsigned)n);
    if (xn)
        bufs[nb++] = uv_buf_init((char *)extra, (unsigned)xn);
    int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, (unsigned)nb, on_write);
    if (r < 0) {
        free(w);
        errorf(c, "write: %s", uv_strerror(r));
        conn_close(c);
    }
}

static void sendf(conn *c, const char *fmt, ...) {
    char line[600];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line)
        abort();
    sendv(c, line, (size_t)n, NULL, 0);
}

/* ---- SMTP ---------------------------------------------------------------- */

static void smtp_next_message(conn *c) {
    int stop = G.mode == M_SMTP ? uv_hrtime() >= G.deadline : c->sent >= G.peruser;
    if (stop) {
        sendf(c, "QUIT\r\n");
        c->state = S_QUIT;
        return;
    }
    int user = G.mode == M_FILL ? c->user : (int)(G.rr++ % G.nusers) + 1;
    if (G.mode == M_FILL) /* pipelined group, DATA last */
        sendf(c, "MAIL FROM:<bench@localhost>\r\nRCPT TO:<u%d@localhost>\r\nDATA\r\n", user);
    else
        sendf(c, "MAIL FROM:<bench@localhost>\r\n");
    c->user = user;
    c->state = S_MAIL;
}

static void smtp_reply(conn *c, int code, const char *line, size_t n) {
    int piped = G.mode == M_FILL;
    switch (c->state) {
    case S_GREET:
        if (code != 220)
            return bad_reply(c, "220 greeting", line, n);
        if (G.mode == M_IDLE) {
            c->state = X_IDLE;
            G.greeted++;
            G.pending--;
            launch();
            return;
        }
        sendf(c, "EHLO loadgen.bench\r\n");
        c->state = S_EHLO;
        return;
    case S_EHLO:
        if (code != 250)
            return bad_reply(c, "250 to EHLO", line, n);
        return smtp_next_message(c);
    case S_MAIL:
        if (code != 250)
            return bad_reply(c, "250 to MAIL", line, n);
        if (!piped)
            sendf(c, "RCPT TO:<u%d@localhost>\r\n", c->user);
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
        conn_close(c);
        return;
    default:
        return bad_reply(c, "no reply", line, n);
    }
}

/* One complete (possibly multi-line) reply at the start of c->buf:
 * returns the octets it takes, 0 when more input is needed. */
static size_t smtp_parse(conn *c) {
    size_t pos = 0;
    for (;;) {
        char *line = c->buf + pos;
        char *eol = memmem(line, c->len - pos, "\r\n", 2);
        if (!eol)
            return 0;
        size_t n = (size_t)(eol - line);
        if (n < 3 || !isdigit((unsigned char)line[0]) || !isdigit((unsigned char)line[1]) ||
            !isdigit((unsigned char)line[2]) || (n > 3 && line[3] != ' ' && line[3] != '-')) {
            bad_reply(c, "an SMTP reply line", line, n);
            return 0;
        }
        pos += n + 2;
        if (n > 3 && line[3] == '-')
            continue; /* multi-line reply goes on */
        smtp_reply(c, (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0'), line, n);
        return pos;
    }
}

/* ---- POP3 ------------------------------------------------------------------ */

static void pop3_send_retrs(conn *c) {
    char cmds[RETR_WINDOW * 24];
    size_t n = 0;
    while (c->next_send <= c->nmsg && c->next_send - c->next_recv < RETR_WINDOW)
        n += (size_t)sprintf(cmds + n, "RETR %ld\r\n", c->next_send++);
    if (n)
        sendv(c, cmds, n, NULL, 0);
}

static void pop3_reply(conn *c, int ok, const char *line, size_t n) {
    if (c->state == X_IDLE) /* nothing is asked while holding */
        return bad_reply(c, "nothing", line, n);
    if (!ok)
        return bad_reply(c, "+OK", line, n);
    switch (c->state) {
    case P_GREET:
        if (G.mode == M_IDLE) {
            c->state = X_IDLE;
            G.greeted++;
            G.pending--;
            launch();
            return;
        }
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
    case P_STAT: {
        char tmp[64];
        size_t k = n < sizeof tmp - 1 ? n : sizeof tmp - 1;
        memcpy(tmp, line, k);
        tmp[k] = 0;
        if (sscanf(tmp, "+OK %ld", &c->nmsg) != 1 || c->nmsg < 0)
            return bad_reply(c, "+OK <count> <size>", line, n);
        c->next_send = c->next_recv = 1;
        if (c->nmsg == 0) {
            sendf(c, "QUIT\r\n");
            c->state = P_QUIT;
            return;
        }
        c->state = P_RETR;
        pop3_send_retrs(c);
        return;
    }
    case P_QUIT:
        c->state = X_DONE;
        conn_close(c);
        return;
    default:
        return bad_reply(c, "no reply", line, n);
    }
}

/* A whole RETR answer arrived: status line `line`/`n`, `body` octets. */
static void pop3_retr_done(conn *c, const char *line, size_t n, size_t body) {
    char tmp[64];
    size_t k = n < sizeof tmp - 1 ? n : sizeof tmp - 1;
    unsigned long claimed;
    memcpy(tmp, line, k);
    tmp[k] = 0;
    /* dot-stuffing only adds octets: fewer than announced means truncation */
    if (sscanf(tmp, "+OK %lu octets", &claimed) == 1 && body < claimed) {
        errorf(c, "RETR %ld: %zu octets received, %lu announced", c->next_recv, body, claimed);
        conn_close(c);
        return;
    }
    G.msgs++;
    G.bytes += body;
    c->next_recv++;
    if (c->next_recv > c->nmsg) {
        sendf(c, "QUIT\r\n");
        c->state = P_QUIT;
    } else {
        pop3_send_retrs(c);
    }
}

static size_t pop3_parse(conn *c) {
    char *b = c->buf, *eol = memmem(b, c->len, "\r\n", 2);
    if (!eol)
        return 0;
    size_t n = (size_t)(eol - b);
    int ok = n >= 3 && memcmp(b, "+OK", 3) == 0;
    if (!ok && !(n >= 4 && memcmp(b, "-ERR", 4) == 0)) {
        bad_reply(c, "+OK or -ERR", b, n);
        return 0;
    }
    if (c->state == P_RETR && ok) {
        /* the body ends at the first CRLF "." CRLF, the status line's CRLF
         * included (empty body); resume the search where the last stopped */
        size_t from = c->scan > n ? c->scan : n;
        char *end = memmem(b + from, c->len - from, "\r\n.\r\n", 5);
        if (!end) {
            c->scan = c->len >= 4 ? c->len - 4 : 0;
            return 0;
        }
        c->scan = 0;
        pop3_retr_done(c, b, n, (size_t)(end + 2 - (eol + 2)));
        return (size_t)(end + 5 - b);
    }
    pop3_reply(c, ok, b, n);
    return n + 2;
}

/* ---- connections ------------------------------------------------------------ */

static void finish_if_done(void) {
    if (G.active > 0 || (G.mode == M_IDLE && !G.stopping))
        return;
    if (!uv_is_closing((uv_handle_t *)&G.watchdog))
        uv_close((uv_handle_t *)&G.watchdog, NULL);
    if (G.mode == M_IDLE) {
        if (!uv_is_closing((uv_handle_t *)&G.sigterm)) {
            uv_close((uv_handle_t *)&G.sigterm, NULL);
            uv_close((uv_handle_t *)&G.sigint, NULL);
        }
        if (G.in_kind == 1 && !uv_is_closing((uv_handle_t *)&G.in_pipe))
            uv_close((uv_handle_t *)&G.in_pipe, NULL);
        if (G.in_kind == 2 && !uv_is_closing((uv_handle_t *)&G.in_tty))
            uv_close((uv_handle_t *)&G.in_tty, NULL);
    }
}

static void on_closed(uv_handle_t *h) {
    conn *c = h->data;
    G.conns[c->id] = NULL;
    free(c->buf);
    free(c);
    G.active--;
    finish_if_done();
}

static void conn_close(conn *c) {
    if (c->closing)
        return;
    c->closing = 1;
    if (c->state != X_DONE && G.mode == M_IDLE && !G.stopping) {
        if (c->state == X_IDLE)
            G.dropped++;
        else {
            G.failed++;
            G.pending--;
        }
        launch();
    }
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    conn *c = h->data;
    (void)suggested;
    if (c->cap - c->len < G.chunk) {
        size_t cap = c->cap * 2 > c->len + G.chunk ? c->cap * 2 : c->len + G.chunk;
        char *nb = realloc(c->buf, cap);
        if (!nb)
            abort();
        c->buf = nb;
        c->cap = cap;
    }
    *buf = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    conn *c = s->data;
    (void)buf;
    if (c->closing)
        return;
    if (nread < 0) {
        if (G.stopping)
            conn_close(c);
        else if (nread == UV_EOF) {
            errorf(c, "connection closed by the server");
            conn_close(c);
        } else {
            errorf(c, "read: %s", uv_strerror((int)nread));
            conn_close(c);
        }
        return;
    }
    c->len += (size_t)nread;
    while (!c->closing && c->len > 0) {
        size_t used = G.pop3proto ? pop3_parse(c) : smtp_parse(c);
        if (used == 0)
            break;
        memmove(c->buf, c->buf + used, c->len - used);
        c->len -= used;
    }
}

static void on_connect(uv_connect_t *req, int status) {
    conn *c = req->handle->data;
    if (status < 0) {
        if (!c->closing)
            errorf(c, "connect: %s", uv_strerror(status));
        conn_close(c);
        return;
    }
    if (c->closing)
        return;
    uv_tcp_nodelay(&c->tcp, 1);
    int r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (r < 0) {
        errorf(c, "read_start: %s", uv_strerror(r));
        conn_close(c);
    }
}

static void start_conn(int id) {
    conn *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->id = id;
    c->user = id % (G.nusers > 0 ? G.nusers : 1) + 1;
    c->state = G.pop3proto ? P_GREET : S_GREET;
    c->tcp.data = c;
    G.conns[id] = c;
    G.active++;
    G.launched++;
    G.pending++;
    uv_tcp_init(G.loop, &c->tcp);
    int r = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&G.addr, on_connect);
    if (r < 0) {
        errorf(c, "connect: %s", uv_strerror(r));
        conn_close(c);
    }
}

/* Starts sessions up to the target; idle mode keeps a bounded number of
 * them connecting at once so the listen backlog never overflows. */
static void launch(void) {
    if (G.stopping)
        return;
    while (G.launched < G.target && (G.mode != M_IDLE || G.pending < IDLE_PENDING))
        start_conn(G.launched);
    if (G.mode == M_IDLE && !G.ready_printed && G.greeted + G.failed == G.target) {
        G.ready_printed = 1;
        printf("ready greeted=%d failed=%d\n", G.greeted, G.failed);
        fflush(stdout);
    }
}

static void stop_all(void) {
    G.stopping = 1;
    for (int i = 0; i < G.target; i++)
        if (G.conns[i])
            conn_close(G.conns[i]);
    finish_if_done();
}

static void on_watchdog(uv_timer_t *t) {
    (void)t;
    errorf(NULL, "time limit reached, %d sessions still open", G.active);
    stop_all();
}

static void on_signal(uv_signal_t *s, int sig) {
    (void)s;
    (void)sig;
    stop_all();
}

static void on_stdin_alloc(uv_handle_t *h, size_t sug, uv_buf_t *buf) {
    static char junk[256];
    (void)h;
    (void)sug;
    *buf = uv_buf_init(junk, sizeof junk);
}

static void on_stdin(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    (void)s;
    (void)buf;
    if (nread < 0)
        stop_all();
}

/* ---- main ---------------------------------------------------------------- */

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen smtp HOST PORT CONC SECONDS MSGSIZE NRCPTUSERS\n"
            "       loadgen fill HOST PORT NUSERS PERUSER MSGSIZE\n"
            "       loadgen pop3 HOST PORT CONC NUSERS PASSWORD\n"
            "       loadgen idle smtp|pop3 HOST PORT N\n"
            "       loadgen body MSGSIZE\n");
    exit(2);
}

static long num(const char *s, long min, long max) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "loadgen: bad number \"%s\" (%ld..%ld)\n", s, min, max);
        exit(2);
    }
    return v;
}

static void set_target(const char *host, const char *port) {
    int r = uv_ip4_addr(host, (int)num(port, 1, 65535), &G.addr);
    if (r < 0) {
        fprintf(stderr, "loadgen: bad IPv4 address \"%s\"\n", host);
        exit(2);
    }
}

int main(int argc, char **argv) {
    double limit;
    if (argc < 2)
        usage();
    signal(SIGPIPE, SIG_IGN);
    G.chunk = 4096;
    const char *m = argv[1];
    if (!strcmp(m, "body") && argc == 3) {
        G.body = make_body((size_t)num(argv[2], 1, 1L << 30), &G.bodylen);
        return fwrite(G.body, 1, G.bodylen, stdout) == G.bodylen ? 0 : 1;
    } else if (!strcmp(m, "smtp") && argc == 8) {
        G.mode = M_SMTP;
        set_target(argv[2], argv[3]);
        G.target = G.conc = (int)num(argv[4], 1, 10000);
        G.secs = (double)num(argv[5], 1, 3600);
        G.body = make_body((size_t)num(argv[6], 1, 1L << 30), &G.bodylen);
        G.nusers = (int)num(argv[7], 1, 100000);
        limit = G.secs + 120;
    } else if (!strcmp(m, "fill") && argc == 7) {
        G.mode = M_FILL;
        set_target(argv[2], argv[3]);
        G.target = G.nusers = (int)num(argv[4], 1, 10000);
        G.peruser = num(argv[5], 0, 10000000);
        G.body = make_body((size_t)num(argv[6], 1, 1L << 30), &G.bodylen);
        limit = 1800;
    } else if (!strcmp(m, "pop3") && argc == 7) {
        G.mode = M_POP3;
        G.pop3proto = 1;
        G.chunk = 65536;
        set_target(argv[2], argv[3]);
        G.target = G.conc = (int)num(argv[4], 1, 10000);
        G.nusers = (int)num(argv[5], 1, 100000);
        G.password = argv[6];
        if (G.conc > G.nusers) {
            fprintf(stderr, "loadgen: pop3 needs CONC <= NUSERS (one client per mailbox)\n");
            return 2;
        }
        limit = 1800;
    } else if (!strcmp(m, "idle") && argc == 6) {
        G.mode = M_IDLE;
        if (strcmp(argv[2], "smtp") && strcmp(argv[2], "pop3"))
            usage();
        G.pop3proto = !strcmp(argv[2], "pop3");
        G.chunk = 512;
        set_target(argv[3], argv[4]);
        G.target = (int)num(argv[5], 1, 1000000);
        limit = 3600;
    } else {
        usage();
    }

    struct rlimit rl; /* one descriptor per session plus a few */
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
        uv_handle_type t = uv_guess_handle(0);
        if (t == UV_NAMED_PIPE && uv_pipe_init(G.loop, &G.in_pipe, 0) == 0 &&
            uv_pipe_open(&G.in_pipe, 0) == 0) {
            G.in_kind = 1;
            uv_read_start((uv_stream_t *)&G.in_pipe, on_stdin_alloc, on_stdin);
        } else if (t == UV_TTY && uv_tty_init(G.loop, &G.in_tty, 0, 1) == 0) {
            G.in_kind = 2;
            uv_read_start((uv_stream_t *)&G.in_tty, on_stdin_alloc, on_stdin);
        }
    }

    G.t0 = uv_hrtime();
    G.deadline = G.t0 + (uint64_t)(G.secs * 1e9);
    double t0 = now_s();
    launch();
    uv_run(G.loop, UV_RUN_DEFAULT);
    double secs = now_s() - t0;
    if (secs <= 0)
        secs = 1e-9;

    switch (G.mode) {
    case M_SMTP:
    case M_FILL:
        printf("mode=%s conc=%d msgs=%ld errors=%ld secs=%.3f msgs_per_s=%.1f\n",
               G.mode == M_SMTP ? "smtp" : "fill", G.target, G.msgs, G.errors, secs,
               (double)G.msgs / secs);
        break;
    case M_POP3:
        printf("mode=pop3 conc=%d msgs=%ld bytes=%llu errors=%ld secs=%.3f msgs_per_s=%.1f "
               "mb_per_s=%.2f\n",
               G.conc, G.msgs, (unsigned long long)G.bytes, G.errors, secs,
               (double)G.msgs / secs, (double)G.bytes / 1e6 / secs);
        break;
    case M_IDLE:
        if (!G.ready_printed)
            printf("ready greeted=%d failed=%d\n", G.greeted, G.failed);
        printf("mode=idle greeted=%d failed=%d dropped=%d errors=%ld\n", G.greeted, G.failed,
               G.dropped, G.errors);
        break;
    }
    uv_loop_close(G.loop);
    free(G.conns);
    free(G.body);
    return G.errors ? 1 : 0;
}
