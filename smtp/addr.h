/*
 * addr.h - SMTP paths and mailboxes (RFC 5321 4.1.2, RFC 6531 for UTF-8).
 *
 *   Reverse-path / Forward-path = "<" Mailbox ">"  (or "<>" for a null sender)
 *   Mailbox    = Local-part "@" Domain
 *   Local-part = Dot-string / Quoted-string
 *
 * Source routes ("<@a,@b:user@c>") are refused: RFC 5321 4.1.2 lets servers
 * ignore them, but they are a classic relay trick, so pillarbox says no.
 * Address literals (RFC 5321 4.1.3) are parsed, IPv4 ("user@[192.0.2.1]")
 * and IPv6 ("user@[IPv6:2001:db8::1]") only, so that the caller can tell
 * one of its own addresses from a relay attempt; a general literal
 * ("[tag:...]") is refused.
 * The parser never allocates: results are copied into struct addr.
 */
#ifndef PILLARBOX_SMTP_ADDR_H
#define PILLARBOX_SMTP_ADDR_H

#include <stdbool.h>
#include <stddef.h>

#define ADDR_LOCAL_MAX	64  /* RFC 5321 4.5.3.1.1 */
#define ADDR_DOMAIN_MAX 255 /* RFC 5321 4.5.3.1.2 */

struct addr {
	bool null;			  /* "<>" */
	bool literal;			  /* the domain is an address literal */
	char local[ADDR_LOCAL_MAX + 1];	  /* as sent, quotes removed */
	char domain[ADDR_DOMAIN_MAX + 1]; /* lower-cased, no trailing dot; a
					   * literal as "[192.0.2.1]" or
					   * "[IPv6:2001:db8::1]", the address
					   * in its shortest form */
};

/* Parses a path at s[0..n). allow_null accepts "<>" (MAIL FROM only);
 * utf8 accepts well-formed UTF-8 in local part and domain (SMTPUTF8 was
 * given); without it any byte >= 0x80 is an error. Never reads past s[n);
 * s need not be NUL-terminated.
 * On success returns 0, fills *a and sets *used to the octets consumed
 * (up to and including '>'); what follows (" SIZE=10") is the caller's.
 * Returns -1 on any syntax error, with *a zeroed and *used untouched.
 * Surrounding spaces are not skipped: s must start with '<'. Space, like
 * any other qtextSMTP, is allowed only inside a Quoted-string. The 64-octet
 * limit counts the local part without its quotes and backslashes. A
 * mailbox needs a domain: "<postmaster>" is an error here. */
int addr_parse_path(const char *s, size_t n, bool allow_null, bool utf8,
		    struct addr *a, size_t *used);

/* Writes "local@domain" (or "" for null) lower-cased (ASCII letters only)
 * into buf of size n, NUL-terminated, quoting the local part again when it
 * is not a Dot-string ('"' and '\' escaped). Returns the length without
 * the NUL, or -1 if that does not fit in n. This is the key used for store
 * lookups: needless quotes or escapes, ASCII case and a trailing dot in the
 * domain do not change it. */
int addr_format(const struct addr *a, char *buf, size_t n);

/* The same, but the local part keeps its case: the address to show and to
 * pass on. RFC 5321 2.4: only the host that owns a mailbox may treat its
 * local part as case-insensitive, so a relayed recipient (and the sender
 * handed on with it) keeps the case the client gave. */
int addr_format_sent(const struct addr *a, char *buf, size_t n);

/* The address of a literal domain ("[192.0.2.1]" -> "192.0.2.1",
 * "[IPv6:::1]" -> "::1") into buf (size n); -1 when a is no literal or it
 * does not fit. */
int addr_literal_ip(const struct addr *a, char *buf, size_t n);

#endif
