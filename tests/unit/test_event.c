/* test_event.c - core events reach every subscriber, in order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "core/event.h"

static char seen[64];

static void note(const struct event *ev, void *arg)
{
	size_t n = strlen(seen);
	snprintf(seen + n, sizeof seen - n, "%s:%s:%s;", (const char *)arg,
		 ev->proto, ev->user);
}

static void test_emit_in_order(void **state)
{
	struct netaddr peer = {.family = AF_INET};
	struct event ev = {EVENT_LOGIN, "pop3", "alice@localhost", &peer};

	(void)state;
	seen[0] = '\0';
	event_emit(&ev); /* nobody listening: nothing happens */
	assert_string_equal(seen, "");
	event_subscribe(note, "a");
	event_subscribe(note, "b");
	event_emit(&ev);
	assert_string_equal(seen,
			    "a:pop3:alice@localhost;b:pop3:alice@localhost;");
	event_reset();
	seen[0] = '\0';
	event_emit(&ev);
	assert_string_equal(seen, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_emit_in_order),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
