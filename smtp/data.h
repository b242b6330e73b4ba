/*
 * data.h - the message body: the DATA byte-level reader (RFC 5321 4.1.1.4,
 * 4.5.2) and BDAT chunks (RFC 3030), into a buffer that spills to a file.
 *
 * Only CRLF "." CRLF ends DATA. A bare LF or bare CR never starts a line, so
 * "\n.\r\n", "\r.\r\n" and "\n.\n" cannot end the message and a message
 * cannot smuggle a second one past us (SMTP smuggling, CVE-2023-51766 and
 * friends). Bare CR or LF anywhere makes the message refused at its end, and
 * so does a NUL: a next hop that drops NULs would see "CRLF NUL . CRLF" as
 * the end of the message.
 * The reader resumes across any split of its input: feeding the same bytes
 * in any chunks gives the same result.
 */
#ifndef PILLARBOX_SMTP_DATA_H
#define PILLARBOX_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DATA_LINE_MAX 1000 /* RFC 5321 4.5.3.1.6, CRLF included */

/* A body up to MSGBUF_CHUNK octets stays in memory; a larger one goes to an
 * unlinked file in msgbuf_spill_dir, in chunks of that size. The file is
 * opened and written on the thread pool, one chunk at a time and in order,
 * so the loop never waits for the disk. */
#define MSGBUF_CHUNK (256u << 10)
#define MSGBUF_QUEUE_MAX                                                       \
	2 /* chunks waiting (one being written) before the                     \
	   * reader should stop: a connection holds at most                    \
	   * three chunks (768 KiB) besides its input */

struct msgbuf_chunk;
struct msgbuf_spill;

/* A message body. Loop thread only, except msgbuf_copy(). */
struct msgbuf {
	struct msgbuf_chunk *cur;   /* being filled: the whole body until it
				     * spills */
	size_t cap;		    /* octets cur can hold */
	uint64_t len;		    /* octets appended */
	struct msgbuf_spill *spill; /* the file and its writer; NULL while
				     * the body is in memory */
	void (*written)(void *arg); /* see msgbuf_init */
	void *arg;
};

extern const char *msgbuf_spill_dir; /* set once at start */

/* An empty body. written(arg), when not NULL, runs on the loop thread
 * after each chunk reached the file (or failed to): the moment to check
 * msgbuf_full() and msgbuf_busy() again. Needs loop_init() once a body can
 * spill. */
void msgbuf_init(struct msgbuf *b, void (*written)(void *arg), void *arg);

/* Appends n octets (copied). Returns 0, or once a write to the spill file
 * has failed, that error (see msgbuf_error), and keeps nothing more. */
int msgbuf_append(struct msgbuf *b, const char *p, size_t n);

/* True while MSGBUF_QUEUE_MAX chunks or more wait for the file: the caller
 * should stop reading input until written() says otherwise, which bounds
 * the memory a fast client can make us hold. */
bool msgbuf_full(const struct msgbuf *b);

/* The body is complete: sends what is left of a spilled body to the file.
 * Append nothing after this. */
void msgbuf_end(struct msgbuf *b);

/* True while a write to the spill file is pending; written() runs after
 * each one. */
bool msgbuf_busy(const struct msgbuf *b);

/* 0, or the first error of the spill file: -ENOSPC when the disk (or the
 * quota) is full, -EIO for anything else. */
int msgbuf_error(const struct msgbuf *b);

/* Copies the whole body (b->len octets) to dst: on any thread, once
 * msgbuf_end() was called and msgbuf_busy() is false with no error, while
 * the loop thread leaves b alone. 0 or -EIO. */
int msgbuf_copy(const struct msgbuf *b, char *dst);

/* Frees the body at any time; b is empty again, with the same written()
 * (which the freed body never calls). A write still running finishes on
 * the thread pool and then releases its memory and the file. */
void msgbuf_free(struct msgbuf *b);

enum data_state {
	DATA_BOL,
	DATA_TEXT,
	DATA_CR,
	DATA_DOT,
	DATA_DOTCR,
	DATA_DONE
};

/* What was wrong with a body; checked when it ends. */
#define DATA_ERR_LINE 0x01 /* a line over DATA_LINE_MAX */
#define DATA_ERR_BARE 0x02 /* bare CR or LF */
#define DATA_ERR_SIZE 0x04 /* over max_size: the rest was not kept */
#define DATA_ERR_IO   0x08 /* the body could not be kept (msgbuf_error) */
#define DATA_ERR_NUL  0x10 /* a NUL octet */

/* A copy of a body's header section, kept as the body passes for a check
 * made at its end (the From: field, for the sender check): up to and
 * including the empty line that ends it, or the whole body when there is
 * none, and at most DATA_HEAD_MAX octets. Set r->head after data_init();
 * the owner frees p. */
#define DATA_HEAD_MAX                                                          \
	(64u << 10) /* a header section longer than this is                    \
		     * not a mail client's */
struct data_head {
	char *p; /* the octets (not NUL-terminated) */
	size_t len, cap;
	bool ended; /* the empty line was seen: p is the whole section */
	bool cut;   /* DATA_HEAD_MAX was reached first */
};

struct data_reader {
	enum data_state st;
	bool dots;	   /* DATA: dot-stuffing and end marker; BDAT: none */
	unsigned errors;   /* DATA_ERR_* */
	size_t line_len;   /* octets of the current line so far */
	uint64_t max_size; /* body octets kept at most */
	struct msgbuf *out;
	struct data_head *head; /* NULL: none kept */
};

/* Starts reading a body into out (which keeps its current contents: BDAT
 * chunks append). dots selects DATA (true) or BDAT (false) rules. */
void data_init(struct data_reader *r, bool dots, uint64_t max_size,
	       struct msgbuf *out);

/* Feeds n octets. Returns how many were consumed: all of them, unless the
 * end of DATA was reached, which leaves r->st == DATA_DONE and the octets
 * after the final CRLF unconsumed (they are the next command). */
size_t data_feed(struct data_reader *r, const char *p, size_t n);

#endif
