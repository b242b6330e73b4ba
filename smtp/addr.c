/* addr.c - SMTP path parser and "local@domain" formatter; see addr.h.
 * Grammar: RFC 5321 4.1.2 and 4.1.3, extended for UTF-8 by RFC 6531 3.3. */
#include "smtp/addr.h"

#include <arpa/inet.h>
#include <assert.h>
#include <string.h>
#include <strings.h>

#define ADDR_LABEL_MAX 63 /* RFC 1035 2.3.4: label is 63 octets or less */
/* The longest literal we read: "IPv6:" and an IPv6 address in its longest
 * text form (INET6_ADDRSTRLEN, 46 with the NUL). */
#define ADDR_LITERAL_MAX (5 + 45)
#define ADDR_IPV6_TAG	 "IPv6:" /* RFC 5321 4.1.3 */

/* A cursor over the path; bytes are unsigned so that c >= 0x80 tests work. */
struct addr_parser {
	const unsigned char *s;
	size_t n;  /* bytes available at s */
	size_t i;  /* next byte to read */
	bool utf8; /* SMTPUTF8 was given */
};

static bool addr_is_alnum(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9');
}

/* RFC 5322 3.2.3: atext = ALPHA / DIGIT / "!" / "#" / ... / "~". */
static bool addr_is_atext(int c)
{
	return addr_is_alnum(c) ||
	       (c > 0 && c < 0x80 && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

static int addr_lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

/* Next byte, or -1 at the end of the input: never reads past s[n). */
static int addr_peek(const struct addr_parser *p)
{
	return p->i < p->n ? p->s[p->i] : -1;
}

/* Length of the well-formed UTF-8 sequence at the cursor (RFC 6531 3.3
 * UTF8-non-ascii, as RFC 3629 4 defines it: no overlong forms, no
 * surrogates, nothing above U+10FFFF), or 0 if it is ill-formed, cut
 * short, or UTF-8 is not allowed in this session. */
static size_t addr_utf8_len(const struct addr_parser *p)
{
	unsigned char c = p->s[p->i], lo = 0x80, hi = 0xBF;
	size_t len, k;

	if (!p->utf8)
		return 0;
	if (c >= 0xC2 && c <= 0xDF)
		len = 2;
	else if (c >= 0xE0 && c <= 0xEF)
		len = 3;
	else if (c >= 0xF0 && c <= 0xF4)
		len = 4;
	else
		return 0;
	if (c == 0xE0)
		lo = 0xA0; /* overlong */
	else if (c == 0xED)
		hi = 0x9F; /* surrogates */
	else if (c == 0xF0)
		lo = 0x90; /* overlong */
	else if (c == 0xF4)
		hi = 0x8F; /* above U+10FFFF */
	if (p->n - p->i < len)
		return 0;
	for (k = 1; k < len; k++) {
		if (p->s[p->i + k] < lo || p->s[p->i + k] > hi)
			return 0;
		lo = 0x80;
		hi = 0xBF;
	}
	return len;
}

/* Appends k bytes to out[0..max], keeping room for the NUL. */
static int addr_append(char *out, size_t *len, size_t max,
		       const unsigned char *src, size_t k)
{
	if (k > max - *len)
		return -1; /* RFC 5321 4.5.3.1.1 / 4.5.3.1.2 limits */
	memcpy(out + *len, src, k);
	*len += k;
	return 0;
}

/* Dot-string = Atom *("." Atom), Atom = 1*atext (RFC 5321 4.1.2), atext
 * including UTF-8 (RFC 6531 3.3). The parser has validated any UTF-8
 * already, so here every byte >= 0x80 counts as atext. */
static bool addr_is_dot_string(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || s[0] == '.' || s[len - 1] == '.')
		return false;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '.' ? s[i + 1] == '.'
			     : !(c >= 0x80 || addr_is_atext(c)))
			return false;
	}
	return true;
}

/* Quoted-string = DQUOTE *QcontentSMTP DQUOTE, where
 * qtextSMTP = %d32-33 / %d35-91 / %d93-126 (plus UTF-8, RFC 6531 3.3) and
 * quoted-pairSMTP = %d92 %d32-126. The quotes and backslashes are dropped.
 * NUL, CR, LF and DEL fit neither rule. */
static int addr_parse_quoted(struct addr_parser *p, char *out, size_t *len)
{
	p->i++; /* DQUOTE */
	for (;;) {
		int c = addr_peek(p);
		size_t k = 1;

		if (c == '"') {
			p->i++;
			return 0;
		}
		if (c == '\\') { /* quoted-pairSMTP: ASCII only */
			p->i++;
			c = addr_peek(p);
			if (c < 32 || c > 126)
				return -1;
		} else if (c >= 0x80) {
			if (!(k = addr_utf8_len(p)))
				return -1;
		} else if (c < 32 || c == 127) {
			return -1; /* also the end of input */
		}
		if (addr_append(out, len, ADDR_LOCAL_MAX, p->s + p->i, k) < 0)
			return -1;
		p->i += k;
	}
}

/* Dot-string: collect atext and dots, then check the dot placement. */
static int addr_parse_dot_string(struct addr_parser *p, char *out, size_t *len)
{
	for (;;) {
		int c = addr_peek(p);
		size_t k = 1;

		if (c >= 0x80 && !(k = addr_utf8_len(p)))
			return -1;
		if (c < 0x80 && c != '.' && !addr_is_atext(c))
			break;
		if (addr_append(out, len, ADDR_LOCAL_MAX, p->s + p->i, k) < 0)
			return -1;
		p->i += k;
	}
	return addr_is_dot_string(out, *len) ? 0 : -1;
}

/* Domain = sub-domain *("." sub-domain), sub-domain = Let-dig [Ldh-str]
 * (RFC 5321 4.1.2), or a U-label (RFC 6531 3.3): labels of letters, digits
 * and hyphens, not starting or ending with a hyphen, 63 octets at most.
 * One trailing dot (the DNS root) is accepted and dropped. ASCII letters
 * are lower-cased; U-labels are kept as sent. */
static int addr_parse_domain(struct addr_parser *p, char *out)
{
	size_t len = 0, label = 0;
	bool hyphen = false; /* last byte of the label was '-' */

	for (;;) {
		int c = addr_peek(p);
		size_t k = 1;
		unsigned char low;

		if (c == '.') {
			if (label == 0 || hyphen)
				return -1; /* empty label, or ends with '-' */
			label = 0;
			p->i++;
			continue;
		}
		if (c >= 0x80 && !(k = addr_utf8_len(p)))
			return -1;
		if (c < 0x80 && c != '-' && !addr_is_alnum(c))
			break;
		if (label == 0 && c == '-')
			return -1; /* Let-dig first */
		if (label == 0 && len > 0 &&
		    addr_append(out, &len, ADDR_DOMAIN_MAX,
				(const unsigned char *)".", 1) < 0)
			return -1;
		if ((label += k) > ADDR_LABEL_MAX)
			return -1;
		low = (unsigned char)addr_lower(c);
		if (addr_append(out, &len, ADDR_DOMAIN_MAX,
				k == 1 ? &low : p->s + p->i, k) < 0)
			return -1;
		hyphen = c == '-';
		p->i += k;
	}
	return len > 0 && !hyphen ? 0 : -1;
}

/* address-literal = "[" ( IPv4-address-literal / IPv6-address-literal )
 * "]" (RFC 5321 4.1.3; a General-address-literal has no use here and is
 * refused). The address is checked and written back in its shortest form
 * by inet_pton/inet_ntop, so one address has one spelling: a literal
 * compares equal to the server's own address, or to nothing. */
static int addr_parse_literal(struct addr_parser *p, char *out)
{
	char text[ADDR_LITERAL_MAX + 1], norm[INET6_ADDRSTRLEN];
	unsigned char bin[sizeof(struct in6_addr)];
	size_t n = 0, tag = strlen(ADDR_IPV6_TAG);
	bool v6;

	p->i++; /* "[" */
	for (;; n++) {
		int c = addr_peek(p);
		if (c == ']')
			break;
		/* Only what an address literal may hold: also stops at the
		 * end of the input. */
		if (n == ADDR_LITERAL_MAX || c < 0 ||
		    !(addr_is_alnum(c) || c == '.' || c == ':'))
			return -1;
		text[n] = (char)c;
		p->i++;
	}
	p->i++; /* "]" */
	text[n] = '\0';
	v6 = n > tag && strncasecmp(text, ADDR_IPV6_TAG, tag) == 0;
	if (inet_pton(v6 ? AF_INET6 : AF_INET, v6 ? text + tag : text, bin) !=
		1 ||
	    inet_ntop(v6 ? AF_INET6 : AF_INET, bin, norm, sizeof norm) == NULL)
		return -1;
	/* Fits: ADDR_DOMAIN_MAX is far above "[IPv6:" + 45 + "]". */
	strcpy(out, v6 ? "[" ADDR_IPV6_TAG : "[");
	strcat(out, norm);
	strcat(out, "]");
	return 0;
}

/* see addr.h */
int addr_parse_path(const char *s, size_t n, bool allow_null, bool utf8,
		    struct addr *a, size_t *used)
{
	struct addr_parser p = {(const unsigned char *)s, n, 0, utf8};
	size_t len = 0;

	assert(s != NULL || n == 0);
	assert(a != NULL && used != NULL);
	memset(a, 0, sizeof *a);
	if (addr_peek(&p) != '<')
		goto fail;
	p.i++;
	if (addr_peek(&p) == '>') { /* Reverse-path = Path / "<>" */
		if (!allow_null)
			goto fail;
		a->null = true;
		goto done;
	}
	/* A source route (A-d-l ":") starts with '@' and fails here: no
	 * Local-part begins with '@'. Refused on purpose, see addr.h. */
	if (addr_peek(&p) == '"') {
		if (addr_parse_quoted(&p, a->local, &len) < 0)
			goto fail;
	} else if (addr_parse_dot_string(&p, a->local, &len) < 0) {
		goto fail;
	}
	/* Mailbox = Local-part "@" Domain: the domain is required, even for
	 * "<postmaster>" (which RFC 5321 4.1.1.3 allows only in RCPT TO and
	 * the caller may special-case). */
	if (addr_peek(&p) != '@')
		goto fail;
	p.i++;
	/* A second '@' ("user@remote@local") ends the Domain and fails the
	 * '>' test below. */
	a->literal = addr_peek(&p) == '[';
	if (a->literal ? addr_parse_literal(&p, a->domain) < 0
		       : addr_parse_domain(&p, a->domain) < 0)
		goto fail;
	if (addr_peek(&p) != '>')
		goto fail;
done:
	*used = p.i + 1;
	return 0;
fail:
	memset(a, 0, sizeof *a);
	return -1;
}

/* Writes c at buf[len] if it fits; counts it either way. */
static void addr_put(char *buf, size_t n, size_t *len, int c)
{
	if (*len < n)
		buf[*len] = (char)c;
	(*len)++;
}

/* Writes the address; lower lower-cases the local part (ASCII only). */
static int addr_write(const struct addr *a, char *buf, size_t n, bool lower)
{
	size_t len = 0, i;
	bool quote;

	assert(a != NULL && (buf != NULL || n == 0));
	if (!a->null) {
		/* Re-quote what is not a Dot-string (RFC 5321 4.1.2), escaping
		 * only what qtextSMTP excludes: '"' and '\'. */
		quote = !addr_is_dot_string(a->local, strlen(a->local));
		if (quote)
			addr_put(buf, n, &len, '"');
		for (i = 0; a->local[i]; i++) {
			char c = a->local[i];
			if (quote && (c == '"' || c == '\\'))
				addr_put(buf, n, &len, '\\');
			addr_put(buf, n, &len, lower ? addr_lower(c) : c);
		}
		if (quote)
			addr_put(buf, n, &len, '"');
		addr_put(buf, n, &len, '@');
		/* A literal is in its one spelling already ("IPv6:"). */
		for (i = 0; a->domain[i]; i++)
			addr_put(buf, n, &len,
				 a->literal ? a->domain[i]
					    : addr_lower(a->domain[i]));
	}
	if (len >= n)
		return -1; /* no room for the NUL */
	buf[len] = '\0';
	return (int)len;
}

/* see addr.h */
int addr_format(const struct addr *a, char *buf, size_t n)
{
	return addr_write(a, buf, n, true);
}

/* see addr.h */
int addr_format_sent(const struct addr *a, char *buf, size_t n)
{
	return addr_write(a, buf, n, false);
}

/* see addr.h */
int addr_literal_ip(const struct addr *a, char *buf, size_t n)
{
	const char *ip = a->domain + 1; /* past "[" */
	size_t len;

	if (!a->literal)
		return -1;
	if (strncmp(ip, ADDR_IPV6_TAG, strlen(ADDR_IPV6_TAG)) == 0)
		ip += strlen(ADDR_IPV6_TAG);
	len = strlen(ip) - 1; /* without "]" */
	if (len >= n)
		return -1;
	memcpy(buf, ip, len);
	buf[len] = '\0';
	return (int)len;
}
