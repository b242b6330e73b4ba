/*
 * parse.h - POP3 command arguments: message numbers, line counts and the
 * SASL PLAIN response. Pure functions, unit-tested alone.
 */
#ifndef PILLARBOX_POP3_PARSE_H
#define PILLARBOX_POP3_PARSE_H

#include <stddef.h>

/* A decimal number >= 1 (a message number; RFC 1939 has no signs, no
 * leading spaces, no hex). Sets *rest to what follows it: "" or " ...".
 * Returns 0, or -1 when arg does not start with one. */
int pop3_parse_number(const char *arg, unsigned long *n, const char **rest);

/* Decodes an AUTH PLAIN response (RFC 4616): base64 of
 * [authzid] NUL authcid NUL passwd. Copies authcid into user and the
 * password into pass (NUL-terminated). An authzid other than the authcid is
 * refused: no logging in as someone else. Returns 0; -1 for bad base64;
 * -2 for a wrong structure or fields too long. */
int pop3_parse_plain(const char *b64, char *user, size_t user_size, char *pass,
		     size_t pass_size);

#endif
