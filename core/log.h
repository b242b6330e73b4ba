/*
 * log.h - one line per event, key=value, on stderr.
 *
 *   2026-11-23T13:40:01Z pillarbox smtp sid=5f2a... event=rcpt to=<a@b>
 * result=250
 *
 * The session id (sid) lets an admin and fail2ban follow one connection.
 * Values with spaces or quotes must be passed through log_quote().
 * Never log credentials: AUTH payloads and passwords are masked by callers.
 */
#ifndef PILLARBOX_LOG_H
#define PILLARBOX_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdnoreturn.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Lines below this level are dropped (default LOG_INFO). */
void log_set_level(enum log_level lvl);

/* Writes "TIME pillarbox AREA FORMATTED\n" atomically (one write), or,
 * on a thread that turned buffering on, into a buffer for log_flush(). */
void log_msg(enum log_level lvl, const char *area, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Turns buffering on or off for the calling thread (the loop thread, which
 * then calls log_flush once per loop iteration). Off flushes. */
void log_buffer(bool on);
void log_flush(void);

/* Returns s in double quotes with \ " and control bytes escaped, truncated
 * to fit; uses one of a few static buffers (valid for the next 4 calls on
 * this thread), for use inside one log_msg call. */
const char *log_quote(const char *s, size_t len);

/* Logs and exits(1): for impossible states and allocation failure, the one
 * policy for running out of memory (a mail server that cannot allocate a
 * few bytes cannot do its job safely). */
noreturn void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* malloc/realloc/strdup that call fatal() on failure. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);

#endif
