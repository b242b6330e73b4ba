/* parse.c - POP3 command arguments. see parse.h */
#include "pop3/parse.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

int pop3_parse_number(const char *arg, unsigned long *n, const char **rest)
{
	char *end;

	if (!isdigit((unsigned char)*arg))
		return -1;
	errno = 0;
	*n = strtoul(arg, &end, 10);
	if (errno != 0 || *n == 0 || (*end != '\0' && *end != ' '))
		return -1;
	*rest = end;
	return 0;
}
