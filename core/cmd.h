/*
 * cmd.h - the one command dispatcher: protocols describe their verbs in a
 * table (from an X-macro), and cmd_parse() splits a line, finds the verb and
 * checks state and arity before any handler runs. Protocols only map the
 * outcome to their own reply.
 */
#ifndef PILLARBOX_CMD_H
#define PILLARBOX_CMD_H

#include <stddef.h>

enum cmd_arity {
	CMD_ARG_NONE, /* nothing may follow the verb */
	CMD_ARG_REQ,  /* an argument is required */
	CMD_ARG_ANY,  /* either */
};

struct cmd_spec {
	const char *verb;
	unsigned states; /* bit set of the protocol's states it is valid in */
	enum cmd_arity arity;
};

enum cmd_check {
	CMD_OK,
	CMD_UNKNOWN,   /* no such verb */
	CMD_BAD_STATE, /* not valid in this state */
	CMD_NO_ARG,    /* argument missing */
	CMD_EXTRA_ARG, /* argument given to a verb that takes none */
};

/* Splits line (NUL-terminated, modified) at the first space into the verb
 * and *arg (spaces after the verb skipped), looks the verb up in table (any
 * case) and checks it against state and its arity. *index is the verb's
 * row whenever it is known (every outcome but CMD_UNKNOWN). */
enum cmd_check cmd_parse(const struct cmd_spec *table, size_t n, unsigned state,
			 char *line, size_t *index, char **arg);

#endif
