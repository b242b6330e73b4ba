/*
 * parse.h - SMTP command arguments: MAIL FROM, RCPT TO, BDAT, HELO names.
 * Pure functions over the command line, so they are unit-tested alone.
 * Each returns NULL on success or the exact reply line to send.
 */
#ifndef PILLARBOX_SMTP_PARSE_H
#define PILLARBOX_SMTP_PARSE_H

#include <stdbool.h>
#include <stdint.h>

#include "smtp/addr.h"

struct smtp_mail_args {
	struct addr from;
	uint64_t size; /* SIZE=, 0 when not given (RFC 1870) */
	bool utf8;     /* SMTPUTF8 (RFC 6531) */
};

/* "FROM:<path> [SIZE=n] [BODY=7BIT|8BITMIME] [SMTPUTF8]". Parameters need
 * EHLO (esmtp). arg is modified (split at spaces). */
const char *smtp_parse_mail(char *arg, bool esmtp, struct smtp_mail_args *m);

/* "TO:<path>" (no parameters are supported). "<postmaster>" without a
 * domain (RFC 5321 4.1.1.3) becomes postmaster@postmaster_domain. A
 * non-ASCII address needs utf8 (SMTPUTF8 given at MAIL). */
const char *smtp_parse_rcpt(const char *arg, bool utf8,
			    const char *postmaster_domain, struct addr *a);

/* "SIZE [LAST]" (RFC 3030). */
const char *smtp_parse_bdat(const char *arg, uint64_t *size, bool *last);

/* The client's name from HELO/EHLO: printable ASCII up to the first space,
 * 1 to 255 octets. Returns its length, or 0 when it is not acceptable. */
size_t smtp_parse_helo(const char *arg);

#endif
