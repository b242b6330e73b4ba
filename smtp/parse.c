/* parse.c - SMTP command arguments. see parse.h */
#include "smtp/parse.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The most a BDAT chunk may announce; more is surely a mistake. */
#define SMTP_BDAT_MAX (1ull << 40)
#define SMTP_HELO_MAX 255 /* RFC 1035 2.3.4: a name is 255 octets at most */

#define POSTMASTER "<postmaster>" /* RFC 5321 4.1.1.3: without a domain */
#define SIZE_EQ	   "SIZE="	  /* RFC 1870 */

/* Skips "FROM:" / "TO:" (any case, and spaces after the colon, which many
 * clients send). Returns the path, or NULL. */
static const char *path_arg(const char *arg, const char *kw)
{
	size_t n = strlen(kw);

	if (strncasecmp(arg, kw, n) != 0)
		return NULL;
	arg += n;
	while (*arg == ' ')
		arg++;
	return arg;
}

static bool addr_ascii(const struct addr *a)
{
	const char *parts[] = {a->local, a->domain};

	for (int i = 0; i < 2; i++)
		for (const char *p = parts[i]; *p; p++)
			if ((unsigned char)*p >= 0x80)
				return false;
	return true;
}

const char *smtp_parse_mail(char *arg, bool esmtp, struct smtp_mail_args *m)
{
	const char *path = path_arg(arg, "FROM:");
	char *param, *save, *end;
	size_t used;

	memset(m, 0, sizeof *m);
	/* The path is parsed with UTF-8 allowed; whether it was allowed is
	 * known only once SMTPUTF8 is seen among the parameters after it. */
	if (path == NULL ||
	    addr_parse_path(path, strlen(path), true, true, &m->from, &used) <
		0 ||
	    (path[used] != '\0' && path[used] != ' '))
		return "501 5.1.7 Bad sender address syntax";
	for (param = strtok_r((char *)path + used, " ", &save); param != NULL;
	     param = strtok_r(NULL, " ", &save)) {
		if (!esmtp)
			return "555 5.5.4 MAIL parameters need EHLO";
		if (strncasecmp(param, SIZE_EQ, strlen(SIZE_EQ)) == 0) {
			const char *num = param + strlen(SIZE_EQ);
			errno = 0;
			m->size = strtoull(num, &end, 10);
			if (!isdigit((unsigned char)*num) || *end != '\0' ||
			    errno != 0)
				return "501 5.5.4 Bad SIZE parameter";
		} else if (strcasecmp(param, "BODY=8BITMIME") == 0 ||
			   strcasecmp(param, "BODY=7BIT") == 0) {
			/* 8-bit bodies are stored as they come. */
		} else if (strcasecmp(param, "SMTPUTF8") == 0) {
			m->utf8 = true;
		} else {
			return "555 5.5.4 Unsupported MAIL parameter";
		}
	}
	if (!m->utf8 && !addr_ascii(&m->from))
		return "553 5.6.7 Non-ASCII address needs SMTPUTF8";
	return NULL;
}

const char *smtp_parse_rcpt(const char *arg, bool utf8,
			    const char *postmaster_domain, struct addr *a)
{
	const char *path = path_arg(arg, "TO:");
	size_t used;

	memset(a, 0, sizeof *a);
	if (path != NULL &&
	    strncasecmp(path, POSTMASTER, strlen(POSTMASTER)) == 0) {
		strcpy(a->local, "postmaster");
		snprintf(a->domain, sizeof a->domain, "%s", postmaster_domain);
		used = strlen(POSTMASTER);
	} else if (path == NULL || addr_parse_path(path, strlen(path), false,
						   true, a, &used) < 0) {
		return "501 5.1.3 Bad recipient address syntax";
	}
	while (path[used] == ' ') /* trailing spaces, as MAIL allows */
		used++;
	if (path[used] != '\0')
		return path[used - 1] == ' '
			   ? "555 5.5.4 Unsupported RCPT parameter"
			   : "501 5.1.3 Bad recipient address syntax";
	if (!utf8 && !addr_ascii(a))
		return "553 5.6.7 Non-ASCII address needs SMTPUTF8";
	return NULL;
}

const char *smtp_parse_bdat(const char *arg, uint64_t *size, bool *last)
{
	char *end;

	errno = 0;
	*size = strtoull(arg, &end, 10);
	*last = strcasecmp(end, " LAST") == 0;
	if (!isdigit((unsigned char)arg[0]) || errno != 0 ||
	    *size > SMTP_BDAT_MAX || (*end != '\0' && !*last))
		return "501 5.5.4 Syntax error: BDAT size [LAST]";
	return NULL;
}

size_t smtp_parse_helo(const char *arg)
{
	size_t n = strcspn(arg, " ");

	if (n > SMTP_HELO_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (arg[i] < 0x21 || arg[i] > 0x7e)
			return 0;
	return n;
}
