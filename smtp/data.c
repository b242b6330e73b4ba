/* data.c - DATA/BDAT body reader and the spilling body buffer. see data.h */
#include "smtp/data.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "core/loop.h"

/* Spill offsets go past 4 GiB: off_t must not cut them short. */
_Static_assert(sizeof(off_t) >= 8, "a 64-bit off_t is needed");

#define MSGBUF_MIN_CAP 4096 /* first allocation: most mail is small */
/* Octets per pread: Linux moves at most 2 GiB - 4 KiB in one call anyway. */
#define MSGBUF_READ_MAX (1u << 30)

const char *msgbuf_spill_dir = ".";

struct msgbuf_chunk {
	struct msgbuf_chunk *next; /* in the spill queue */
	size_t len;
	char data[];
};

/* The spill file and its writer. The loop thread owns everything but io,
 * which a job on the thread pool owns from loop_work() until its after
 * callback: the pool touches nothing else (not even the queue's links). */
struct msgbuf_spill {
	struct msgbuf *owner;	   /* NULL once msgbuf_free() let go */
	struct msgbuf_chunk *head; /* waiting for the file, in order; while
				    * busy, head is the one being written */
	struct msgbuf_chunk *tail;
	unsigned queued; /* chunks in the queue */
	bool busy;	 /* a job is on the thread pool */
	int err;	 /* msgbuf_error() */
	struct {
		const char *dir;
		int fd;	      /* -1 until the first job opens the file */
		uint64_t off; /* octets in the file so far */
		const struct msgbuf_chunk *chunk; /* to write at off */
		int errnum;			  /* errno of a failure */
	} io;
};

void msgbuf_init(struct msgbuf *b, void (*written)(void *arg), void *arg)
{
	memset(b, 0, sizeof *b);
	b->written = written;
	b->arg = arg;
}

/* --- the thread pool's side -------------------------------------------- */

/* Opens the file for the first chunk, then writes one chunk at io.off. */
static void spill_write(void *arg)
{
	struct msgbuf_spill *sp = arg;
	const char *p = sp->io.chunk->data;
	size_t n = sp->io.chunk->len;
	uint64_t off = sp->io.off;

	if (sp->io.fd < 0) {
		/* Unlinked from the start: nothing is left behind by a crash
		 * (O_TMPFILE, Linux 3.11). */
		sp->io.fd =
		    open(sp->io.dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
		if (sp->io.fd < 0) {
			sp->io.errnum = errno;
			return;
		}
	}
	while (n > 0) {
		ssize_t w = pwrite(sp->io.fd, p, n, (off_t)off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			sp->io.errnum = w < 0 ? errno : EIO;
			return;
		}
		p += w, n -= (size_t)w, off += (uint64_t)w;
	}
	sp->io.off = off;
}

/* Closing a large unlinked file frees its blocks: that too is disk work. */
static void spill_close(void *arg)
{
	struct msgbuf_spill *sp = arg;

	close(sp->io.fd);
}

/* --- the loop's side ---------------------------------------------------- */

static void spill_drop_queue(struct msgbuf_chunk *ch)
{
	while (ch != NULL) {
		struct msgbuf_chunk *next = ch->next;
		free(ch);
		ch = next;
	}
}

static void spill_free_mem(void *arg)
{
	struct msgbuf_spill *sp = arg;

	spill_drop_queue(sp->head);
	free(sp);
}

/* Frees an idle spill; the file is closed on the thread pool. */
static void spill_free(struct msgbuf_spill *sp)
{
	assert(!sp->busy);
	if (sp->io.fd >= 0)
		loop_work(spill_close, spill_free_mem, sp);
	else
		spill_free_mem(sp);
}

static void spill_done(void *arg);

/* Sends the next chunk to the thread pool: one at a time keeps the file
 * in order. */
static void spill_next(struct msgbuf_spill *sp)
{
	if (sp->busy || sp->head == NULL || sp->err < 0)
		return;
	sp->busy = true;
	sp->io.chunk = sp->head;
	loop_work(spill_write, spill_done, sp);
}

/* A disk or quota that is full is "452 4.3.1" (RFC 3463: temporary, mail
 * system storage); anything else is a local error. */
static int spill_err(int errnum)
{
	return errnum == ENOSPC || errnum == EDQUOT ? -ENOSPC : -EIO;
}

static void spill_done(void *arg)
{
	struct msgbuf_spill *sp = arg;
	struct msgbuf_chunk *ch = sp->head;

	sp->busy = false;
	sp->head = ch->next;
	if (sp->head == NULL)
		sp->tail = NULL;
	sp->queued--;
	free(ch);
	if (sp->io.errnum != 0 && sp->err == 0) {
		const char *name = strerrorname_np(sp->io.errnum);
		sp->err = spill_err(sp->io.errnum);
		log_msg(LOG_ERROR, "smtp", "event=spill-error dir=%s error=%s",
			log_str(sp->io.dir), name ? name : "unknown");
		/* The body is lost: what waits will never be written. */
		spill_drop_queue(sp->head);
		sp->head = sp->tail = NULL;
		sp->queued = 0;
	}
	if (sp->owner == NULL) {
		spill_free(sp);
		return;
	}
	spill_next(sp);
	if (sp->owner->written != NULL)
		sp->owner->written(sp->owner->arg);
}

/* Moves the chunk being filled to the spill queue (making the spill on the
 * first one). */
static void msgbuf_queue(struct msgbuf *b)
{
	struct msgbuf_spill *sp = b->spill;
	struct msgbuf_chunk *ch = b->cur;

	b->cur = NULL;
	b->cap = 0;
	if (sp == NULL) {
		sp = b->spill = xcalloc(1, sizeof *sp);
		sp->owner = b;
		sp->io.dir = msgbuf_spill_dir;
		sp->io.fd = -1;
	}
	if (sp->err < 0) {
		free(ch);
		return;
	}
	/* The job writing tail reads only its data and len, not next. */
	ch->next = NULL;
	if (sp->tail != NULL)
		sp->tail->next = ch;
	else
		sp->head = ch;
	sp->tail = ch;
	sp->queued++;
	spill_next(sp);
}

/* Makes room for need octets in the chunk being filled: doubling up to a
 * chunk while the body is in memory, a whole chunk at once after. */
static void msgbuf_grow(struct msgbuf *b, size_t need)
{
	size_t cap = b->spill != NULL	     ? MSGBUF_CHUNK
		     : need < MSGBUF_MIN_CAP ? MSGBUF_MIN_CAP
					     : 2 * need;
	bool fresh = b->cur == NULL;

	if (cap > MSGBUF_CHUNK)
		cap = MSGBUF_CHUNK;
	b->cur = xrealloc(b->cur, sizeof *b->cur + cap);
	if (fresh) {
		b->cur->next = NULL;
		b->cur->len = 0;
	}
	b->cap = cap;
}

int msgbuf_append(struct msgbuf *b, const char *p, size_t n)
{
	while (n > 0 && msgbuf_error(b) == 0) {
		size_t fill = b->cur != NULL ? b->cur->len : 0, k;

		if (fill == MSGBUF_CHUNK) {
			/* A full chunk and more to come: to the file. */
			msgbuf_queue(b);
			fill = 0;
		}
		k = n < MSGBUF_CHUNK - fill ? n : MSGBUF_CHUNK - fill;
		if (fill + k > b->cap)
			msgbuf_grow(b, fill + k);
		memcpy(b->cur->data + fill, p, k);
		b->cur->len = fill + k;
		b->len += k;
		p += k, n -= k;
	}
	return msgbuf_error(b);
}

bool msgbuf_full(const struct msgbuf *b)
{
	return b->spill != NULL && b->spill->queued >= MSGBUF_QUEUE_MAX;
}

void msgbuf_end(struct msgbuf *b)
{
	if (b->spill == NULL)
		return; /* in memory: nothing to write */
	if (b->cur != NULL && b->cur->len > 0) {
		msgbuf_queue(b);
	} else {
		free(b->cur);
		b->cur = NULL;
		b->cap = 0;
	}
}

bool msgbuf_busy(const struct msgbuf *b)
{
	return b->spill != NULL && b->spill->busy;
}

int msgbuf_error(const struct msgbuf *b)
{
	return b->spill != NULL ? b->spill->err : 0;
}

int msgbuf_copy(const struct msgbuf *b, char *dst)
{
	const struct msgbuf_spill *sp = b->spill;
	uint64_t off = 0;

	if (sp == NULL) {
		if (b->len > 0)
			memcpy(dst, b->cur->data, b->cur->len);
		return 0;
	}
	assert(!sp->busy && sp->err == 0 && b->cur == NULL);
	if (sp->io.off != b->len)
		return -EIO;
	while (off < b->len) {
		size_t n = b->len - off < MSGBUF_READ_MAX
			       ? (size_t)(b->len - off)
			       : MSGBUF_READ_MAX;
		ssize_t r = pread(sp->io.fd, dst + off, n, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -EIO;
		off += (uint64_t)r;
	}
	return 0;
}

void msgbuf_free(struct msgbuf *b)
{
	struct msgbuf_spill *sp = b->spill;

	if (sp != NULL && sp->busy) {
		/* The job owns io and the chunk it writes (head): drop the
		 * rest now, and let spill_done free the spill after it. */
		spill_drop_queue(sp->head->next);
		sp->head->next = NULL;
		sp->tail = sp->head;
		sp->queued = 1;
		sp->owner = NULL;
	} else if (sp != NULL) {
		spill_free(sp);
	}
	free(b->cur);
	msgbuf_init(b, b->written, b->arg);
}

void data_init(struct data_reader *r, bool dots, uint64_t max_size,
	       struct msgbuf *out)
{
	memset(r, 0, sizeof *r);
	r->st = DATA_BOL;
	r->dots = dots;
	r->max_size = max_size;
	r->out = out;
}

#define DATA_HEAD_MIN_CAP 1024 /* most header sections are a few KiB */

/* Copies body octets into the header section until its empty line. */
static void data_head_add(struct data_head *h, const char *p, size_t n)
{
	size_t from = h->len > 3 ? h->len - 3 : 0, k = n;
	const char *end;

	if (h->ended || h->cut)
		return;
	if (k > DATA_HEAD_MAX - h->len)
		k = DATA_HEAD_MAX - h->len;
	if (h->len + k > h->cap) {
		size_t cap = h->cap ? h->cap : DATA_HEAD_MIN_CAP;
		while (cap < h->len + k)
			cap *= 2;
		h->cap = cap < DATA_HEAD_MAX ? cap : DATA_HEAD_MAX;
		h->p = xrealloc(h->p, h->cap);
	}
	memcpy(h->p + h->len, p, k);
	h->len += k;
	/* The section ends at the first empty line: CRLF CRLF, or a CRLF
	 * that opens the body. */
	if (h->len >= 2 && memcmp(h->p, "\r\n", 2) == 0) {
		h->len = 2;
		h->ended = true;
	} else if ((end = memmem(h->p + from, h->len - from, "\r\n\r\n", 4)) !=
		   NULL) {
		h->len = (size_t)(end + 4 - h->p);
		h->ended = true;
	} else if (k < n || h->len == DATA_HEAD_MAX) {
		h->cut = true;
	}
}

/* Keeps octets [p, p+n) of the body unless it is already too large. */
static void data_emit(struct data_reader *r, const char *p, size_t n)
{
	if (n == 0 || (r->errors & (DATA_ERR_SIZE | DATA_ERR_IO)))
		return;
	if (r->head != NULL)
		data_head_add(r->head, p, n);
	if (r->out->len + n > r->max_size) {
		/* Refused at the end: keep nothing from now on (however the
		 * input was split), and give the memory back at once. */
		r->errors |= DATA_ERR_SIZE;
		msgbuf_free(r->out);
		return;
	}
	if (msgbuf_append(r->out, p, n) < 0)
		r->errors |= DATA_ERR_IO;
}

static void data_text(struct data_reader *r)
{
	if (++r->line_len > DATA_LINE_MAX - 2)
		r->errors |= DATA_ERR_LINE;
	r->st = DATA_TEXT;
}

size_t data_feed(struct data_reader *r, const char *p, size_t n)
{
	const char *run = p; /* start of octets to keep verbatim */
	size_t i;

	for (i = 0; i < n && r->st != DATA_DONE; i++) {
		char ch = p[i];

		if (r->st == DATA_TEXT && ch != '\r' && ch != '\n') {
			/* The common case: plain text up to the line end, found
			 * with memchr rather than byte by byte. */
			const char *lf = memchr(p + i, '\n', n - i);
			size_t stop = lf ? (size_t)(lf - p) : n;
			const char *cr = memchr(p + i, '\r', stop - i);
			size_t j = cr ? (size_t)(cr - p) : stop;
			r->line_len += j - i;
			if (r->line_len > DATA_LINE_MAX - 2)
				r->errors |= DATA_ERR_LINE;
			i = j - 1;
			continue;
		}

		switch (r->st) {
		case DATA_BOL:
			if (ch == '.' && r->dots) {
				/* A leading dot is stuffing (or the end):
				 * never part of the body. */
				data_emit(r, run, (size_t)(p + i - run));
				run = p + i + 1;
				r->line_len = 1;
				r->st = DATA_DOT;
				break;
			}
			/* fall through */
		case DATA_TEXT:
			if (ch == '\r')
				r->st = DATA_CR;
			else if (ch == '\n')
				r->errors |= DATA_ERR_BARE, r->st = DATA_TEXT;
			else
				data_text(r);
			break;
		case DATA_CR:
			if (ch == '\n') {
				r->st = DATA_BOL;
				r->line_len = 0;
			} else if (ch == '\r') {
				r->errors |= DATA_ERR_BARE;
			} else {
				r->errors |= DATA_ERR_BARE;
				r->line_len++; /* the bare CR is text */
				data_text(r);
			}
			break;
		case DATA_DOT:
			if (ch == '\r') {
				/* Hold the CR back: ".\r\n" is the end. */
				data_emit(r, run, (size_t)(p + i - run));
				run = p + i + 1;
				r->st = DATA_DOTCR;
			} else if (ch == '\n') {
				r->errors |= DATA_ERR_BARE, r->st = DATA_TEXT;
			} else {
				data_text(r);
			}
			break;
		case DATA_DOTCR:
			if (ch == '\n') {
				run =
				    p + i + 1; /* the end marker is not kept */
				r->st = DATA_DONE;
				break;
			}
			data_emit(r, "\r", 1); /* the CR held back */
			r->errors |= DATA_ERR_BARE;
			if (ch == '\r') {
				r->st = DATA_CR;
			} else {
				data_text(r);
			}
			break;
		case DATA_DONE:
			break;
		}
	}
	if (r->st != DATA_DONE)
		data_emit(r, run, (size_t)(p + i - run));
	/* The octets consumed are all message (a stuffing dot or the end
	 * marker is no NUL), so one memchr over them finds a NUL, which
	 * neither 7bit nor 8bit data may hold (RFC 2045 2.7, 2.8; only
	 * BINARYMIME would allow it, and we do not offer it). */
	if (!(r->errors & DATA_ERR_NUL) && i > 0 && memchr(p, '\0', i))
		r->errors |= DATA_ERR_NUL;
	return i;
}
