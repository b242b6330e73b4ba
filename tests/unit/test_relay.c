/* test_relay.c - the relay decision (core/relay.c) and the config keys
 * behind it (core/config.c): relay_networks lists, every rule allowing and
 * refusing, POP-before-SMTP grants made by EVENT_LOGIN, grouped per IPv6
 * /64, expiring, refreshed and capped. Time is the test's: relay's clock is
 * replaced, nothing sleeps. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/event.h"
#include "core/relay.h"

#define WINDOW 100 /* pop_before_smtp of most tests, seconds */

static struct config cfg;
static uint64_t fake_now;
static struct relay_decision last; /* of the last decide() */

static uint64_t fake_clock(void)
{
	return fake_now;
}

/* Loads text as a config file over the defaults. 0 or -1 (its message
 * goes to stderr). */
static int load(const char *text)
{
	char path[] = "/tmp/test_relay.XXXXXX";
	int fd = mkstemp(path), r;

	assert_true(fd >= 0);
	assert_true(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
	close(fd);
	config_defaults(&cfg);
	r = config_load(&cfg, path);
	unlink(path);
	return r;
}

/* Runs fn with stderr sent to a file; returns what was written (static). */
static const char *capture_stderr(void (*fn)(void))
{
	static char text[1 << 20]; /* a line per grant of test_cap */
	char path[] = "/tmp/test_relay_err.XXXXXX";
	int fd = mkstemp(path), saved = dup(STDERR_FILENO);
	ssize_t n;

	assert_true(fd >= 0 && saved >= 0);
	dup2(fd, STDERR_FILENO);
	fn();
	dup2(saved, STDERR_FILENO);
	close(saved);
	n = pread(fd, text, sizeof text - 1, 0);
	text[n > 0 ? n : 0] = '\0';
	close(fd);
	unlink(path);
	return text;
}

static struct netaddr ip(const char *s)
{
	struct netaddr a;

	assert_int_equal(netaddr_parse(&a, s), 0);
	return a;
}

static void login(const char *proto, const char *from, const char *user)
{
	struct netaddr a = ip(from);
	struct event ev = {EVENT_LOGIN, proto, user, &a};

	event_emit(&ev);
}

/* The reason relay gives for a client at from; the decision is in last. */
static const char *decide(const char *from, const char *auth_user, bool local)
{
	struct netaddr a = ip(from);
	enum relay_verdict v = relay_decide(&a, auth_user, local, &last);

	assert_int_equal(v, last.verdict);
	assert_int_equal(v == RELAY_ALLOW, strcmp(last.reason, "denied") != 0);
	return last.reason;
}

/* Starts relay on the [smtp] keys given (over the defaults). */
static void start(const char *smtp_keys)
{
	char text[1024];

	snprintf(text, sizeof text, "[smtp]\n%s", smtp_keys);
	assert_int_equal(load(text), 0);
	relay_init(&cfg);
}

static int setup(void **state)
{
	(void)state;
	fake_now = 1000;
	relay_set_clock(fake_clock);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	relay_cleanup();
	event_reset();
	relay_set_clock(NULL);
	return 0;
}

struct listing {
	char text[1024];
	size_t n;
};

static void list_one(const struct relay_grant_info *g, void *arg)
{
	struct listing *l = arg;
	char a[NETADDR_TEXT_MAX];
	size_t len = strlen(l->text);
	time_t now = time(NULL);

	/* the wall-clock end agrees with the seconds left */
	assert_true(g->expires >= now + (time_t)g->left - 2 &&
		    g->expires <= now + (time_t)g->left + 2);
	netaddr_format(&g->client, a, sizeof a);
	snprintf(l->text + len, sizeof l->text - len, "%s %s %llu;", a, g->user,
		 (unsigned long long)g->left);
	l->n++;
}

/* The grants as "ADDR USER LEFT;..." (static). */
static const char *grants(void)
{
	static struct listing l;

	memset(&l, 0, sizeof l);
	relay_grants_each(list_one, &l);
	return l.text;
}

/* --- config ------------------------------------------------------------- */

static void test_config_defaults(void **state)
{
	(void)state;
	config_defaults(&cfg);
	assert_string_equal(cfg.submission.listen, "127.0.0.1:2587");
	assert_int_equal(cfg.nrelay_networks, 0);
	assert_int_equal(cfg.pop_before_smtp, 1800);
	assert_int_equal(cfg.sender_check, CONFIG_SENDER_STRICT);
	assert_true(cfg.require_tls_for_auth);
	/* submission shares [smtp]'s timeout and limits, whatever the order
	 * of the keys in the file */
	assert_int_equal(cfg.submission.timeout, cfg.smtp.timeout);
	assert_int_equal(load("[smtp]\nsubmission = [::1]:0\ntimeout = 42\n"
			      "max_connections_per_ip = 3\n"
			      "max_session_time = 7\n"),
			 0);
	assert_string_equal(cfg.submission.listen, "[::1]:0");
	assert_int_equal(cfg.submission.timeout, 42);
	assert_int_equal(cfg.submission.max_conn_per_ip, 3);
	assert_int_equal(cfg.submission.max_session_time, 7);
	assert_int_equal(load("[smtp]\nsubmission =\n"), 0);
	assert_string_equal(cfg.submission.listen, "");
}

static void test_config_keys(void **state)
{
	(void)state;
	assert_int_equal(load("[smtp]\nsender_check = off\n"
			      "require_tls_for_auth = no\n"
			      "pop_before_smtp = 0\n"),
			 0);
	assert_int_equal(cfg.sender_check, CONFIG_SENDER_OFF);
	assert_false(cfg.require_tls_for_auth);
	assert_int_equal(cfg.pop_before_smtp, 0);
	assert_int_equal(load("[smtp]\nsender_check = strict\n"
			      "require_tls_for_auth = yes\n"
			      "pop_before_smtp = 2\n"),
			 0);
	assert_int_equal(cfg.sender_check, CONFIG_SENDER_STRICT);
	assert_true(cfg.require_tls_for_auth);
	assert_int_equal(cfg.pop_before_smtp, 2);

	static const char *const bad[] = {
	    "sender_check = loose",	"sender_check =",
	    "sender_check = STRICT",	"require_tls_for_auth = maybe",
	    "require_tls_for_auth = 1", "pop_before_smtp = -1",
	    "pop_before_smtp = soon",	"submission = 127.0.0.1",
	    "submission = [::1:25",
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		char text[256];
		snprintf(text, sizeof text, "[smtp]\n%s\n", bad[i]);
		assert_int_equal(load(text), -1);
	}
}

static void test_config_networks(void **state)
{
	struct netaddr a;

	(void)state;
	assert_int_equal(load("[smtp]\nrelay_networks = 127.0.0.0/8, "
			      "192.168.1.0/24 ::1/128,2001:db8::/32\t"
			      "10.1.2.3\n"),
			 0);
	assert_int_equal(cfg.nrelay_networks, 5);
	assert_int_equal(cfg.relay_networks[0].bits, 8);
	assert_int_equal(cfg.relay_networks[1].bits, 24);
	assert_int_equal(cfg.relay_networks[2].bits, 128);
	assert_int_equal(cfg.relay_networks[3].bits, 32);
	assert_int_equal(cfg.relay_networks[4].bits, 32); /* a host */
	a = ip("192.168.1.0");
	assert_true(netaddr_equal(&cfg.relay_networks[1].net, &a));

	/* empty is none; continuation lines and a repeated key add */
	assert_int_equal(load("[smtp]\nrelay_networks =\n"), 0);
	assert_int_equal(cfg.nrelay_networks, 0);
	assert_int_equal(load("[smtp]\nrelay_networks = , ,\n"), 0);
	assert_int_equal(cfg.nrelay_networks, 0);
	assert_int_equal(load("[smtp]\nrelay_networks = 10.0.0.0/8 ::1\n"
			      "relay_networks = 192.168.0.0/16\n"),
			 0);
	assert_int_equal(cfg.nrelay_networks, 3);
	assert_int_equal(cfg.relay_networks[2].bits, 16);
	assert_int_equal(load("[smtp]\nrelay_networks = 10.0.0.0/8,\n"
			      "  192.168.0.0/16, 172.16.0.0/12\n"
			      "\t::1\n"
			      "timeout = 30\n"),
			 0);
	assert_int_equal(cfg.nrelay_networks, 4);
	assert_int_equal(cfg.relay_networks[1].bits, 16);
	assert_int_equal(cfg.relay_networks[2].bits, 12);
	assert_int_equal(cfg.relay_networks[3].bits, 128);

	static const char *const bad[] = {
	    "10.0.0.1/8", /* host bits set */
	    "10.0.0.0/33",
	    "::/129",
	    "2001:db8::1/64",
	    "garbage",
	    "10.0.0.0/",
	    "10.0.0.0/8x",
	    "/8",
	    "10.0.0.0/-1",
	    "10.0.0.0/8/8",
	    "10.0.0.256/32",
	    "127.0.0.0/8, nope",
	    "::ffff:10.0.0.0/95",
	    "[::1]/128",
	    "10.0.0.0 /8",
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		char text[256];
		snprintf(text, sizeof text, "[smtp]\nrelay_networks = %s\n",
			 bad[i]);
		assert_int_equal(load(text), -1);
	}

	/* CONFIG_NETWORKS_MAX at most (a line each: inih's lines are
	 * short) */
	char text[4096] = "[smtp]\nrelay_networks =";
	for (int i = 0; i < CONFIG_NETWORKS_MAX; i++)
		snprintf(text + strlen(text), sizeof text - strlen(text),
			 "\n  10.0.%d.0/24", i);
	assert_int_equal(load(strcat(text, "\n")), 0);
	assert_int_equal(cfg.nrelay_networks, CONFIG_NETWORKS_MAX);
	text[strlen(text) - 1] = '\0';
	assert_int_equal(load(strcat(text, " 10.1.0.0/16\n")), -1);
}

/* --- the rules ---------------------------------------------------------- */

static void test_local_is_for_anyone(void **state)
{
	(void)state;
	start("");
	assert_string_equal(decide("203.0.113.9", NULL, true), "local");
	assert_null(last.user);
	assert_string_equal(decide("2001:db8::9", NULL, true), "local");
	assert_string_equal(decide("203.0.113.9", "alice@localhost", true),
			    "local");
	assert_string_equal(last.user, "alice@localhost");
}

static void test_denied_by_default(void **state)
{
	(void)state;
	start(""); /* no relay network, no grant: nobody relays */
	assert_string_equal(decide("127.0.0.1", NULL, false), "denied");
	assert_int_equal(last.verdict, RELAY_DENY);
	assert_null(last.user);
	assert_string_equal(decide("::1", NULL, false), "denied");
	assert_string_equal(decide("203.0.113.9", "", false), "denied");
}

static void test_auth(void **state)
{
	(void)state;
	start("");
	assert_string_equal(decide("203.0.113.9", "alice@localhost", false),
			    "auth");
	assert_int_equal(last.verdict, RELAY_ALLOW);
	assert_string_equal(last.user, "alice@localhost");
	assert_string_equal(decide("203.0.113.9", NULL, false), "denied");
}

static void test_networks(void **state)
{
	(void)state;
	start("relay_networks = 127.0.0.0/8, 192.168.1.0/24, ::1/128, "
	      "2001:db8:5::/48\n");
	assert_string_equal(decide("127.0.0.1", NULL, false), "network");
	assert_null(last.user);
	assert_string_equal(decide("127.255.255.254", NULL, false), "network");
	assert_string_equal(decide("192.168.1.200", NULL, false), "network");
	assert_string_equal(decide("192.168.2.1", NULL, false), "denied");
	assert_string_equal(decide("128.0.0.1", NULL, false), "denied");
	assert_string_equal(decide("::1", NULL, false), "network");
	assert_string_equal(decide("::2", NULL, false), "denied");
	assert_string_equal(decide("2001:db8:5:ffff::1", NULL, false),
			    "network");
	assert_string_equal(decide("2001:db8:6::1", NULL, false), "denied");
	/* A dual-stack listener reports IPv4 clients as v4-mapped: they are
	 * the IPv4 address, inside the IPv4 networks (and only those). */
	assert_string_equal(decide("::ffff:192.168.1.7", NULL, false),
			    "network");
	assert_string_equal(decide("::ffff:192.168.2.7", NULL, false),
			    "denied");
	/* AUTH comes first: its user is the one to check senders against */
	assert_string_equal(decide("127.0.0.1", "bob@localhost", false),
			    "auth");
}

static void test_pop_before_smtp(void **state)
{
	(void)state;
	start("pop_before_smtp = 100\n");
	assert_string_equal(decide("198.51.100.7", NULL, false), "denied");
	login("pop3", "198.51.100.7", "alice@localhost");
	assert_string_equal(decide("198.51.100.7", NULL, false),
			    "pop-before-smtp");
	assert_string_equal(last.user, "alice@localhost");
	/* for that address only */
	assert_string_equal(decide("198.51.100.8", NULL, false), "denied");
	assert_string_equal(decide("198.51.100.6", NULL, false), "denied");
	assert_string_equal(grants(), "198.51.100.7 alice@localhost 100;");
	/* AUTH and networks come first */
	assert_string_equal(decide("198.51.100.7", "bob@localhost", false),
			    "auth");
}

static void test_only_pop3_logins_grant(void **state)
{
	(void)state;
	start("");
	/* an SMTP AUTH login carries rights for its own session only */
	login("smtp", "198.51.100.7", "alice@localhost");
	assert_string_equal(decide("198.51.100.7", NULL, false), "denied");
	assert_string_equal(grants(), "");
}

static void test_pop_before_smtp_off(void **state)
{
	(void)state;
	start("pop_before_smtp = 0\n");
	login("pop3", "198.51.100.7", "alice@localhost");
	assert_string_equal(decide("198.51.100.7", NULL, false), "denied");
	assert_string_equal(grants(), "");
}

static void test_ipv6_per_64(void **state)
{
	(void)state;
	start("pop_before_smtp = 100\n");
	login("pop3", "2001:db8:1:2::5", "alice@localhost");
	/* the whole /64 is one client (RFC 6177: a site has at least one) */
	assert_string_equal(decide("2001:db8:1:2::5", NULL, false),
			    "pop-before-smtp");
	assert_string_equal(
	    decide("2001:db8:1:2:ffff:ffff:ffff:ffff", NULL, false),
	    "pop-before-smtp");
	assert_string_equal(last.user, "alice@localhost");
	assert_string_equal(decide("2001:db8:1:3::5", NULL, false), "denied");
	assert_string_equal(decide("2001:db8:1:1:ffff::5", NULL, false),
			    "denied");
	assert_string_equal(grants(), "2001:db8:1:2:: alice@localhost 100;");
	/* another address of the /64 refreshes the same grant */
	fake_now += 10;
	login("pop3", "2001:db8:1:2::77", "alice@localhost");
	assert_string_equal(grants(), "2001:db8:1:2:: alice@localhost 100;");
}

static void test_v4_mapped(void **state)
{
	(void)state;
	start("pop_before_smtp = 100\n");
	/* a login seen on a dual-stack listener grants the IPv4 address */
	login("pop3", "::ffff:198.51.100.7", "alice@localhost");
	assert_string_equal(grants(), "198.51.100.7 alice@localhost 100;");
	assert_string_equal(decide("198.51.100.7", NULL, false),
			    "pop-before-smtp");
	assert_string_equal(decide("::ffff:198.51.100.7", NULL, false),
			    "pop-before-smtp");
	assert_string_equal(decide("::ffff:198.51.100.8", NULL, false),
			    "denied");
}

static void test_expiry(void **state)
{
	(void)state;
	start("pop_before_smtp = 100\n");
	login("pop3", "198.51.100.7", "alice@localhost");
	fake_now += 60;
	login("pop3", "198.51.100.8", "bob@localhost");
	assert_string_equal(grants(), "198.51.100.7 alice@localhost 40;"
				      "198.51.100.8 bob@localhost 100;");
	fake_now += WINDOW - 60 - 1; /* the last second of the first */
	assert_string_equal(decide("198.51.100.7", NULL, false),
			    "pop-before-smtp");
	fake_now += 1; /* it has ended */
	assert_string_equal(decide("198.51.100.7", NULL, false), "denied");
	assert_string_equal(grants(), "198.51.100.8 bob@localhost 60;");
	fake_now += 60;
	assert_string_equal(decide("198.51.100.8", NULL, false), "denied");
	assert_string_equal(grants(), "");
	/* a new login after the end grants anew */
	login("pop3", "198.51.100.7", "alice@localhost");
	assert_string_equal(decide("198.51.100.7", NULL, false),
			    "pop-before-smtp");
}

static void test_refresh(void **state)
{
	(void)state;
	start("pop_before_smtp = 100\n");
	login("pop3", "198.51.100.7", "alice@localhost");
	login("pop3", "198.51.100.8", "bob@localhost");
	fake_now += 90;
	login("pop3", "198.51.100.7", "alice@localhost");
	/* refreshed: a full window from the new login, now listed last */
	assert_string_equal(grants(), "198.51.100.8 bob@localhost 10;"
				      "198.51.100.7 alice@localhost 100;");
	fake_now += 99;
	assert_string_equal(decide("198.51.100.7", NULL, false),
			    "pop-before-smtp");
	assert_string_equal(decide("198.51.100.8", NULL, false), "denied");
	/* another user's login from the address takes the grant over */
	login("pop3", "198.51.100.7", "carol@localhost");
	assert_string_equal(decide("198.51.100.7", NULL, false),
			    "pop-before-smtp");
	assert_string_equal(last.user, "carol@localhost");
	assert_string_equal(grants(), "198.51.100.7 carol@localhost 100;");
}

/* RELAY_GRANTS_MAX + 1 logins from as many addresses, a second apart. */
static void many_logins(void)
{
	for (unsigned i = 0; i <= RELAY_GRANTS_MAX; i++) {
		char a[32];
		snprintf(a, sizeof a, "10.%u.%u.%u", i >> 16, (i >> 8) & 255,
			 i & 255);
		login("pop3", a, "alice@localhost");
		fake_now++;
	}
}

static void count_one(const struct relay_grant_info *g, void *arg)
{
	(void)g;
	(*(size_t *)arg)++;
}

static void test_cap(void **state)
{
	size_t n = 0;
	char last_ip[32];
	const char *log;

	(void)state;
	start("pop_before_smtp = 100000\n");
	log = capture_stderr(many_logins); /* a line per grant: keep quiet */
	assert_non_null(strstr(log, "event=relay-grant-evicted ip=10.0.0.0 "
				    "user=alice@localhost"));
	relay_grants_each(count_one, &n);
	assert_int_equal(n, RELAY_GRANTS_MAX);
	/* the grant closest to its end made room for the newest */
	assert_string_equal(decide("10.0.0.0", NULL, false), "denied");
	assert_string_equal(decide("10.0.0.1", NULL, false), "pop-before-smtp");
	snprintf(last_ip, sizeof last_ip, "10.%u.%u.%u", RELAY_GRANTS_MAX >> 16,
		 (RELAY_GRANTS_MAX >> 8) & 255, RELAY_GRANTS_MAX & 255);
	assert_string_equal(decide(last_ip, NULL, false), "pop-before-smtp");
}

/* --- the log line ------------------------------------------------------- */

static struct relay_decision logged;
static struct netaddr logged_peer;

static void log_decision(void)
{
	relay_log_decision("5f2a00000001", &logged_peer, "x y@example.com",
			   &logged);
}

static void test_log_line(void **state)
{
	const char *line;

	(void)state;
	start("pop_before_smtp = 100\n");
	logged_peer = ip("203.0.113.9");
	relay_decide(&logged_peer, NULL, false, &logged);
	line = capture_stderr(log_decision);
	assert_non_null(strstr(line, " pillarbox relay warn sid=5f2a00000001 "
				     "event=relay-decision ip=203.0.113.9 "
				     "to=x%20y@example.com verdict=deny "
				     "reason=denied user=-\n"));
	/* client values cannot add a key of their own */
	login("pop3", "203.0.113.9", "al ice=x");
	relay_decide(&logged_peer, NULL, false, &logged);
	line = capture_stderr(log_decision);
	assert_non_null(strstr(line, " pillarbox relay info sid=5f2a00000001 "
				     "event=relay-decision ip=203.0.113.9 "
				     "to=x%20y@example.com verdict=allow "
				     "reason=pop-before-smtp "
				     "user=al%20ice%3Dx\n"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	    T(test_config_defaults),
	    T(test_config_keys),
	    T(test_config_networks),
	    T(test_local_is_for_anyone),
	    T(test_denied_by_default),
	    T(test_auth),
	    T(test_networks),
	    T(test_pop_before_smtp),
	    T(test_only_pop3_logins_grant),
	    T(test_pop_before_smtp_off),
	    T(test_ipv6_per_64),
	    T(test_v4_mapped),
	    T(test_expiry),
	    T(test_refresh),
	    T(test_cap),
	    T(test_log_line),
#undef T
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
