/*
 * sasl.h - decoding SASL responses (RFC 4422) shared by SMTP AUTH (RFC 4954)
 * and POP3 AUTH (RFC 5034). Pure functions; the caller wipes what it got.
 */
#ifndef PILLARBOX_SASL_H
#define PILLARBOX_SASL_H

#include <stddef.h>

#define PLAIN_MAX      1024 /* decoded PLAIN response: two names, a password */
#define SASL_FIELD_MAX 512  /* one decoded LOGIN field: a name or a password */

/* Decodes an AUTH PLAIN response (RFC 4616): base64 of
 * [authzid] NUL authcid NUL passwd. Copies authcid into user and the
 * password into pass (NUL-terminated). An authzid other than the authcid is
 * refused: no logging in as someone else. Returns 0; -1 for bad base64;
 * -2 for a wrong structure or fields too long. */
int sasl_plain(const char *b64, char *user, size_t user_size, char *pass,
	       size_t pass_size);

/* Decodes one base64 field (a LOGIN user name or password) into out
 * (NUL-terminated). Returns 0; -1 for bad base64; -2 when it is too long
 * for out or holds a NUL. */
int sasl_field(const char *b64, char *out, size_t size);

#endif
