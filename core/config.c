/* config.c - defaults and the INI file (inih). see config.h */
#include "core/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <ini.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The submission listener shares [smtp]'s timeout and limits. */
static void config_finish(struct config *c)
{
	c->submission.timeout = c->smtp.timeout;
	c->submission.max_conn_per_ip = c->smtp.max_conn_per_ip;
	c->submission.max_session_time = c->smtp.max_session_time;
}

void config_defaults(struct config *c)
{
	memset(c, 0, sizeof *c);
	strcpy(c->hostname, "localhost");
	strcpy(c->data_dir, "./pillarbox-data");
	strcpy(c->domains, "localhost");
	strcpy(c->smtp.listen, "127.0.0.1:2525");
	c->smtp.timeout = 300; /* RFC 5321 4.5.3.2.7: server waits 5 min */
	c->smtp.max_conn_per_ip = 20;
	/* A client trickling a byte a second would otherwise hold a session
	 * for ever; an hour carries 25 MiB at 64 kbit/s. */
	c->smtp.max_session_time = 3600;
	c->max_message_size = 25u << 20;
	c->max_recipients = 100; /* RFC 5321 4.5.3.1.8: at least 100 */
	strcpy(c->submission.listen, "127.0.0.1:2587");
	/* DRAC's and poprelayd's window: a mail client polls far more
	 * often, so its grant never lapses while it runs. */
	c->pop_before_smtp = 1800;
	c->sender_check = CONFIG_SENDER_STRICT;
	c->require_tls_for_auth = true; /* no passwords in clear text */
	strcpy(c->pop3.listen, "127.0.0.1:2110");
	c->pop3.timeout = 600; /* RFC 1939 3: at least 10 minutes */
	c->pop3.max_conn_per_ip = 20;
	c->pop3.max_session_time = 3600;
	/* Below the usual 1024 descriptors a process may open. */
	c->max_connections = 1000;
	c->login_delay = 2;
	strcpy(c->web.listen, "127.0.0.1:8080");
	c->web.timeout = CONFIG_WEB_IDLE;
	c->web.max_conn_per_ip = CONFIG_WEB_PER_IP;
	c->web.max_session_time = CONFIG_WEB_LIFETIME;
	c->web_session_timeout = 3600;
	config_finish(c);
}

/* NETS is a list of networks (relay_networks); CHOICE one of choices,
 * stored as its index in an enum; BOOL is "yes" or "no". */
enum kind { STR, NAME, LISTEN, SIZE, UINT, NETS, CHOICE, BOOL };

/* A config key: where its value goes, what it may be. Numbers below min
 * are refused (a timeout of 0 would drop every client at once). */
struct key {
	const char *section, *name;
	enum kind kind;
	size_t offset, len;
	uint64_t min;
	const char *const *choices; /* CHOICE: NULL-terminated */
};

#define STR_KEY(sec, name, kind, field)                                        \
	{                                                                      \
		sec, name, kind, offsetof(struct config, field),               \
		    sizeof(((struct config *)0)->field), 0, NULL               \
	}
#define NUM_KEY(sec, name, kind, field, min)                                   \
	{                                                                      \
		sec, name, kind, offsetof(struct config, field), 0, min, NULL  \
	}
#define CHOICE_KEY(sec, name, field, choices)                                  \
	{                                                                      \
		sec, name, CHOICE, offsetof(struct config, field), 0, 0,       \
		    choices                                                    \
	}

/* CHOICE stores an index through an unsigned: the enum must be one. */
_Static_assert(sizeof(enum config_sender_check) == sizeof(unsigned),
	       "sender_check is stored as an unsigned");
static const char *const sender_checks[] = {"strict", "off", NULL};

static const struct key keys[] = {
    STR_KEY("server", "hostname", NAME, hostname),
    STR_KEY("server", "data_dir", STR, data_dir),
    STR_KEY("server", "domains", STR, domains),
    NUM_KEY("server", "max_store_size", SIZE, max_store_size, 0),
    NUM_KEY("server", "max_connections", UINT, max_connections, 0),
    STR_KEY("smtp", "listen", LISTEN, smtp.listen),
    NUM_KEY("smtp", "timeout", UINT, smtp.timeout, 1),
    NUM_KEY("smtp", "max_connections_per_ip", UINT, smtp.max_conn_per_ip, 0),
    NUM_KEY("smtp", "max_session_time", UINT, smtp.max_session_time, 0),
    NUM_KEY("smtp", "max_message_size", SIZE, max_message_size, 1),
    NUM_KEY("smtp", "max_recipients", UINT, max_recipients, 1),
    STR_KEY("smtp", "submission", LISTEN, submission.listen),
    NUM_KEY("smtp", "relay_networks", NETS, relay_networks, 0),
    NUM_KEY("smtp", "pop_before_smtp", UINT, pop_before_smtp, 0),
    CHOICE_KEY("smtp", "sender_check", sender_check, sender_checks),
    NUM_KEY("smtp", "require_tls_for_auth", BOOL, require_tls_for_auth, 0),
    STR_KEY("pop3", "listen", LISTEN, pop3.listen),
    NUM_KEY("pop3", "timeout", UINT, pop3.timeout, 1),
    NUM_KEY("pop3", "max_connections_per_ip", UINT, pop3.max_conn_per_ip, 0),
    NUM_KEY("pop3", "max_session_time", UINT, pop3.max_session_time, 0),
    NUM_KEY("pop3", "login_delay", UINT, login_delay, 0),
    STR_KEY("web", "listen", LISTEN, web.listen),
    STR_KEY("web", "tls_listen", LISTEN, web_tls_listen),
    NUM_KEY("web", "session_timeout", UINT, web_session_timeout, 60),
};

/* Parses "123", "10k", "25M", "1G" (binary multiples). */
static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return -1;
	switch (*end) {
	case 'k':
	case 'K':
		shift = 10;
		break;
	case 'm':
	case 'M':
		shift = 20;
		break;
	case 'g':
	case 'G':
		shift = 30;
		break;
	}
	if (shift != 0)
		end++;
	if (*end != '\0' || v > (UINT64_MAX >> shift))
		return -1; /* junk after the number, or it overflows */
	*out = (uint64_t)v << shift;
	return 0;
}

/* A host name for greetings and Received:: letters, digits, '-', '.'. */
static bool config_name_ok(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '.')
			return false;
	return true;
}

int config_parse_listen(const char *s, struct sockaddr_storage *ss)
{
	char host[64];
	const char *colon = strrchr(s, ':');
	size_t hl;
	char *end;
	long port;

	memset(ss, 0, sizeof *ss);
	if (colon == NULL || colon[1] == '\0')
		return -1;
	port = strtol(colon + 1, &end, 10);
	if (*end != '\0' || port < 0 || port > 65535)
		return -1;
	hl = (size_t)(colon - s);
	if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']')
		s++, hl -= 2;
	if (hl == 0 || hl >= sizeof host)
		return -1;
	memcpy(host, s, hl);
	host[hl] = '\0';
	if (strchr(host, ':') != NULL) {
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)port);
		return inet_pton(AF_INET6, host, &a6->sin6_addr) == 1 ? 0 : -1;
	}
	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
	a4->sin_family = AF_INET;
	a4->sin_port = htons((uint16_t)port);
	return inet_pton(AF_INET, host, &a4->sin_addr) == 1 ? 0 : -1;
}

/* Adds the networks of a relay_networks value to c: CIDR networks
 * ("10.0.0.0/8", "::1/128", a bare address for one host) separated by
 * commas and/or spaces; "" adds none. Every line adds: inih hands each
 * continuation line of a long value (indented, on the next line) to us
 * as the same key again. On error writes what is wrong into err. 0 or
 * -1. */
static int parse_networks(struct config *c, const char *value, char *err,
			  size_t errlen)
{
	char buf[1024], *save, *tok;
	size_t n = c->nrelay_networks;

	if (strlen(value) >= sizeof buf) {
		snprintf(err, errlen, "relay_networks is too long");
		return -1;
	}
	strcpy(buf, value);
	for (tok = strtok_r(buf, ", \t", &save); tok != NULL;
	     tok = strtok_r(NULL, ", \t", &save)) {
		struct config_network *cn = &c->relay_networks[n];
		if (n == CONFIG_NETWORKS_MAX) {
			snprintf(err, errlen,
				 "too many relay_networks (at most %d)",
				 CONFIG_NETWORKS_MAX);
			return -1;
		}
		/* Host bits set ("10.0.0.1/8") are refused: more often a
		 * typo than a network, and it would relay for a whole /8. */
		if (netaddr_parse_cidr(tok, &cn->net, &cn->bits) < 0) {
			snprintf(err, errlen,
				 "bad value for relay_networks: '%.64s' "
				 "(want ADDRESS/BITS with no host bits set)",
				 tok);
			return -1;
		}
		n++;
	}
	c->nrelay_networks = n;
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
	struct sockaddr_storage ss;
	bool known_section = false;
	char *field;
	uint64_t v;

	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
		const struct key *k = &keys[i];
		known_section |= strcmp(k->section, section) == 0;
		if (strcmp(k->section, section) != 0 ||
		    strcmp(k->name, name) != 0)
			continue;
		field = (char *)ld->c + k->offset;
		if (k->kind == NETS) {
			char err[sizeof ld->err];
			if (parse_networks(ld->c, value, err, sizeof err) == 0)
				return 1;
			if (ld->err[0] == '\0')
				strcpy(ld->err, err);
			return 0;
		}
		if (k->kind == CHOICE || k->kind == BOOL) {
			static const char *const yes_no[] = {"no", "yes", NULL};
			const char *const *ch =
			    k->kind == BOOL ? yes_no : k->choices;
			size_t i;
			for (i = 0; ch[i] != NULL && strcmp(ch[i], value); i++)
				;
			if (ch[i] == NULL)
				goto bad;
			if (k->kind == BOOL)
				*(bool *)field = i == 1;
			else
				*(unsigned *)field = (unsigned)i;
			return 1;
		}
		if (k->kind == STR || k->kind == NAME || k->kind == LISTEN) {
			if (strlen(value) >= k->len ||
			    (k->kind == NAME && !config_name_ok(value)) ||
			    (k->kind == LISTEN && value[0] != '\0' &&
			     config_parse_listen(value, &ss) < 0))
				goto bad;
			strcpy(field, value);
			return 1;
		}
		if (parse_size(value, &v) < 0 || v < k->min ||
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
	if (ld->err[0] == '\0' && !known_section)
		snprintf(ld->err, sizeof ld->err, "unknown section [%s]",
			 section);
	else if (ld->err[0] == '\0')
		snprintf(ld->err, sizeof ld->err, "unknown key '%s' in [%s]",
			 name, section);
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
	config_finish(c);
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
