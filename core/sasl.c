/* sasl.c - SASL responses (base64 by libresolv's b64_pton). see sasl.h */
#include "core/sasl.h"

#include <resolv.h>
#include <string.h>
#include <strings.h>

int sasl_plain(const char *b64, char *user, size_t user_size, char *pass,
	       size_t pass_size)
{
	/* b64_pton wants room for a last group's spare octets. */
	unsigned char buf[PLAIN_MAX + 4];
	const char *authz = (char *)buf, *authc, *pw;
	int n, rc = -2;
	size_t left;

	if (strlen(b64) > (PLAIN_MAX + 2) / 3 * 4)
		return -2; /* too long to be ours: a failed login, delay and all
			    */
	n = b64_pton(b64, buf, sizeof buf - 1);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	authc = memchr(buf, '\0', (size_t)n);
	if (authc == NULL)
		goto out;
	authc++;
	left = (size_t)n - (size_t)(authc - authz);
	pw = memchr(authc, '\0', left);
	if (pw == NULL)
		goto out;
	pw++;
	/* The password runs to the end and may not hold another NUL. */
	if (strlen(pw) != left - (size_t)(pw - authc) || *authc == '\0' ||
	    *pw == '\0' || /* RFC 4616: passwd = 1*SAFE */
	    strlen(authc) >= user_size || strlen(pw) >= pass_size ||
	    (*authz != '\0' && strcasecmp(authz, authc) != 0))
		goto out;
	strcpy(user, authc);
	strcpy(pass, pw);
	rc = 0;
out:
	explicit_bzero(buf, sizeof buf);
	return rc;
}

int sasl_field(const char *b64, char *out, size_t size)
{
	unsigned char buf[SASL_FIELD_MAX + 4];
	int n;

	if (strlen(b64) > (SASL_FIELD_MAX + 2) / 3 * 4)
		return -2;
	n = b64_pton(b64, buf, sizeof buf - 1);
	if (n < 0)
		return -1;
	if ((size_t)n >= size || memchr(buf, '\0', (size_t)n) != NULL) {
		explicit_bzero(buf, sizeof buf);
		return -2;
	}
	memcpy(out, buf, (size_t)n);
	out[n] = '\0';
	explicit_bzero(buf, sizeof buf);
	return 0;
}
