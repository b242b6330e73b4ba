/* from.c - the From: field's mailboxes. see from.h
 *
 * RFC 5322 3.6.2 and 3.4:
 *   from         = "From:" mailbox-list CRLF
 *   mailbox-list = mailbox *("," mailbox)
 *   mailbox      = name-addr / addr-spec
 *   name-addr    = [display-name] angle-addr
 *   angle-addr   = [CFWS] "<" addr-spec ">" [CFWS]
 * A display name is words and quoted strings, a comment is "(...)" and
 * may nest; a quoted string or a comment may hold any of ",<>:;" as text.
 * So the value is read once, left to right, with those two skipped as
 * units: what is left is commas between mailboxes, one optional <...>
 * per mailbox, and the text around it. */
#include "smtp/from.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"

/* An addr-spec at most: a quoted local part with every octet escaped,
 * "@", a domain. Longer cannot be a mailbox. */
#define FROM_SPEC_MAX (2 * ADDR_LOCAL_MAX + 2 + 1 + ADDR_DOMAIN_MAX)

/* One mailbox being read: the text outside and inside its <...>. */
struct from_box {
	char bare[FROM_SPEC_MAX + 1], spec[FROM_SPEC_MAX + 1];
	size_t nbare, nspec;
	bool bare_long; /* more outside text than an addr-spec holds */
	bool in_angle, angle;
};

static void from_put(struct from_box *b, const char *p, size_t n)
{
	char *buf = b->in_angle ? b->spec : b->bare;
	size_t *len = b->in_angle ? &b->nspec : &b->nbare;

	if (n > FROM_SPEC_MAX - *len) {
		/* A display name may be long; an addr-spec may not. */
		b->bare_long = true;
		if (b->in_angle)
			b->nspec = FROM_SPEC_MAX + 1; /* too long: refused */
		return;
	}
	memcpy(buf + *len, p, n);
	*len += n;
}

/* Skips a quoted string or a comment starting at v[i]; returns the index
 * past it, or 0 when it does not end. Comments nest (RFC 5322 3.2.2); in
 * both, a backslash makes the next octet text. */
static size_t from_skip(const char *v, size_t n, size_t i)
{
	int depth = 0;

	if (v[i] == '"') {
		for (i++; i < n; i++) {
			if (v[i] == '\\')
				i++;
			else if (v[i] == '"')
				return i + 1;
		}
		return 0;
	}
	for (; i < n; i++) {
		if (v[i] == '\\')
			i++;
		else if (v[i] == '(')
			depth++;
		else if (v[i] == ')' && --depth == 0)
			return i + 1;
	}
	return 0;
}

static bool from_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* Trims blanks of p[0..*n); returns the new start. */
static const char *from_trim(const char *p, size_t *n)
{
	while (*n > 0 && from_blank(*p))
		p++, (*n)--;
	while (*n > 0 && from_blank(p[*n - 1]))
		(*n)--;
	return p;
}

/* Ends a mailbox: its addr-spec must parse as an SMTP mailbox. Returns 1
 * when one was added to out, 0 for an empty list element, -1 on error. */
static int from_finish(struct from_box *b, bool utf8, struct addr *out)
{
	char path[FROM_SPEC_MAX + 3];
	const char *spec;
	size_t n, used;

	if (b->angle) {
		n = b->nspec;
		spec = from_trim(b->spec, &n);
	} else {
		n = b->nbare;
		spec = from_trim(b->bare, &n);
		if (n == 0 && !b->bare_long)
			return 0;
		if (b->bare_long)
			return -1;
	}
	if (n == 0 || n > FROM_SPEC_MAX)
		return -1;
	path[0] = '<';
	memcpy(path + 1, spec, n);
	path[n + 1] = '>';
	if (addr_parse_path(path, n + 2, false, utf8, out, &used) < 0 ||
	    used != n + 2)
		return -1;
	return 1;
}

/* Parses the unfolded value v[0..n) into out; see from_parse. */
static int from_value(const char *v, size_t n, bool utf8, struct addr *out)
{
	struct from_box b = {0};
	int count = 0, r;

	for (size_t i = 0;; i++) {
		char c = i < n ? v[i] : ',';
		size_t end;

		if (i < n && (c == '"' || c == '(')) {
			if ((end = from_skip(v, n, i)) == 0)
				return -1; /* unbalanced */
			/* A quoted string is text (a local part may be
			 * one); a comment is a blank. */
			from_put(&b, c == '"' ? v + i : " ",
				 c == '"' ? end - i : 1);
			i = end - 1;
		} else if (c == ',' && !b.in_angle) {
			/* The end of a mailbox, or of the list. */
			if ((r = from_finish(&b, utf8, &out[count])) < 0)
				return -1;
			count += r;
			if (i == n)
				return count > 0 ? count : -1;
			if (count == FROM_MAILBOXES_MAX)
				return -1; /* one more is coming at least */
			memset(&b, 0, sizeof b);
		} else if (i == n) {
			return -1; /* an angle address that does not end */
		} else if (c == '<' && !b.in_angle && !b.angle) {
			b.in_angle = true;
		} else if (c == '>' && b.in_angle) {
			b.in_angle = false;
			b.angle = true;
		} else if (c == '<' || c == '>' || c == ':' || c == ';' ||
			   (b.angle && !from_blank(c))) {
			/* A second address, a stray bracket, a group, or
			 * text after the address: not understood. */
			return -1;
		} else {
			from_put(&b, &c, 1);
		}
	}
}

/* Finds the first "From:" field; its value (after the colon, up to the
 * CRLF that ends the field) is [*val, *val + *n) of head, still folded. */
static bool from_find(const char *head, size_t len, const char **val, size_t *n)
{
	for (size_t i = 0; i + 5 <= len;) {
		size_t j = i + 4;
		const char *eol;

		if (strncasecmp(head + i, "From", 4) == 0) {
			while (j < len && from_blank(head[j]))
				j++;
			if (j < len && head[j] == ':') {
				/* The field runs to a CRLF not followed by a
				 * blank (RFC 5322 2.2.3: folding). */
				size_t k = j + 1;
				while ((eol = memmem(head + k, len - k, "\r\n",
						     2)) != NULL &&
				       (size_t)(eol - head) + 2 < len &&
				       from_blank(eol[2]))
					k = (size_t)(eol - head) + 2;
				*val = head + j + 1;
				*n =
				    (eol != NULL ? (size_t)(eol - head) : len) -
				    (j + 1);
				return true;
			}
		}
		/* The next line (a folded line never starts a field). */
		do {
			eol = memmem(head + i, len - i, "\r\n", 2);
			if (eol == NULL)
				return false;
			i = (size_t)(eol - head) + 2;
		} while (i < len && from_blank(head[i]));
	}
	return false;
}

/* see from.h */
int from_parse(const char *head, size_t len, bool utf8,
	       struct addr out[FROM_MAILBOXES_MAX])
{
	const char *val;
	char *unfolded;
	size_t n, m = 0;
	int r;

	if (!from_find(head, len, &val, &n))
		return -1;
	/* Unfolding removes each CRLF before a blank (RFC 5322 2.2.3). A
	 * bare CR or LF cannot be here: the message would be refused. */
	unfolded = xmalloc(n + 1);
	for (size_t i = 0; i < n; i++) {
		if (val[i] == '\r' && i + 1 < n && val[i + 1] == '\n') {
			i++;
			continue;
		}
		unfolded[m++] = val[i];
	}
	r = from_value(unfolded, m, utf8, out);
	free(unfolded);
	return r;
}
