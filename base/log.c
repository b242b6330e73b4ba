/* log.c - key=value event lines and the allocation-failure policy. */
#include "base/log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const enum log_level log_level = LOG_INFO;

/* The loop thread collects its lines and writes them once per loop
 * iteration (log_flush from a prepare handle): at thousands of messages a
 * second, a system call per line is a cost worth saving. Other threads, and
 * the loop thread outside the loop, write at once. */
static _Thread_local bool buffered;
static char lbuf[16384];
static size_t llen;

static void (*tap)(const char *line, size_t len, void *arg);
static void *tap_arg;

void log_tap(void (*fn)(const char *line, size_t len, void *arg), void *arg)
{
	tap = fn;
	tap_arg = arg;
}

void log_buffer(bool on)
{
	log_flush();
	buffered = on;
}

void log_flush(void)
{
	if (llen > 0 && write(STDERR_FILENO, lbuf, llen) < 0)
		llen = 0;
	llen = 0;
}

static void log_vmsg(enum log_level lvl, const char *area, const char *fmt,
		     va_list ap)
{
	static const char *names[] = {"error", "warn", "info", "debug"};
	char line[2048];
	struct timespec ts;
	struct tm tm;
	size_t n;
	int r;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%SZ", &tm);
	r = snprintf(line + n, sizeof line - n, " pillarbox %s %s ", area,
		     names[lvl]);
	if (r > 0)
		n += (size_t)r;
	r = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
	if (r > 0)
		n += (size_t)r < sizeof line - n - 1 ? (size_t)r
						     : sizeof line - n - 2;
	line[n++] = '\n';
	if (tap != NULL)
		tap(line, n, tap_arg);
	if (buffered) {
		if (llen + n > sizeof lbuf)
			log_flush();
		memcpy(lbuf + llen, line, n);
		llen += n;
		return;
	}
	/* One write per line so lines from threads never interleave. */
	if (write(STDERR_FILENO, line, n) < 0)
		return;
}

void log_msg(enum log_level lvl, const char *area, const char *fmt, ...)
{
	va_list ap;

	if (lvl > log_level)
		return;
	va_start(ap, fmt);
	log_vmsg(lvl, area, fmt, ap);
	va_end(ap);
}

const char *log_value(const char *s, size_t len)
{
	static _Thread_local char bufs[4][3 * LOG_VALUE_MAX + 8];
	static _Thread_local unsigned next;
	static const char hex[] = "0123456789ABCDEF";
	char *b = bufs[next++ % 4], *p = b;

	for (size_t i = 0; i < len && i < LOG_VALUE_MAX; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c > ' ' && c < 0x7f && c != '"' && c != '%' && c != '=' &&
		    c != '\\') {
			*p++ = (char)c;
			continue;
		}
		*p++ = '%';
		*p++ = hex[c >> 4];
		*p++ = hex[c & 15];
	}
	if (len > LOG_VALUE_MAX)
		p = stpcpy(p, "...");
	*p = '\0';
	return b;
}

noreturn void fatal(const char *fmt, ...)
{
	va_list ap;

	if (buffered)
		log_flush();
	buffered = false;
	va_start(ap, fmt);
	log_vmsg(LOG_ERROR, "fatal", fmt, ap);
	va_end(ap);
	exit(1);
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (p == NULL)
		fatal("event=oom bytes=%zu", n);
	return p;
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (p == NULL)
		fatal("event=oom bytes=%zu", n * size);
	return p;
}

void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (p == NULL)
		fatal("event=oom bytes=%zu", n);
	return p;
}

char *xstrdup(const char *s)
{
	char *p = strdup(s);
	if (p == NULL)
		fatal("event=oom bytes=%zu", strlen(s));
	return p;
}
