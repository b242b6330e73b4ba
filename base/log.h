/*
 * log.h - one line per event, key=value, on stderr.
 *
 *   2026-11-23T13:40:01Z pillarbox smtp sid=5f2a... event=rcpt to=<a@b>
 * result=250
 *
 * The session id (sid) lets an admin and fail2ban follow one connection.
 * Every value a client supplied (an address, a user name, a HELO name)
 * goes through log_value(), so that it can never add a key=value of its
 * own: a forged "event=auth-failed ip=6.6.6.6" inside a sender address must
 * not get a stranger banned by a fail2ban filter.
 * Never log credentials: AUTH payloads and passwords are masked by callers.
 */
#ifndef PILLARBOX_LOG_H
#define PILLARBOX_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdnoreturn.h>
#include <string.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Writes "TIME pillarbox AREA FORMATTED\n" atomically (one write), or,
 * on a thread that turned buffering on, into a buffer for log_flush(). */
void log_msg(enum log_level lvl, const char *area, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Hands every line written from now on (with its "\n", len octets, not
 * NUL-terminated) to fn(line, len, arg): the web console keeps the last
 * ones in memory. fn runs on whichever thread logs, inside log_msg, so it
 * must be quick, must not log, and must guard what it shares. NULL turns
 * it off. Set it before other threads log. */
void log_tap(void (*fn)(const char *line, size_t len, void *arg), void *arg);

/* Turns buffering on or off for the calling thread (the loop thread, which
 * then calls log_flush once per loop iteration). Off flushes. */
void log_buffer(bool on);
void log_flush(void);

/* Returns s[0..len) encoded for a log value: every octet outside printable
 * ASCII, and space, '"', '%', '=' and '\\', becomes %XX (so the value holds
 * no space and no '=', and "%" always starts an escape). Truncated to
 * LOG_VALUE_MAX octets of input, marked with a trailing "...". Uses one of four
 * static buffers (valid for the next 4 calls on this thread), for use inside
 * one log_msg call. */
#define LOG_VALUE_MAX 200
const char *log_value(const char *s, size_t len);
#define log_str(s) log_value((s), strlen(s))

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
