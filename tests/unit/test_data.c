/* test_data.c - the DATA/BDAT body reader and the spilling body buffer
 * (smtp/data.c).
 *
 * The spill file is written on the thread pool: these tests run the libuv
 * loop (drain()) to let the writes finish, and end by checking that the
 * loop closes with no live handle and no request left.
 *
 * Every input is fed whole, byte by byte, split in two at every offset and
 * in three pieces at many offset pairs; each way must give the same final
 * state, errors, consumed count and stored body (data.h: "feeding the same
 * bytes in any chunks gives the same result"; for a body over max_size see
 * check_size_body). Each piece is a heap copy of exactly its length, so
 * ASan catches a read past it. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/loop.h"
#include "smtp/data.h"

/* A literal and its length, which may include NUL bytes. */
#define S(lit) lit, sizeof(lit) - 1

#define ALL	SIZE_MAX	    /* consumed: the whole input */
#define BIG	(1ull << 30)	    /* max_size that is never reached */
#define LINE998 (DATA_LINE_MAX - 2) /* longest line without its CRLF */

struct data_case {
	const char *name;
	const char *in;
	size_t n;
	bool dots; /* DATA (true) or BDAT (false) */
	uint64_t max_size;
	enum data_state st; /* expected final state */
	unsigned errors;
	size_t consumed; /* ALL or an index into in */
	/* The stored body; NULL for DATA_ERR_SIZE, where nothing is kept
	 * (check_size_body()). */
	const char *body;
	size_t body_n;
};

static const struct data_case cases[] = {
    /* DATA: what ends it, what is stuffing. */
    {"normal", S("Subject: x\r\n\r\nhello\r\n.\r\n"), true, BIG, DATA_DONE, 0,
     ALL, S("Subject: x\r\n\r\nhello\r\n")},
    {"empty message", S(".\r\n"), true, BIG, DATA_DONE, 0, ALL, S("")},
    {"empty first line", S("\r\n.\r\n"), true, BIG, DATA_DONE, 0, ALL,
     S("\r\n")},
    {"dot-stuffed", S("..x\r\na\r\n..y\r\n.\r\n"), true, BIG, DATA_DONE, 0, ALL,
     S(".x\r\na\r\n.y\r\n")},
    {"line of two dots", S("a\r\n..\r\n.\r\n"), true, BIG, DATA_DONE, 0, ALL,
     S("a\r\n.\r\n")},
    {"dot inside a line", S("a.\r\nb..c\r\n.\r\n"), true, BIG, DATA_DONE, 0,
     ALL, S("a.\r\nb..c\r\n")},
    {"8-bit", S("\x80\xffz\xc3\xa9\r\n.\r\n"), true, BIG, DATA_DONE, 0, ALL,
     S("\x80\xffz\xc3\xa9\r\n")},
    /* NUL: refused at the end (a next hop that drops NULs would end the
     * message at "CRLF NUL . CRLF"); the body is still read to its end. */
    {"8-bit and NUL", S("\x80\xff\x00z\xc3\xa9\r\n.\r\n"), true, BIG, DATA_DONE,
     DATA_ERR_NUL, ALL, S("\x80\xff\x00z\xc3\xa9\r\n")},
    {"NUL dot smuggle", S("a\r\n\x00.\r\nMAIL FROM:<x@y>\r\n.\r\nQUIT\r\n"),
     true, BIG, DATA_DONE, DATA_ERR_NUL, 27,
     S("a\r\n\x00.\r\nMAIL FROM:<x@y>\r\n")},
    {"NUL alone", S("\x00"), true, BIG, DATA_TEXT, DATA_ERR_NUL, ALL,
     S("\x00")},
    {"NUL at line start", S("\x00\r\n.\r\n"), true, BIG, DATA_DONE,
     DATA_ERR_NUL, ALL, S("\x00\r\n")},
    {"NUL after a dot", S(".\x00\r\n.\r\n"), true, BIG, DATA_DONE, DATA_ERR_NUL,
     ALL, S("\x00\r\n")},
    {"NUL after the end is not ours", S("a\r\n.\r\n\x00\r\n"), true, BIG,
     DATA_DONE, 0, 6, S("a\r\n")},
    {"NUL and bare LF", S("a\x00\nb\r\n.\r\n"), true, BIG, DATA_DONE,
     DATA_ERR_NUL | DATA_ERR_BARE, ALL, S("a\x00\nb\r\n")},
    {"NUL over size", S("0123456789\x00\r\n.\r\n"), true, 5, DATA_DONE,
     DATA_ERR_SIZE | DATA_ERR_NUL, ALL, NULL, 0},
    {"next command not consumed", S("hello\r\n.\r\nQUIT\r\n"), true, BIG,
     DATA_DONE, 0, 10, S("hello\r\n")},
    {"pipelined next message", S(".\r\nMAIL FROM:<a@b>\r\n"), true, BIG,
     DATA_DONE, 0, 3, S("")},
    {"unfinished", S("hello\r\n"), true, BIG, DATA_BOL, 0, ALL, S("hello\r\n")},
    {"unfinished after dot", S("a\r\n."), true, BIG, DATA_DOT, 0, ALL,
     S("a\r\n")},
    {"unfinished after dot CR", S("a\r\n.\r"), true, BIG, DATA_DOTCR, 0, ALL,
     S("a\r\n")},
    /* SMTP smuggling: only CRLF "." CRLF ends DATA. */
    {"smuggle LF.CRLF", S("a\n.\r\nMAIL FROM:<x@y>\r\n.\r\n"), true, BIG,
     DATA_DONE, DATA_ERR_BARE, ALL, S("a\n.\r\nMAIL FROM:<x@y>\r\n")},
    {"smuggle CR.CRLF", S("a\r.\r\nMAIL FROM:<x@y>\r\n.\r\n"), true, BIG,
     DATA_DONE, DATA_ERR_BARE, ALL, S("a\r.\r\nMAIL FROM:<x@y>\r\n")},
    {"smuggle LF.LF", S("a\n.\nMAIL FROM:<x@y>\r\n.\r\n"), true, BIG, DATA_DONE,
     DATA_ERR_BARE, ALL, S("a\n.\nMAIL FROM:<x@y>\r\n")},
    /* The dot at the start of a line is stuffing, whatever ends it. */
    {"smuggle CRLF.LF", S("a\r\n.\nMAIL FROM:<x@y>\r\n.\r\n"), true, BIG,
     DATA_DONE, DATA_ERR_BARE, ALL, S("a\r\n\nMAIL FROM:<x@y>\r\n")},
    {"smuggle CRLF.CR", S("a\r\n.\rxMAIL FROM:<x@y>\r\n.\r\n"), true, BIG,
     DATA_DONE, DATA_ERR_BARE, ALL, S("a\r\n\rxMAIL FROM:<x@y>\r\n")},
    {"smuggle CRLF.CRCR", S("a\r\n.\r\r\nb\r\n.\r\n"), true, BIG, DATA_DONE,
     DATA_ERR_BARE, ALL, S("a\r\n\r\r\nb\r\n")},
    {"smuggle CRLF.CR.", S("a\r\n.\r.\r\nb\r\n.\r\n"), true, BIG, DATA_DONE,
     DATA_ERR_BARE, ALL, S("a\r\n\r.\r\nb\r\n")},
    {"smuggle LF at start", S("\n.\r\nb\r\n.\r\n"), true, BIG, DATA_DONE,
     DATA_ERR_BARE, ALL, S("\n.\r\nb\r\n")},
    {"CR CRLF then the end", S("a\r\r\n.\r\nb"), true, BIG, DATA_DONE,
     DATA_ERR_BARE, 7, S("a\r\r\n")},
    {"bare LF", S("a\nb\r\n.\r\n"), true, BIG, DATA_DONE, DATA_ERR_BARE, ALL,
     S("a\nb\r\n")},
    {"bare CR", S("a\rb\r\n.\r\n"), true, BIG, DATA_DONE, DATA_ERR_BARE, ALL,
     S("a\rb\r\n")},
    {"bare LF only", S("\n"), true, BIG, DATA_TEXT, DATA_ERR_BARE, ALL,
     S("\n")},
    {"LF after dot", S(".\n.\r\n"), true, BIG, DATA_BOL, DATA_ERR_BARE, ALL,
     S("\n.\r\n")},
    /* Size: body octets only (stuffing dots and the end marker are free). */
    {"size exact", S("..12345678\r\n.\r\n"), true, 11, DATA_DONE, 0, ALL,
     S(".12345678\r\n")},
    {"size over", S("0123456789ABCDEF\r\n.\r\nQUIT\r\n"), true, 17, DATA_DONE,
     DATA_ERR_SIZE, 21, NULL, 0},
    {"size zero", S("a\r\n.\r\n"), true, 0, DATA_DONE, DATA_ERR_SIZE, ALL, NULL,
     0},
    {"size and smuggle", S("0123456789\n.\r\nx\r\n.\r\n"), true, 5, DATA_DONE,
     DATA_ERR_SIZE | DATA_ERR_BARE, ALL, NULL, 0},

    /* BDAT: no stuffing, no end marker, same bare CR/LF rule. */
    {"bdat dots kept", S("..x\r\n.\r\n..\r\n"), false, BIG, DATA_BOL, 0, ALL,
     S("..x\r\n.\r\n..\r\n")},
    {"bdat end marker is text", S("a\r\n.\r\nQUIT\r\n"), false, BIG, DATA_BOL,
     0, ALL, S("a\r\n.\r\nQUIT\r\n")},
    {"bdat mid-line", S("a\r\nbc"), false, BIG, DATA_TEXT, 0, ALL,
     S("a\r\nbc")},
    {"bdat ends in CR", S("a\r"), false, BIG, DATA_CR, 0, ALL, S("a\r")},
    {"bdat bare LF", S("a\n.\r\n"), false, BIG, DATA_BOL, DATA_ERR_BARE, ALL,
     S("a\n.\r\n")},
    {"bdat bare CR", S("a\r.\r\n"), false, BIG, DATA_BOL, DATA_ERR_BARE, ALL,
     S("a\r.\r\n")},
    {"bdat 8-bit", S("\x80\xff\r\n"), false, BIG, DATA_BOL, 0, ALL,
     S("\x80\xff\r\n")},
    {"bdat NUL", S("\x00\xff\r\n"), false, BIG, DATA_BOL, DATA_ERR_NUL, ALL,
     S("\x00\xff\r\n")},
    {"bdat NUL dot", S("a\r\n\x00.\r\nb"), false, BIG, DATA_TEXT, DATA_ERR_NUL,
     ALL, S("a\r\n\x00.\r\nb")},
    {"bdat size over", S("0123456789"), false, 9, DATA_TEXT, DATA_ERR_SIZE, ALL,
     NULL, 0},
};

/* What one way of feeding ended with. */
struct outcome {
	enum data_state st;
	unsigned errors;
	size_t consumed;
	uint64_t len;
	char *body; /* malloc'd copy of the msgbuf */
	struct data_head head;
};

static void outcome_free(struct outcome *o)
{
	free(o->body);
	o->body = NULL;
	free(o->head.p);
	o->head.p = NULL;
}

/* The header section kept beside a body must be the body's first octets
 * up to its first empty line, however the input was split. */
static void check_head(const struct outcome *o, const char *body, size_t n)
{
	const char *end = memmem(body, n, "\r\n\r\n", 4);
	bool crlf = n >= 2 && memcmp(body, "\r\n", 2) == 0;
	size_t want = n;

	if (crlf)
		want = 2;
	else if (end != NULL)
		want = (size_t)(end + 4 - body);
	assert_true(want <= DATA_HEAD_MAX);
	assert_int_equal(o->head.len, want);
	assert_int_equal(o->head.ended, crlf || end != NULL);
	assert_false(o->head.cut);
	if (want > 0)
		assert_memory_equal(o->head.p, body, want);
}

/* Feeds in[0..n) cut at the sorted offsets cuts[0..ncuts) into a fresh
 * reader. Each piece is fed even after the end (it must consume nothing
 * then); consumed is the sum. */
static struct outcome feed_cut(const struct data_case *c, const char *in,
			       size_t n, const size_t *cuts, size_t ncuts)
{
	struct data_reader r;
	struct msgbuf b;
	struct outcome o;
	size_t start = 0, total = 0;

	memset(&o, 0, sizeof o);
	msgbuf_init(&b, NULL, NULL);
	data_init(&r, c->dots, c->max_size, &b);
	r.head = &o.head;
	for (size_t k = 0; k <= ncuts; k++) {
		size_t end = k < ncuts ? cuts[k] : n;
		size_t len = end - start, used;
		char *piece = malloc(len ? len : 1);
		bool done_before = r.st == DATA_DONE;

		assert_non_null(piece);
		memcpy(piece, in + start, len);
		used = data_feed(&r, piece, len);
		free(piece);
		assert_true(used <= len);
		if (done_before)
			assert_int_equal(used, 0);
		else if (r.st != DATA_DONE)
			assert_int_equal(used, len); /* all, until the end */
		total += used;
		start = end;
	}
	o.st = r.st;
	o.errors = r.errors;
	o.consumed = total;
	o.len = b.len;
	o.body = malloc(b.len ? b.len : 1);
	assert_non_null(o.body);
	assert_null(b.spill); /* small bodies: in memory */
	msgbuf_end(&b);
	assert_int_equal(msgbuf_copy(&b, o.body), 0);
	msgbuf_free(&b);
	return o;
}

static const char *state_name(enum data_state st)
{
	static const char *names[] = {"BOL", "TEXT",  "CR",
				      "DOT", "DOTCR", "DONE"};
	return (unsigned)st < 6 ? names[st] : "?";
}

/* With DATA_ERR_SIZE the body is refused, and the reader drops what it had
 * kept the moment the limit is passed: however the input was split,
 * nothing is left. */
static void check_size_body(const struct data_case *c, const struct outcome *o)
{
	(void)c;
	assert_int_equal(o->len, 0);
}

static void check_outcome(const struct data_case *c, struct outcome *o,
			  const char *how)
{
	size_t consumed = c->consumed == ALL ? c->n : c->consumed;

	if (o->st != c->st || o->errors != c->errors ||
	    o->consumed != consumed ||
	    (c->body != NULL &&
	     (o->len != c->body_n || memcmp(o->body, c->body, o->len) != 0)))
		print_error("case \"%s\" fed %s: st=%s errors=%#x consumed=%zu "
			    "len=%llu; want st=%s errors=%#x consumed=%zu "
			    "len=%zu\n",
			    c->name, how, state_name(o->st), o->errors,
			    o->consumed, (unsigned long long)o->len,
			    state_name(c->st), c->errors, consumed,
			    c->body != NULL ? c->body_n : 0);
	assert_int_equal(o->st, c->st);
	assert_int_equal(o->errors, c->errors);
	assert_int_equal(o->consumed, consumed);
	if (c->body != NULL) {
		assert_int_equal(o->len, c->body_n);
		assert_memory_equal(o->body, c->body, c->body_n);
		check_head(o, c->body, c->body_n);
	} else {
		check_size_body(c, o);
	}
	outcome_free(o);
}

/* Offsets used for three-piece splits of a long input: the edges and the
 * middle, where the interesting bytes of the generated cases are. */
static size_t pick_offsets(size_t n, size_t *out)
{
	size_t cand[] = {1,	2,     3,     n / 3, n / 2, 2 * n / 3, n - 7,
			 n - 6, n - 5, n - 4, n - 3, n - 2, n - 1};
	size_t k = 0;

	out[k++] = 0;
	for (size_t i = 0; i < sizeof cand / sizeof *cand; i++)
		if (cand[i] > out[k - 1] && cand[i] < n)
			out[k++] = cand[i];
	out[k++] = n;
	return k;
}

/* Every way of feeding c->in must give the case's expected outcome. */
static void check_all_feeds(const struct data_case *c)
{
	size_t n = c->n, cuts[2] = {0, 0}, off[32], noff;
	char how[64];
	struct outcome o;

	/* (a) whole */
	o = feed_cut(c, c->in, n, cuts, 0);
	check_outcome(c, &o, "whole");

	/* (b) byte by byte */
	{
		size_t *all = malloc((n ? n : 1) * sizeof *all);
		assert_non_null(all);
		for (size_t i = 0; i < n; i++)
			all[i] = i + 1;
		o = feed_cut(c, c->in, n, all, n ? n - 1 : 0);
		free(all);
		check_outcome(c, &o, "byte by byte");
	}

	/* (c) two pieces, split at every offset (empty pieces included) */
	for (size_t i = 0; i <= n; i++) {
		cuts[0] = i;
		o = feed_cut(c, c->in, n, cuts, 1);
		snprintf(how, sizeof how, "split at %zu", i);
		check_outcome(c, &o, how);
	}

	/* (d) three pieces: all offset pairs for short inputs */
	if (n <= 64) {
		for (size_t i = 0; i <= n; i++)
			for (size_t j = i; j <= n; j++) {
				cuts[0] = i, cuts[1] = j;
				o = feed_cut(c, c->in, n, cuts, 2);
				snprintf(how, sizeof how, "split at %zu,%zu", i,
					 j);
				check_outcome(c, &o, how);
			}
		return;
	}
	noff = pick_offsets(n, off);
	for (size_t i = 0; i < noff; i++)
		for (size_t j = i; j < noff; j++) {
			cuts[0] = off[i], cuts[1] = off[j];
			o = feed_cut(c, c->in, n, cuts, 2);
			snprintf(how, sizeof how, "split at %zu,%zu", off[i],
				 off[j]);
			check_outcome(c, &o, how);
		}
}

static void test_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
		check_all_feeds(&cases[i]);
}

/* --- line length: built at run time ------------------------------------ */

/* The input is pre + len x 'x' + CRLF [+ len2 x 'y' + CRLF] + post; the
 * expected body the same without the stuffing dot of pre and without the
 * end marker of post. */
struct long_case {
	const char *name;
	bool dots;
	const char *pre;
	size_t len, len2;
	const char *post;
	enum data_state st;
	unsigned errors;
};

static const struct long_case long_cases[] = {
    {"998 ok", true, "", LINE998, 0, ".\r\n", DATA_DONE, 0},
    {"999 too long", true, "", LINE998 + 1, 0, ".\r\n", DATA_DONE,
     DATA_ERR_LINE},
    {"998 after a line", true, "a\r\n", LINE998, 0, ".\r\n", DATA_DONE, 0},
    {"999 after a line", true, "a\r\n", LINE998 + 1, 0, ".\r\n", DATA_DONE,
     DATA_ERR_LINE},
    /* The count restarts at each CRLF. */
    {"two 998 lines", true, "", LINE998, LINE998, ".\r\n", DATA_DONE, 0},
    {"998 then 999", true, "", LINE998, LINE998 + 1, ".\r\n", DATA_DONE,
     DATA_ERR_LINE},
    /* The limit counts the line as sent, stuffing dot included. */
    {"stuffed 998 ok", true, ".", LINE998 - 1, 0, ".\r\n", DATA_DONE, 0},
    {"stuffed 999 too long", true, ".", LINE998, 0, ".\r\n", DATA_DONE,
     DATA_ERR_LINE},
    {"bdat 998 ok", false, "", LINE998, LINE998, "", DATA_BOL, 0},
    {"bdat 999 too long", false, "", LINE998 + 1, 0, "", DATA_BOL,
     DATA_ERR_LINE},
    {"bdat unfinished 999", false, "", LINE998 + 1, 0, "x", DATA_TEXT,
     DATA_ERR_LINE},
};

/* Appends s[0..n) at *pos. */
static void put(char *buf, size_t *pos, const char *s, size_t n)
{
	memcpy(buf + *pos, s, n);
	*pos += n;
}

static void put_fill(char *buf, size_t *pos, char fill, size_t n)
{
	memset(buf + *pos, fill, n);
	*pos += n;
	put(buf, pos, "\r\n", 2);
}

static void test_line_length(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof long_cases / sizeof *long_cases; i++) {
		const struct long_case *l = &long_cases[i];
		size_t cap =
		    strlen(l->pre) + l->len + l->len2 + strlen(l->post) + 4;
		char *in = malloc(cap), *body = malloc(cap);
		struct data_case c = {.name = l->name,
				      .dots = l->dots,
				      .max_size = BIG,
				      .st = l->st,
				      .errors = l->errors,
				      .consumed = ALL};
		size_t n = 0, bn = 0;

		assert_non_null(in);
		assert_non_null(body);
		put(in, &n, l->pre, strlen(l->pre));
		if (!(l->dots && strcmp(l->pre, ".") == 0))
			put(body, &bn, l->pre, strlen(l->pre));
		put_fill(in, &n, 'x', l->len);
		put_fill(body, &bn, 'x', l->len);
		if (l->len2 > 0) {
			put_fill(in, &n, 'y', l->len2);
			put_fill(body, &bn, 'y', l->len2);
		}
		put(in, &n, l->post, strlen(l->post));
		if (!l->dots)
			put(body, &bn, l->post, strlen(l->post));
		c.in = in, c.n = n;
		c.body = body, c.body_n = bn;
		check_all_feeds(&c);
		free(in);
		free(body);
	}
}

/* --- msgbuf and spilling ----------------------------------------------- */

static char spill_dir[64];

/* Runs the loop until every write (and close) on the thread pool is done
 * and its callback has run. */
static void drain(void)
{
	uv_run(loop_get(), UV_RUN_DEFAULT);
}

static int spill_setup(void **state)
{
	(void)state;
	loop_init(uv_default_loop());
	snprintf(spill_dir, sizeof spill_dir, "/tmp/pb-test-data-XXXXXX");
	if (mkdtemp(spill_dir) == NULL)
		return -1;
	msgbuf_spill_dir = spill_dir;
	return 0;
}

static int spill_teardown(void **state)
{
	(void)state;
	drain();
	msgbuf_spill_dir = ".";
	/* Every job and its callback are done, no handle is left. */
	if (uv_loop_close(uv_default_loop()) != 0)
		return -1;
	/* O_TMPFILE files are unlinked: the directory must be empty. */
	return rmdir(spill_dir);
}

static void pattern(char *p, size_t n, size_t from)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (char)((from + i) * 131 % 251);
}

/* Files this process has open (to see that spill files get closed). */
static int open_fds(void)
{
	int n = 0;

	for (int fd = 0; fd < 1024; fd++)
		if (fcntl(fd, F_GETFD) != -1)
			n++;
	return n;
}

/* written() callback: counts its calls. */
static void count_written(void *arg)
{
	(*(unsigned *)arg)++;
}

static void test_msgbuf_memory(void **state)
{
	struct msgbuf b;
	char want[100], got[100];
	unsigned written = 0;

	(void)state;
	msgbuf_init(&b, count_written, &written);
	assert_null(b.spill);
	assert_int_equal(b.len, 0);
	assert_int_equal(msgbuf_append(&b, "", 0), 0);
	msgbuf_end(&b);
	assert_int_equal(msgbuf_copy(&b, got), 0); /* empty: nothing to do */
	msgbuf_free(&b);
	pattern(want, sizeof want, 0);
	for (size_t i = 0; i < sizeof want; i += 10)
		assert_int_equal(msgbuf_append(&b, want + i, 10), 0);
	assert_null(b.spill);
	assert_false(msgbuf_busy(&b));
	assert_false(msgbuf_full(&b));
	assert_int_equal(b.len, sizeof want);
	msgbuf_end(&b);
	assert_int_equal(msgbuf_error(&b), 0);
	assert_int_equal(msgbuf_copy(&b, got), 0);
	assert_memory_equal(got, want, sizeof want);
	msgbuf_free(&b);
	assert_null(b.cur);
	assert_int_equal(b.len, 0);
	assert_ptr_equal(b.arg, &written); /* the callback stays */
	msgbuf_free(&b);		   /* freeing twice is harmless */
	assert_int_equal(written, 0);	   /* nothing went to a file */
}

/* Appends total octets in pieces of step, running the loop after every
 * `every` pieces (0: never before the end), so writes finish at every
 * point of the filling; checks where it spills and that the file holds the
 * body in order. */
static void spill_run(size_t total, size_t step, unsigned every)
{
	struct msgbuf b;
	char *want = malloc(total), *got = malloc(total);
	int fds = open_fds();
	unsigned written = 0, pieces = 0;

	assert_non_null(want);
	assert_non_null(got);
	pattern(want, total, 0);
	msgbuf_init(&b, count_written, &written);
	for (size_t off = 0; off < total; off += step) {
		size_t n = total - off < step ? total - off : step;
		assert_int_equal(msgbuf_append(&b, want + off, n), 0);
		assert_int_equal(b.len, off + n);
		/* In memory up to MSGBUF_CHUNK, to a file past it. */
		if (off + n <= MSGBUF_CHUNK)
			assert_null(b.spill);
		else
			assert_non_null(b.spill);
		if (every != 0 && ++pieces % every == 0)
			drain();
	}
	msgbuf_end(&b);
	drain();
	assert_false(msgbuf_busy(&b));
	assert_false(msgbuf_full(&b));
	assert_int_equal(msgbuf_error(&b), 0);
	/* written() once per chunk that went to the file */
	assert_int_equal(written,
			 total <= MSGBUF_CHUNK
			     ? 0
			     : (total + MSGBUF_CHUNK - 1) / MSGBUF_CHUNK);
	memset(got, 0, total);
	assert_int_equal(msgbuf_copy(&b, got), 0);
	assert_memory_equal(got, want, total);
	msgbuf_free(&b);
	assert_null(b.spill);
	assert_int_equal(b.len, 0);
	drain();
	assert_int_equal(open_fds(), fds); /* the file was closed */
	free(want);
	free(got);
}

static void test_msgbuf_spill(void **state)
{
	(void)state;
	spill_run(MSGBUF_CHUNK, 4096, 0);     /* exactly a chunk: memory */
	spill_run(MSGBUF_CHUNK + 1, 4096, 0); /* one over: the last octet */
	spill_run(2 * MSGBUF_CHUNK + 123, 4099, 0); /* crosses mid-piece */
	spill_run(MSGBUF_CHUNK + 10, MSGBUF_CHUNK + 10, 0); /* one append */
	spill_run(3 * MSGBUF_CHUNK, 65536, 0);
	spill_run(3 * MSGBUF_CHUNK, 3 * MSGBUF_CHUNK, 0);
	/* writes finishing between appends, at many different points */
	for (unsigned every = 1; every <= 7; every++)
		spill_run(5 * MSGBUF_CHUNK + 77, 65521, every);
}

/* Input should pause while MSGBUF_QUEUE_MAX chunks wait for the file; the
 * chunk being filled and those waiting are all a body holds in memory. */
static void test_msgbuf_full(void **state)
{
	size_t n = MSGBUF_QUEUE_MAX * MSGBUF_CHUNK + 1;
	char *want = malloc(n), *got = malloc(n);
	unsigned written = 0;
	struct msgbuf b;

	(void)state;
	assert_non_null(want);
	assert_non_null(got);
	pattern(want, n, 3);
	msgbuf_init(&b, count_written, &written);
	/* Chunks go to the queue as the next one starts: one short of
	 * MSGBUF_QUEUE_MAX, then MSGBUF_QUEUE_MAX (full). */
	assert_int_equal(msgbuf_append(&b, want, n - MSGBUF_CHUNK), 0);
	assert_false(msgbuf_full(&b));
	assert_int_equal(
	    msgbuf_append(&b, want + n - MSGBUF_CHUNK, MSGBUF_CHUNK), 0);
	assert_true(msgbuf_full(&b));
	assert_true(msgbuf_busy(&b));
	/* Each chunk written makes room; written() says when. */
	while (msgbuf_full(&b))
		uv_run(loop_get(), UV_RUN_ONCE);
	assert_true(written >= 1);
	msgbuf_end(&b);
	drain();
	assert_false(msgbuf_busy(&b));
	assert_int_equal(msgbuf_copy(&b, got), 0);
	assert_memory_equal(got, want, n);
	msgbuf_free(&b);
	drain();
	free(want);
	free(got);
}

/* Freed while a write runs on the thread pool (a client that drops the
 * connection mid-message): the job finishes on memory that is still ours,
 * then the file and the memory go (ASan and LSan watch). */
static void test_msgbuf_free_while_writing(void **state)
{
	size_t n = 4 * MSGBUF_CHUNK + 5;
	char *data = malloc(n);
	unsigned written = 0, before;
	int fds = open_fds();
	struct msgbuf b;

	(void)state;
	assert_non_null(data);
	pattern(data, n, 7);
	for (int round = 0; round < 3; round++) {
		msgbuf_init(&b, count_written, &written);
		assert_int_equal(msgbuf_append(&b, data, n), 0);
		assert_true(msgbuf_busy(&b));
		if (round == 1)
			msgbuf_end(&b);
		if (round == 2)
			uv_run(loop_get(), UV_RUN_ONCE);
		before = written;
		msgbuf_free(&b);
		assert_false(msgbuf_busy(&b));
		/* the msgbuf can be used again at once */
		assert_int_equal(msgbuf_append(&b, "abc", 3), 0);
		assert_int_equal(b.len, 3);
		msgbuf_free(&b);
		drain();
		assert_int_equal(written, before); /* not after the free */
	}
	assert_int_equal(open_fds(), fds);
	free(data);
}

/* The spill directory is gone: appends go on (the failure is known only
 * once the thread pool tried), then msgbuf_error says -EIO, written() was
 * called, and nothing more is kept. */
static void test_msgbuf_spill_error(void **state)
{
	struct msgbuf b;
	size_t n = MSGBUF_CHUNK;
	char *want = malloc(2 * n + 1);
	unsigned written = 0;

	(void)state;
	assert_non_null(want);
	pattern(want, 2 * n + 1, 0);
	msgbuf_spill_dir = "/nonexistent/pillarbox-test";
	msgbuf_init(&b, count_written, &written);
	assert_int_equal(msgbuf_append(&b, want, n), 0);
	assert_int_equal(msgbuf_append(&b, want + n, n + 1), 0);
	assert_int_equal(msgbuf_error(&b), 0);
	drain();
	assert_int_equal(written, 1);
	assert_false(msgbuf_busy(&b));
	assert_false(msgbuf_full(&b));
	assert_int_equal(msgbuf_error(&b), -EIO);
	assert_int_equal(msgbuf_append(&b, "x", 1), -EIO);
	assert_int_equal(b.len, 2 * n + 1);
	msgbuf_end(&b);
	drain();
	assert_int_equal(msgbuf_error(&b), -EIO);
	msgbuf_free(&b);
	assert_int_equal(msgbuf_error(&b), 0); /* empty again */
	msgbuf_spill_dir = spill_dir;
	free(want);
}

/* A DATA body larger than MSGBUF_CHUNK, fed in uneven reads, ends up in
 * the file byte for byte; and a spill failure is DATA_ERR_IO once known. */
static void test_data_spill(void **state)
{
	const size_t lines = 3 * MSGBUF_CHUNK / 80, cap = lines * 81 + 3;
	char *in = malloc(cap), *body = malloc(cap), *got = malloc(cap);
	size_t n, off = 0;
	struct data_reader r;
	struct msgbuf b;
	size_t bn = 0;

	(void)state;
	assert_non_null(in);
	assert_non_null(body);
	assert_non_null(got);
	/* Lines of 78 octets + CRLF; every 7th starts with a dot, which is
	 * sent stuffed. */
	n = 0;
	for (size_t i = 0; i < lines; i++) {
		char line[80];
		pattern(line, 78, i);
		for (size_t k = 0; k < 78; k++)
			if (line[k] == '\r' || line[k] == '\n' ||
			    line[k] == '.' || line[k] == '\0')
				line[k] = 'z';
		if (i % 7 == 0) {
			line[0] = '.';
			put(in, &n, ".", 1);
		}
		memcpy(line + 78, "\r\n", 2);
		put(in, &n, line, 80);
		put(body, &bn, line, 80);
	}
	put(in, &n, ".\r\n", 3);

	msgbuf_init(&b, NULL, NULL);
	data_init(&r, true, BIG, &b);
	for (size_t step = 1; off < n; step = step * 7 % 65521 + 1) {
		size_t k = n - off < step ? n - off : step;
		assert_int_equal(data_feed(&r, in + off, k), k);
		off += k;
		if (step % 3 == 0)
			uv_run(loop_get(), UV_RUN_NOWAIT);
	}
	assert_int_equal(r.st, DATA_DONE);
	assert_int_equal(r.errors, 0);
	assert_non_null(b.spill);
	assert_int_equal(b.len, bn);
	msgbuf_end(&b);
	drain();
	assert_int_equal(msgbuf_copy(&b, got), 0);
	assert_memory_equal(got, body, bn);
	msgbuf_free(&b);

	/* Spilling fails: the reader goes on to the end, flagged from the
	 * moment the failure is known. */
	msgbuf_spill_dir = "/nonexistent/pillarbox-test";
	msgbuf_init(&b, NULL, NULL);
	data_init(&r, true, BIG, &b);
	assert_int_equal(data_feed(&r, in, n / 2), n / 2);
	drain();
	assert_int_equal(msgbuf_error(&b), -EIO);
	assert_int_equal(data_feed(&r, in + n / 2, n - n / 2), n - n / 2);
	assert_int_equal(r.st, DATA_DONE);
	assert_int_equal(r.errors, DATA_ERR_IO);
	msgbuf_free(&b);
	msgbuf_spill_dir = spill_dir;

	free(in);
	free(body);
	free(got);
}

/* BDAT chunks append to one body through one reader; data_init on a
 * non-empty msgbuf keeps its contents. */
static void test_bdat_chunks(void **state)
{
	static const char *chunks[] = {"a\r", "\n.\r\n", "", "..b\r\n.",
				       "\r\n"};
	const char want[] = "a\r\n.\r\n..b\r\n.\r\n";
	struct data_reader r;
	struct msgbuf b;
	char got[sizeof want];

	(void)state;
	msgbuf_init(&b, NULL, NULL);
	data_init(&r, false, BIG, &b);
	for (size_t i = 0; i < sizeof chunks / sizeof *chunks; i++)
		assert_int_equal(data_feed(&r, chunks[i], strlen(chunks[i])),
				 strlen(chunks[i]));
	assert_int_equal(r.errors, 0);
	assert_int_equal(r.st, DATA_BOL);
	assert_int_equal(b.len, sizeof want - 1);
	assert_int_equal(msgbuf_copy(&b, got), 0);
	assert_memory_equal(got, want, sizeof want - 1);

	/* A new reader over the same body appends; max_size counts all,
	 * and passing it drops the body. */
	data_init(&r, false, sizeof want, &b);
	assert_int_equal(data_feed(&r, "xy", 2), 2);
	assert_int_equal(r.errors, DATA_ERR_SIZE);
	assert_int_equal(b.len, 0);
	msgbuf_free(&b);
}

/* A body over the size limit is dropped the moment it passes it, even with
 * a write of it running: nothing is kept, and the file goes. */
static void test_size_while_spilling(void **state)
{
	size_t n = 3 * MSGBUF_CHUNK;
	char *in = malloc(n);
	struct data_reader r;
	struct msgbuf b;
	int fds = open_fds();

	(void)state;
	assert_non_null(in);
	memset(in, 'x', n);
	for (size_t i = 80; i < n; i += 80)
		memcpy(in + i - 2, "\r\n", 2);
	msgbuf_init(&b, NULL, NULL);
	data_init(&r, false, 2 * MSGBUF_CHUNK, &b);
	assert_int_equal(data_feed(&r, in, 2 * MSGBUF_CHUNK), 2 * MSGBUF_CHUNK);
	assert_true(msgbuf_busy(&b));
	assert_int_equal(data_feed(&r, in, 1), 1);
	assert_int_equal(r.errors, DATA_ERR_SIZE);
	assert_int_equal(b.len, 0);
	assert_false(msgbuf_busy(&b));
	drain();
	assert_int_equal(open_fds(), fds);
	msgbuf_free(&b);
	free(in);
}

/* A header section over DATA_HEAD_MAX is kept up to the cap, and said to
 * be cut; the body itself is whole. */
static void test_head_cut(void **state)
{
	size_t n = DATA_HEAD_MAX + 4096, pos = 0;
	char *in = malloc(n + 3);
	struct data_head head = {0};
	struct data_reader r;
	struct msgbuf b;

	(void)state;
	assert_non_null(in);
	while (pos + 40 <= n)
		pos += (size_t)sprintf(in + pos, "X-Filler: %027zu\r\n", pos);
	memcpy(in + pos, ".\r\n", 3);
	msgbuf_init(&b, NULL, NULL);
	data_init(&r, true, BIG, &b);
	r.head = &head;
	for (size_t off = 0; off < pos + 3; off += 1000)
		data_feed(&r, in + off,
			  pos + 3 - off < 1000 ? pos + 3 - off : 1000);
	assert_int_equal(r.st, DATA_DONE);
	assert_int_equal(b.len, pos);
	assert_true(head.cut && !head.ended);
	assert_int_equal(head.len, DATA_HEAD_MAX);
	assert_memory_equal(head.p, in, DATA_HEAD_MAX);
	free(head.p);
	msgbuf_free(&b);
	free(in);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_table),
	    cmocka_unit_test(test_head_cut),
	    cmocka_unit_test(test_line_length),
	    cmocka_unit_test(test_msgbuf_memory),
	    cmocka_unit_test(test_msgbuf_spill),
	    cmocka_unit_test(test_msgbuf_full),
	    cmocka_unit_test(test_msgbuf_free_while_writing),
	    cmocka_unit_test(test_msgbuf_spill_error),
	    cmocka_unit_test(test_data_spill),
	    cmocka_unit_test(test_bdat_chunks),
	    cmocka_unit_test(test_size_while_spilling),
	};

	return cmocka_run_group_tests(tests, spill_setup, spill_teardown);
}
