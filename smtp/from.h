/*
 * from.h - the From: field of a message (RFC 5322 3.6.2), parsed just far
 * enough to say whose addresses it holds: the sender check of a user who
 * sends through us must see the addresses a reader will see.
 *
 * Minimal but safe: anything this parser is not sure of is an error, and
 * the caller refuses the message. A pure function, unit-tested alone.
 */
#ifndef PILLARBOX_SMTP_FROM_H
#define PILLARBOX_SMTP_FROM_H

#include <stdbool.h>
#include <stddef.h>

#include "smtp/addr.h"

/* Mailboxes in one From: field at most. RFC 5322 allows several (with a
 * Sender:); a message from more people than this is not a person's. */
#define FROM_MAILBOXES_MAX 8

/* Finds the first From: field of the header section head[0..len) (field
 * name "From" in any case, at the start of a line, optional blanks before
 * the colon), unfolds it, and parses its mailbox-list: each mailbox is
 * "display-name <addr-spec>" or a bare addr-spec; display names, comments
 * and blanks around are skipped, and an empty list element (obsolete
 * syntax) is ignored. Each addr-spec must be an SMTP mailbox (smtp/addr.h:
 * no source route, IPv4/IPv6 literals only; UTF-8 only with utf8) and is
 * parsed into out[0..FROM_MAILBOXES_MAX). Returns the number of mailboxes
 * (at least 1), or -1 when there is no From: field or it is not
 * understood: a group ("undisclosed:;"), an unbalanced quote, comment or
 * angle bracket, two angle addresses in one mailbox, an addr-spec that is
 * not a mailbox, or more than FROM_MAILBOXES_MAX mailboxes. */
int from_parse(const char *head, size_t len, bool utf8,
	       struct addr out[FROM_MAILBOXES_MAX]);

#endif
