/* cmd.c - command lookup and checks shared by the protocols. see cmd.h */
#include "core/cmd.h"

#include <string.h>
#include <strings.h>

enum cmd_check cmd_parse(const struct cmd_spec *table, size_t n, unsigned state,
			 char *line, size_t *index, char **arg)
{
	size_t vlen = strcspn(line, " ");
	const struct cmd_spec *c = NULL;

	*arg = line + vlen;
	while (**arg == ' ')
		(*arg)++;
	for (size_t i = 0; i < n && c == NULL; i++)
		if (strlen(table[i].verb) == vlen &&
		    strncasecmp(line, table[i].verb, vlen) == 0)
			c = &table[ *index = i];
	if (c == NULL)
		return CMD_UNKNOWN;
	if (!(c->states & state))
		return CMD_BAD_STATE;
	if (c->arity == CMD_ARG_REQ && **arg == '\0')
		return CMD_NO_ARG;
	if (c->arity == CMD_ARG_NONE && **arg != '\0')
		return CMD_EXTRA_ARG;
	return CMD_OK;
}
