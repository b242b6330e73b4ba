/* config.c - defaults and the INI file (inih). see config.h */
#include "core/config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void config_defaults(struct config *c)
{
	memset(c, 0, sizeof *c);
	strcpy(c->hostname, "localhost");
	strcpy(c->data_dir, "./pillarbox-data");
	strcpy(c->domains, "localhost");
	strcpy(c->smtp.listen, "127.0.0.1:2525");
	c->smtp.timeout = 300; /* RFC 5321 4.5.3.2.7: server waits 5 min */
	c->smtp.max_conn_per_ip = 20;
	c->max_message_size = 25u << 20;
	c->max_recipients = 100; /* RFC 5321 4.5.3.1.8: at least 100 */
	strcpy(c->pop3.listen, "127.0.0.1:2110");
	c->pop3.timeout = 600; /* RFC 1939 3: at least 10 minutes */
	c->pop3.max_conn_per_ip = 20;
	c->login_delay = 2;
}

enum kind { STR, SIZE, UINT };

struct key {
	const char *section, *name;
	enum kind kind;
	size_t offset, len;
};

#define STR_KEY(sec, name, field)                                             \
	{sec, name, STR, offsetof(struct config, field),                      \
	 sizeof(((struct config *)0)->field)}
#define NUM_KEY(sec, name, kind, field)                                       \
	{sec, name, kind, offsetof(struct config, field), 0}

static const struct key keys[] = {
	STR_KEY("server", "hostname", hostname),
	STR_KEY("server", "data_dir", data_dir),
	STR_KEY("server", "domains", domains),
	NUM_KEY("server", "max_store_size", SIZE, max_store_size),
	STR_KEY("smtp", "listen", smtp.listen),
	NUM_KEY("smtp", "timeout", UINT, smtp.timeout),
	NUM_KEY("smtp", "max_connections_per_ip", UINT, smtp.max_conn_per_ip),
	NUM_KEY("smtp", "max_message_size", SIZE, max_message_size),
	NUM_KEY("smtp", "max_recipients", UINT, max_recipients),
	STR_KEY("pop3", "listen", pop3.listen),
	NUM_KEY("pop3", "timeout", UINT, pop3.timeout),
	NUM_KEY("pop3", "max_connections_per_ip", UINT, pop3.max_conn_per_ip),
	NUM_KEY("pop3", "login_delay", UINT, login_delay),
};

/* Parses "123", "10k", "25M", "1G" (binary multiples). */
static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return -1;
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	}
	if (*end != '\0')
		return -1;
	*out = v;
	return 0;
}

struct load {
	struct config *c;
	const char *file;
	char err[200];
};

static int on_key(void *user, const char *section, const char *name,
		  const char *value)
{
	struct load *ld = user;
	char *field;
	uint64_t v;

	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
		const struct key *k = &keys[i];
		if (strcmp(k->section, section) != 0 ||
		    strcmp(k->name, name) != 0)
			continue;
		field = (char *)ld->c + k->offset;
		if (k->kind == STR) {
			if (strlen(value) >= k->len)
				goto bad;
			strcpy(field, value);
			return 1;
		}
		if (parse_size(value, &v) < 0 ||
		    (k->kind == UINT && (v != (unsigned)v)))
			goto bad;
		if (k->kind == UINT)
			*(unsigned *)field = (unsigned)v;
		else
			*(uint64_t *)field = v;
		return 1;
	}
	/* inih reports the first failing line but parses on: keep the first
	 * message so it matches that line. */
	if (ld->err[0] == '\0')
		snprintf(ld->err, sizeof ld->err,
			 "unknown key '%s' in [%s]", name, section);
	return 0;
bad:
	if (ld->err[0] == '\0')
		snprintf(ld->err, sizeof ld->err, "bad value for %s: '%s'",
			 name, value);
	return 0;
}

int config_load(struct config *c, const char *file)
{
	struct load ld = {c, file, ""};
	int line = ini_parse(file, on_key, &ld);

	if (line == -1) {
		fprintf(stderr, "%s:0: cannot read file: %s\n", file,
			strerror(errno));
		return -1;
	}
	if (line != 0) {
		fprintf(stderr, "%s:%d: %s\n", file, line,
			ld.err[0] ? ld.err : "syntax error");
		return -1;
	}
	return 0;
}

void config_each_domain(const struct config *c,
			void (*fn)(const char *domain, void *arg), void *arg)
{
	char buf[sizeof c->domains];
	char *save, *tok;

	strcpy(buf, c->domains);
	for (tok = strtok_r(buf, ",", &save); tok != NULL;
	     tok = strtok_r(NULL, ",", &save)) {
		while (isspace((unsigned char)*tok))
			tok++;
		char *end = tok + strlen(tok);
		while (end > tok && isspace((unsigned char)end[-1]))
			*--end = '\0';
		if (*tok != '\0')
			fn(tok, arg);
	}
}
