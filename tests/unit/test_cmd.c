/* test_cmd.c - the shared dispatcher: verb lookup, state and arity. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/cmd.h"

enum { A = 1, B = 2 };

static const struct cmd_spec table[] = {
    {"NOOP", A | B, CMD_ARG_ANY},
    {"USER", A, CMD_ARG_REQ},
    {"STAT", B, CMD_ARG_NONE},
    {"TOP", B, CMD_ARG_REQ},
};

static const struct {
	const char *line;
	unsigned state;
	enum cmd_check want;
	size_t index;
	const char *arg;
} cases[] = {
    {"NOOP", A, CMD_OK, 0, ""},
    {"noop hello world", B, CMD_OK, 0, "hello world"},
    {"USER  alice", A, CMD_OK, 1, "alice"}, /* spaces after the verb */
    {"UsEr alice", B, CMD_BAD_STATE, 1, "alice"},
    {"USER", A, CMD_NO_ARG, 1, ""},
    {"USER ", A, CMD_NO_ARG, 1, ""},
    {"STAT", B, CMD_OK, 2, ""},
    {"STAT 1", B, CMD_EXTRA_ARG, 2, "1"},
    {"TOP 1 2", B, CMD_OK, 3, "1 2"},
    {"TO 1", B, CMD_UNKNOWN, 99, NULL},	  /* a prefix is not a verb */
    {"TOPS 1", B, CMD_UNKNOWN, 99, NULL}, /* nor a longer word */
    {"", A, CMD_UNKNOWN, 99, NULL},
    {" NOOP", A, CMD_UNKNOWN, 99, NULL},
};

static void test_parse(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		char line[64];
		size_t index = 99;
		char *arg = NULL;
		enum cmd_check r;

		strcpy(line, cases[i].line);
		r = cmd_parse(table, sizeof table / sizeof *table,
			      cases[i].state, line, &index, &arg);
		if (r != cases[i].want)
			print_error("case \"%s\": got %d want %d\n",
				    cases[i].line, r, cases[i].want);
		assert_int_equal(r, cases[i].want);
		assert_int_equal(index, cases[i].index);
		if (cases[i].arg != NULL)
			assert_string_equal(arg, cases[i].arg);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
