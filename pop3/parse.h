/*
 * parse.h - POP3 command arguments: message numbers and line counts
 * (SASL responses are core/sasl.h's). Pure functions, unit-tested alone.
 */
#ifndef PILLARBOX_POP3_PARSE_H
#define PILLARBOX_POP3_PARSE_H

#include <stddef.h>

/* A decimal number >= 1 (a message number; RFC 1939 has no signs, no
 * leading spaces, no hex). Sets *rest to what follows it: "" or " ...".
 * Returns 0, or -1 when arg does not start with one. */
int pop3_parse_number(const char *arg, unsigned long *n, const char **rest);

#endif
