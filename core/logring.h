/*
 * logring.h - the last log lines, kept in memory (the web console's log
 * page). Fed by base/log's tap from any thread, so it holds a mutex:
 * in core/, since protocols never touch libuv; read on the loop. fn of
 * logring_each runs under that mutex and must not log.
 */
#ifndef PILLARBOX_CORE_LOGRING_H
#define PILLARBOX_CORE_LOGRING_H

#include <stddef.h>

struct logring;

/* A ring of nlines lines of at most line_max octets each. */
struct logring *logring_new(size_t nlines, size_t line_max);
void logring_free(struct logring *r);

/* Adds one line (a trailing "\n" is dropped; longer lines are cut). Any
 * thread. */
void logring_add(struct logring *r, const char *line, size_t len);

/* Calls fn(line, arg) for the last lines, oldest first, that contain
 * every non-NULL filter: sid as the whole value of "sid=", addr anywhere
 * (as the log writes it); at most limit of them (the newest). */
void logring_each(struct logring *r, const char *sid, const char *addr,
		  size_t limit, void (*fn)(const char *line, void *arg),
		  void *arg);

#endif
