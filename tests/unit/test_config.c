/* test_config.c - [delivery] values: durations, the retry schedule and
 * the wait it gives after each failure, smarthost and resolver checks. */
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

static void test_durations(void **state)
{
	unsigned s;

	(void)state;
	assert_int_equal(config_parse_duration("90", &s), 0);
	assert_int_equal(s, 90);
	assert_int_equal(config_parse_duration("30s", &s), 0);
	assert_int_equal(s, 30);
	assert_int_equal(config_parse_duration("5m", &s), 0);
	assert_int_equal(s, 300);
	assert_int_equal(config_parse_duration("4h", &s), 0);
	assert_int_equal(s, 4 * 3600);
	assert_int_equal(config_parse_duration("5d", &s), 0);
	assert_int_equal(s, 5 * 86400);
	assert_int_equal(config_parse_duration("0", &s), 0);
	assert_int_equal(s, 0);
	/* junk, units we do not know, overflow */
	assert_int_equal(config_parse_duration("", &s), -1);
	assert_int_equal(config_parse_duration("m", &s), -1);
	assert_int_equal(config_parse_duration("5 m", &s), -1);
	assert_int_equal(config_parse_duration("5w", &s), -1);
	assert_int_equal(config_parse_duration("5mm", &s), -1);
	assert_int_equal(config_parse_duration("-5", &s), -1);
	assert_int_equal(config_parse_duration("50000d", &s), -1);
	assert_int_equal(config_parse_duration("99999999999999999999", &s), -1);
}

static void test_schedule(void **state)
{
	unsigned r[CONFIG_RETRY_MAX];
	size_t n;

	(void)state;
	assert_int_equal(config_parse_schedule("1m, 5m, 15m, 1h, 4h", r,
					       CONFIG_RETRY_MAX, &n),
			 0);
	assert_int_equal(n, 5);
	assert_int_equal(r[0], 60);
	assert_int_equal(r[1], 300);
	assert_int_equal(r[2], 900);
	assert_int_equal(r[3], 3600);
	assert_int_equal(r[4], 14400);
	assert_int_equal(config_parse_schedule("1s,2s 3s", r, 16, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(r[2], 3);
	assert_int_equal(config_parse_schedule("", r, 16, &n), -1);
	assert_int_equal(config_parse_schedule(" , ", r, 16, &n), -1);
	assert_int_equal(config_parse_schedule("1m, 0", r, 16, &n), -1);
	assert_int_equal(config_parse_schedule("1m, x", r, 16, &n), -1);
	assert_int_equal(config_parse_schedule("1s 2s 3s", r, 2, &n), -1);
}

/* The wait after failure k is the k-th interval, then the last repeats. */
static void test_retry_delay(void **state)
{
	struct config c;

	(void)state;
	config_defaults(&c);
	assert_int_equal(config_retry_delay(&c.delivery, 1), 60);
	assert_int_equal(config_retry_delay(&c.delivery, 2), 300);
	assert_int_equal(config_retry_delay(&c.delivery, 5), 14400);
	assert_int_equal(config_retry_delay(&c.delivery, 6), 14400);
	assert_int_equal(config_retry_delay(&c.delivery, 1000), 14400);
	assert_int_equal(c.delivery.bounce_after, 5 * 86400);
	assert_int_equal(c.delivery.mx_port, 25);
	assert_int_equal(c.delivery.command_timeout, 300);
}

/* Loads text as a config file; returns config_load's result. */
static int load(struct config *c, const char *text)
{
	char path[] = "/tmp/pillarbox-test-config-XXXXXX";
	int fd = mkstemp(path), r;

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	config_defaults(c);
	r = config_load(c, path);
	unlink(path);
	return r;
}

static void test_delivery_section(void **state)
{
	struct config c;

	(void)state;
	assert_int_equal(load(&c, "[delivery]\n"
				  "smarthost = relay.example.net:587\n"
				  "smarthost_user = me\n"
				  "resolver = 127.0.0.1:5353\n"
				  "mx_port = 2525\n"
				  "retry_schedule = 10s, 1m\n"
				  "bounce_after = 2d\n"
				  "max_concurrent = 5\n"
				  "max_per_domain = 2\n"
				  "connect_timeout = 30s\n"
				  "command_timeout = 2m\n"),
			 0);
	assert_string_equal(c.delivery.smarthost, "relay.example.net:587");
	assert_string_equal(c.delivery.resolver, "127.0.0.1:5353");
	assert_int_equal(c.delivery.mx_port, 2525);
	assert_int_equal(c.delivery.nretry, 2);
	assert_int_equal(c.delivery.retry[1], 60);
	assert_int_equal(c.delivery.bounce_after, 2 * 86400);
	assert_int_equal(c.delivery.max_per_domain, 2);
	assert_int_equal(c.delivery.connect_timeout, 30);
	assert_int_equal(c.delivery.command_timeout, 120);
	assert_int_equal(load(&c, "[delivery]\nsmarthost = [::1]:25\n"), 0);
	assert_int_equal(load(&c, "[delivery]\nsmarthost = 10.0.0.1:25\n"), 0);
	/* A port is required; a resolver is an address, not a name. */
	assert_int_equal(load(&c, "[delivery]\nsmarthost = relay.example\n"),
			 -1);
	assert_int_equal(load(&c, "[delivery]\nsmarthost = a b:25\n"), -1);
	assert_int_equal(load(&c, "[delivery]\nresolver = dns.example:53\n"),
			 -1);
	assert_int_equal(load(&c, "[delivery]\nretry_schedule = soon\n"), -1);
	/* max_concurrent = 0 holds the queue: a setting, not an error. */
	assert_int_equal(load(&c, "[delivery]\nmax_concurrent = 0\n"), 0);
	assert_int_equal(c.delivery.max_concurrent, 0);
	assert_int_equal(load(&c, "[delivery]\nmax_per_domain = 0\n"), -1);
	assert_int_equal(load(&c, "[delivery]\ncommand_timeout = 0s\n"), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_durations),
	    cmocka_unit_test(test_schedule),
	    cmocka_unit_test(test_retry_delay),
	    cmocka_unit_test(test_delivery_section),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
