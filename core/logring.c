/* logring.c - the last log lines in a fixed ring. see logring.h */
#include "core/logring.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/log.h"

struct logring {
	uv_mutex_t mu; /* lines come from every thread that logs */
	size_t nlines, line_max;
	size_t next;  /* slot of the next line */
	size_t count; /* lines held, up to nlines */
	char *slots;  /* nlines slots of line_max + 1 octets */
};

struct logring *logring_new(size_t nlines, size_t line_max)
{
	struct logring *r = xcalloc(1, sizeof *r);

	if (uv_mutex_init(&r->mu) != 0)
		fatal("event=mutex-init-failed");
	r->nlines = nlines;
	r->line_max = line_max;
	/* calloc: untouched slots cost no memory until the log fills them */
	r->slots = xcalloc(nlines, line_max + 1);
	return r;
}

void logring_free(struct logring *r)
{
	if (r == NULL)
		return;
	uv_mutex_destroy(&r->mu);
	free(r->slots);
	free(r);
}

void logring_add(struct logring *r, const char *line, size_t len)
{
	char *slot;

	if (len > 0 && line[len - 1] == '\n')
		len--;
	if (len > r->line_max)
		len = r->line_max;
	uv_mutex_lock(&r->mu);
	slot = r->slots + r->next * (r->line_max + 1);
	memcpy(slot, line, len);
	slot[len] = '\0';
	r->next = (r->next + 1) % r->nlines;
	if (r->count < r->nlines)
		r->count++;
	uv_mutex_unlock(&r->mu);
}

static bool logring_match(const char *line, const char *sid, const char *addr)
{
	if (sid != NULL) {
		size_t n = strlen(sid);
		const char *p = strstr(line, " sid=");
		if (p == NULL || strncmp(p + 5, sid, n) != 0 ||
		    (p[5 + n] != ' ' && p[5 + n] != '\0'))
			return false;
	}
	return addr == NULL || strstr(line, addr) != NULL;
}

void logring_each(struct logring *r, const char *sid, const char *addr,
		  size_t limit, void (*fn)(const char *line, void *arg),
		  void *arg)
{
	size_t first, start, matched = 0;

	/* Read under the lock: a copy of 400 KiB would cost more than the
	 * few microseconds another thread's log line waits. fn only copies. */
	uv_mutex_lock(&r->mu);
	first = (r->next + r->nlines - r->count) % r->nlines;
	for (size_t i = 0; i < r->count; i++) {
		const char *l =
		    r->slots + ((first + i) % r->nlines) * (r->line_max + 1);
		matched += logring_match(l, sid, addr);
	}
	start = matched > limit ? matched - limit : 0;
	matched = 0;
	for (size_t i = 0; i < r->count; i++) {
		const char *l =
		    r->slots + ((first + i) % r->nlines) * (r->line_max + 1);
		if (logring_match(l, sid, addr) && matched++ >= start)
			fn(l, arg);
	}
	uv_mutex_unlock(&r->mu);
}
