/*
 * config.h - the configuration: built-in defaults, overridden by an INI file
 * (parsed by inih). Every limit lives here with its default and its reason.
 */
#ifndef PILLARBOX_CONFIG_H
#define PILLARBOX_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/netaddr.h"

#define CONFIG_STR_MAX 256
/* relay_networks entries at most: every relayed RCPT walks the list, and a
 * site with more networks than this should write them as shorter prefixes. */
#define CONFIG_NETWORKS_MAX 64

struct config_listener {
	char listen[CONFIG_STR_MAX]; /* "host:port", "[::1]:25"; "" = off */
	unsigned timeout;	     /* idle seconds before 421 / -ERR */
	unsigned max_conn_per_ip;
	unsigned max_session_time; /* seconds a session may last; 0 = any */
};

/* One network of relay_networks: net/bits, host bits zero. */
struct config_network {
	struct netaddr net;
	unsigned bits;
};

/* A file named in the config, and where: errors about the file point at
 * the line that named it (0: not from the file). */
struct config_path {
	char path[CONFIG_STR_MAX]; /* "" = not set */
	unsigned line;
};

/* sender_check: may a relaying user send as any address? */
enum config_sender_check {
	CONFIG_SENDER_STRICT, /* MAIL FROM must be the relaying user's own
			       * address (or an alias of it) */
	CONFIG_SENDER_OFF,    /* any sender */
};

/* retry_schedule intervals at most: a schedule longer than this is better
 * written with a longer last interval, which repeats. */
#define CONFIG_RETRY_MAX 16

/* [delivery]: outbound mail (smtp/deliver.c). Durations are seconds. */
struct config_delivery {
	char smarthost[CONFIG_STR_MAX]; /* "host:port"; "" = direct to MX */
	char smarthost_user[CONFIG_STR_MAX];	      /* "" = no AUTH */
	char smarthost_password_file[CONFIG_STR_MAX]; /* its first line */
	char resolver[CONFIG_STR_MAX];	  /* DNS server "ip:port"; "" = the
					   * system's (resolv.conf) */
	unsigned mx_port;		  /* 25 */
	unsigned retry[CONFIG_RETRY_MAX]; /* waits after each failure; the
					   * last one repeats */
	size_t nretry;
	unsigned bounce_after; /* a message undelivered this long bounces */
	unsigned max_concurrent, max_per_domain; /* outbound connections */
	unsigned connect_timeout, command_timeout;
};

struct config {
	char hostname[CONFIG_STR_MAX];
	char data_dir[CONFIG_STR_MAX];
	char domains[1024];	  /* comma list, also in the store */
	uint64_t max_store_size;  /* bytes; 0 = grow while the disk allows */
	unsigned max_connections; /* all listeners together; 0 = no cap */

	struct config_listener smtp;
	uint64_t max_message_size;
	unsigned max_recipients;
	/* The RFC 6409 submission listener ([smtp] submission). Only its
	 * listen is its own: timeout and limits are [smtp]'s, copied after
	 * the file is read. */
	struct config_listener submission;
	/* Clients that may relay without logging in ([smtp] relay_networks:
	 * IPv4 and IPv6 CIDR, comma or space separated; none by default). A
	 * list too long for one line goes on indented continuation lines;
	 * each line, like each repetition of the key, adds to the list. */
	struct config_network relay_networks[CONFIG_NETWORKS_MAX];
	size_t nrelay_networks;
	unsigned pop_before_smtp; /* seconds a POP3 login lets its address
				   * relay; 0 = off */
	enum config_sender_check sender_check;
	bool require_tls_for_auth; /* SMTP AUTH only over TLS */
	bool pop3_require_tls;	   /* POP3 USER/PASS/AUTH only over TLS */

	struct config_listener pop3;
	unsigned login_delay; /* seconds a failed login waits */

	/* TLS (core/tls.c). Without cert and key a self-signed pair for
	 * hostname is made in data_dir. The implicit-TLS listeners share
	 * their protocol's timeouts and limits. */
	struct {
		struct config_path cert; /* PEM, may hold the chain */
		struct config_path key;	 /* PEM: RSA or EC */
	} tls;
	char smtps[CONFIG_STR_MAX]; /* implicit TLS submission; "" = off */
	char pop3s[CONFIG_STR_MAX]; /* "" = off */

	char file[CONFIG_STR_MAX]; /* the file config_load read; "" = none */

	struct config_delivery delivery;

	/* The web console ([web] listen). Its idle timeout and limits are
	 * fixed (CONFIG_WEB_*), not keys: a browser's keep-alive decides. */
	struct config_listener web;
	/* HTTPS with the [tls] certificate, the same limits; "" = off. */
	char web_tls_listen[CONFIG_STR_MAX];
	unsigned web_session_timeout; /* seconds a login lasts unused */
};

#define CONFIG_WEB_IDLE 75 /* keep-alive: nginx's keepalive_timeout */
/* A browser opens 6 connections per host; a few tabs, a phone. */
#define CONFIG_WEB_PER_IP 32
/* A connection (not a login) lasts this long at most: a slow client
 * cannot hold one for ever by trickling; the browser simply reconnects. */
#define CONFIG_WEB_LIFETIME 600

/* Fills c with the built-in defaults: data in ./pillarbox-data, SMTP on
 * 127.0.0.1:2525 (implicit TLS on 2465), submission on 127.0.0.1:2587,
 * POP3 on 127.0.0.1:2110 (implicit TLS on 2995), domain localhost; no
 * relay network, POP-before-SMTP for 1800 s, strict sender check, AUTH
 * only over TLS; delivery to each domain's MX on port 25; the web console
 * on 127.0.0.1:8080, logins lasting an hour unused. */
void config_defaults(struct config *c);

/* Reads FILE over the current values. On error prints one line
 * "FILE:LINE: what is wrong" on stderr and returns -1. */
int config_load(struct config *c, const char *file);

/* Parses a listen address, "host:port" or "[v6]:port", into ss.
 * Returns 0, or -1 when it is not one. */
int config_parse_listen(const char *s, struct sockaddr_storage *ss);

/* Parses a size: a number of octets with an optional binary suffix, k, M
 * or G, either case ("123", "10k", "25M", "1G"). 0, or -1 when it is not
 * one (junk after it, or over 64 bits). */
int config_parse_size(const char *s, uint64_t *out);

/* Parses a duration: a number with an optional unit, s, m, h or d ("90",
 * "5m", "4h", "5d") into seconds. 0, or -1 when it is not one (or does not
 * fit in an unsigned). */
int config_parse_duration(const char *s, unsigned *secs);

/* Parses a retry schedule, durations separated by commas and/or spaces
 * ("1m, 5m, 15m, 1h, 4h"), into out[0..*n), at most max of them, each
 * at least 1 s. 0, or -1 (empty, a bad duration, too many). */
int config_parse_schedule(const char *s, unsigned *out, size_t max, size_t *n);

/* The wait after a delivery attempt's failure number `attempts` (1 for
 * the first): its interval in the schedule, or the last one repeated. */
unsigned config_retry_delay(const struct config_delivery *d, unsigned attempts);

/* Calls fn for each domain of the comma list (trimmed, non-empty). */
void config_each_domain(const struct config *c,
			void (*fn)(const char *domain, void *arg), void *arg);

#endif
