/* data.c - DATA/BDAT body reader and the spilling body buffer. see data.h */
#include "smtp/data.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"

const char *msgbuf_spill_dir = ".";

void msgbuf_init(struct msgbuf *b)
{
	memset(b, 0, sizeof *b);
	b->fd = -1;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -EIO;
		p += w, n -= (size_t)w;
	}
	return 0;
}

/* Moves the body into an unlinked file, so a large message costs no RAM. */
static int msgbuf_spill(struct msgbuf *b)
{
	b->fd = open(msgbuf_spill_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (b->fd < 0) {
		log_msg(LOG_ERROR, "smtp", "event=spill-error dir=%s error=%s",
			msgbuf_spill_dir, strerror(errno));
		return -EIO;
	}
	if (write_all(b->fd, b->mem, b->len) < 0)
		return -EIO;
	free(b->mem);
	b->mem = NULL;
	b->cap = 0;
	return 0;
}

int msgbuf_append(struct msgbuf *b, const char *p, size_t n)
{
	if (n == 0)
		return 0;
	if (b->fd < 0 && b->len + n > MSGBUF_SPILL && msgbuf_spill(b) < 0)
		return -EIO;
	if (b->fd >= 0) {
		if (write_all(b->fd, p, n) < 0)
			return -EIO;
	} else {
		if (b->len + n > b->cap) {
			b->cap = b->len + n < 4096 ? 4096 : 2 * (b->len + n);
			b->mem = xrealloc(b->mem, b->cap);
		}
		memcpy(b->mem + b->len, p, n);
	}
	b->len += n;
	return 0;
}

int msgbuf_copy(const struct msgbuf *b, char *dst)
{
	uint64_t off = 0;

	if (b->fd < 0) {
		if (b->len > 0)
			memcpy(dst, b->mem, b->len);
		return 0;
	}
	while (off < b->len) {
		ssize_t r = pread(b->fd, dst + off, b->len - off, (off_t)off);
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
	free(b->mem);
	if (b->fd >= 0)
		close(b->fd);
	msgbuf_init(b);
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

/* Keeps octets [p, p+n) of the body unless it is already too large. */
static void data_emit(struct data_reader *r, const char *p, size_t n)
{
	if (n == 0 || (r->errors & (DATA_ERR_SIZE | DATA_ERR_IO)))
		return;
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
	return i;
}
