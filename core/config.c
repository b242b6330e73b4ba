/* config.c - defaults and the INI file (inih). see config.h */
#include "core/config.h"

#include <arpa/inet.h>
#include <assert.h>
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
	c->pop3_require_tls = true;
	strcpy(c->pop3.listen, "127.0.0.1:2110");
	c->pop3.timeout = 600; /* RFC 1939 3: at least 10 minutes */
	c->pop3.max_conn_per_ip = 20;
	c->pop3.max_session_time = 3600;
	/* Below the usual 1024 descriptors a process may open. */
	c->max_connections = 1000;
	c->login_delay = 2;
	/* Outbound delivery: Postfix's and Exim's habits for the schedule
	 * (a quick second try, then longer waits) and for the limits; the
	 * timeouts are RFC 5321 4.5.3.2's five minutes. */
	c->delivery.mx_port = 25;
	static const unsigned retry[] = {60, 300, 900, 3600, 4 * 3600};
	memcpy(c->delivery.retry, retry, sizeof retry);
	c->delivery.nretry = sizeof retry / sizeof *retry;
	c->delivery.bounce_after = 5 * 86400; /* RFC 5321 4.5.4.1: 4-5 days */
	c->delivery.max_concurrent = 20;
	c->delivery.max_per_domain = 4;
	c->delivery.connect_timeout = 300; /* 4.5.3.2.1: initial 220 */
	c->delivery.command_timeout = 300; /* 4.5.3.2.2-4: MAIL, RCPT */
	/* TLS */
	strcpy(c->smtps, "127.0.0.1:2465");
	strcpy(c->pop3s, "127.0.0.1:2995");
	strcpy(c->web.listen, "127.0.0.1:8080");
	c->web.timeout = CONFIG_WEB_IDLE;
	c->web.max_conn_per_ip = CONFIG_WEB_PER_IP;
	c->web.max_session_time = CONFIG_WEB_LIFETIME;
	c->web_session_timeout = 3600;
	config_finish(c);
}

/* NETS is a list of networks (relay_networks); CHOICE one of choices,
 * stored as its index in an enum; BOOL is "yes" or "no"; HOSTPORT is
 * "name:port" or a LISTEN address ("" allowed); DURATION a number of
 * seconds with an optional unit (s, m, h, d); SCHEDULE the retry list;
 * PATH a struct config_path (the line is kept); TLSVER "1.2", the one
 * version BearSSL has, accepted so that a config can say so. */
enum kind {
	STR,
	NAME,
	LISTEN,
	SIZE,
	UINT,
	NETS,
	CHOICE,
	BOOL,
	HOSTPORT,
	DURATION,
	SCHEDULE,
	PATH,
	TLSVER
};

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
    NUM_KEY("pop3", "require_tls_for_auth", BOOL, pop3_require_tls, 0),
    STR_KEY("delivery", "smarthost", HOSTPORT, delivery.smarthost),
    STR_KEY("delivery", "smarthost_user", STR, delivery.smarthost_user),
    STR_KEY("delivery", "smarthost_password_file", STR,
	    delivery.smarthost_password_file),
    STR_KEY("delivery", "resolver", LISTEN, delivery.resolver),
    NUM_KEY("delivery", "mx_port", UINT, delivery.mx_port, 1),
    NUM_KEY("delivery", "retry_schedule", SCHEDULE, delivery.retry, 0),
    NUM_KEY("delivery", "bounce_after", DURATION, delivery.bounce_after, 1),
    NUM_KEY("delivery", "max_concurrent", UINT, delivery.max_concurrent, 0),
    NUM_KEY("delivery", "max_per_domain", UINT, delivery.max_per_domain, 1),
    NUM_KEY("delivery", "connect_timeout", DURATION, delivery.connect_timeout,
	    1),
    NUM_KEY("delivery", "command_timeout", DURATION, delivery.command_timeout,
	    1),
    /* TLS */
    STR_KEY("tls", "cert", PATH, tls.cert),
    STR_KEY("tls", "key", PATH, tls.key),
    {"tls", "min_version", TLSVER, 0, 0, 0, NULL},
    STR_KEY("smtp", "smtps", LISTEN, smtps),
    STR_KEY("pop3", "pop3s", LISTEN, pop3s),
    STR_KEY("web", "listen", LISTEN, web.listen),
    STR_KEY("web", "tls_listen", LISTEN, web_tls_listen),
    NUM_KEY("web", "session_timeout", UINT, web_session_timeout, 60),
};

int config_parse_size(const char *s, uint64_t *out)
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

int config_parse_duration(const char *s, unsigned *secs)
{
	unsigned long long v, unit = 1;
	char *end;

	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return -1;
	if (*end != '\0') {
		const char *units = "smhd", *u = strchr(units, *end);
		static const unsigned long long mult[] = {1, 60, 3600, 86400};
		if (u == NULL)
			return -1;
		unit = mult[u - units];
		end++;
	}
	if (*end != '\0' || v > UINT32_MAX / unit)
		return -1;
	*secs = (unsigned)(v * unit);
	return 0;
}

int config_parse_schedule(const char *s, unsigned *out, size_t max, size_t *n)
{
	char buf[CONFIG_STR_MAX], *save, *tok;
	size_t i = 0;

	if (strlen(s) >= sizeof buf)
		return -1;
	strcpy(buf, s);
	for (tok = strtok_r(buf, ", \t", &save); tok != NULL;
	     tok = strtok_r(NULL, ", \t", &save)) {
		if (i == max || config_parse_duration(tok, &out[i]) < 0 ||
		    out[i] == 0)
			return -1;
		i++;
	}
	if (i == 0)
		return -1;
	*n = i;
	return 0;
}

unsigned config_retry_delay(const struct config_delivery *d, unsigned attempts)
{
	assert(d->nretry > 0);
	if (attempts == 0)
		return 0;
	return d->retry[attempts <= d->nretry ? attempts - 1 : d->nretry - 1];
}

/* "host:port" for a peer we connect to: a LISTEN address, or a DNS name
 * (letters, digits, '-', '.') with a port from 1 to 65535. */
static bool config_hostport_ok(const char *s)
{
	const char *colon = strrchr(s, ':');
	struct sockaddr_storage ss;
	char *end;
	long port;

	if (config_parse_listen(s, &ss) == 0)
		return true;
	if (colon == NULL || colon == s || colon[1] == '\0')
		return false;
	port = strtol(colon + 1, &end, 10);
	if (*end != '\0' || port < 1 || port > 65535)
		return false;
	for (const char *p = s; p < colon; p++)
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.')
			return false;
	return true;
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
	FILE *f;
	unsigned line, next_line; /* of the text inih is parsing */
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
		if (k->kind == SCHEDULE) {
			struct config_delivery *d = &ld->c->delivery;
			size_t n;
			if (config_parse_schedule(value, d->retry,
						  CONFIG_RETRY_MAX, &n) < 0)
				goto bad;
			d->nretry = n;
			return 1;
		}
		if (k->kind == DURATION) {
			unsigned secs;
			if (config_parse_duration(value, &secs) < 0 ||
			    secs < k->min)
				goto bad;
			*(unsigned *)field = secs;
			return 1;
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
		if (k->kind == TLSVER) {
			if (strcmp(value, "1.2") != 0) {
				if (ld->err[0] == '\0')
					snprintf(ld->err, sizeof ld->err,
						 "bad value for %s: '%s' (only "
						 "1.2: BearSSL has no TLS 1.3)",
						 name, value);
				return 0;
			}
			return 1;
		}
		if (k->kind == PATH) {
			struct config_path *cp = (struct config_path *)field;
			if (strlen(value) >= sizeof cp->path)
				goto bad;
			strcpy(cp->path, value);
			cp->line = ld->line;
			return 1;
		}
		if (k->kind == STR || k->kind == NAME || k->kind == LISTEN ||
		    k->kind == HOSTPORT) {
			if (strlen(value) >= k->len ||
			    (k->kind == NAME && !config_name_ok(value)) ||
			    (k->kind == HOSTPORT && value[0] != '\0' &&
			     !config_hostport_ok(value)) ||
			    (k->kind == LISTEN && value[0] != '\0' &&
			     config_parse_listen(value, &ss) < 0))
				goto bad;
			strcpy(field, value);
			return 1;
		}
		if (config_parse_size(value, &v) < 0 || v < k->min ||
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

/* inih's reader, counting lines so that a key knows its own (errors about
 * the files [tls] names point there). */
static char *read_line(char *str, int num, void *stream)
{
	struct load *ld = stream;
	char *s = fgets(str, num, ld->f);

	if (s != NULL) {
		ld->line = ld->next_line;
		if (strchr(s, '\n') != NULL)
			ld->next_line++;
	}
	return s;
}

int config_load(struct config *c, const char *file)
{
	struct load ld = {c, fopen(file, "r"), 1, 1, ""};
	int line;

	if (ld.f == NULL || strlen(file) >= sizeof c->file) {
		fprintf(stderr, "%s:0: cannot read file: %s\n", file,
			ld.f == NULL ? strerror(errno) : "name too long");
		if (ld.f != NULL)
			fclose(ld.f);
		return -1;
	}
	strcpy(c->file, file);
	line = ini_parse_stream(read_line, &ld, on_key, &ld);
	fclose(ld.f);
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
