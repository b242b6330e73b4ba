/*
 * data.h - the message body: the DATA byte-level reader (RFC 5321 4.1.1.4,
 * 4.5.2) and BDAT chunks (RFC 3030), into a buffer that spills to a file.
 *
 * Only CRLF "." CRLF ends DATA. A bare LF or bare CR never starts a line, so
 * "\n.\r\n", "\r.\r\n" and "\n.\n" cannot end the message and a message
 * cannot smuggle a second one past us (SMTP smuggling, CVE-2023-51766 and
 * friends). Bare CR or LF anywhere makes the message refused at its end.
 * The reader resumes across any split of its input: feeding the same bytes
 * in any chunks gives the same result.
 */
#ifndef PILLARBOX_SMTP_DATA_H
#define PILLARBOX_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DATA_LINE_MAX 1000	   /* RFC 5321 4.5.3.1.6, CRLF included */
#define MSGBUF_SPILL  (256u << 10) /* bodies above this go to a file */

/* A message body: in memory, or (past MSGBUF_SPILL) in an unlinked file in
 * msgbuf_spill_dir. */
struct msgbuf {
	char *mem;
	size_t cap;
	uint64_t len;
	int fd; /* -1 while in memory */
};

extern const char *msgbuf_spill_dir; /* set once at start */

void msgbuf_init(struct msgbuf *b);
/* Appends n octets; -EIO when the spill file cannot be written. */
int msgbuf_append(struct msgbuf *b, const char *p, size_t n);
/* Copies the whole body to dst (b->len octets); any thread. 0 or -EIO. */
int msgbuf_copy(const struct msgbuf *b, char *dst);
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
#define DATA_ERR_LINE 0x1 /* a line over DATA_LINE_MAX */
#define DATA_ERR_BARE 0x2 /* bare CR or LF */
#define DATA_ERR_SIZE 0x4 /* over max_size: the rest was not kept */
#define DATA_ERR_IO   0x8 /* the spill file failed */

struct data_reader {
	enum data_state st;
	bool dots;	   /* DATA: dot-stuffing and end marker; BDAT: none */
	unsigned errors;   /* DATA_ERR_* */
	size_t line_len;   /* octets of the current line so far */
	uint64_t max_size; /* body octets kept at most */
	struct msgbuf *out;
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
