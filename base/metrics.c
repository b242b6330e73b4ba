/* metrics.c - counters, hourly series and the commit histogram. see
 * metrics.h */
#include "base/metrics.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

static _Atomic uint64_t counters[METRIC_COUNT];

static const struct {
	const char *family, *label, *help;
} rows[METRIC_COUNT] = {
#define X(e, family, label, help) {family, label, help},
    METRICS_COUNTERS(X)
#undef X
};

/* Hourly series: slot h % METRICS_HOURS holds the count of hour h (hours
 * since the epoch), valid when slot_hour says so. Loop thread only. */
enum { H_ACCEPTED, H_RETRIEVED, H_DELIVERED, H_COUNT };
static uint64_t hourly[H_COUNT][METRICS_HOURS];
static uint64_t slot_hour[H_COUNT][METRICS_HOURS];

static int hourly_index(enum metric m)
{
	return m == METRIC_ACCEPTED    ? H_ACCEPTED
	       : m == METRIC_RETRIEVED ? H_RETRIEVED
	       : m == METRIC_DELIVERED ? H_DELIVERED
				       : -1;
}

void metrics_inc(enum metric m)
{
	metrics_add(m, 1);
}

void metrics_add(enum metric m, uint64_t n)
{
	int h = hourly_index(m);

	atomic_fetch_add_explicit(&counters[m], n, memory_order_relaxed);
	if (h >= 0) {
		uint64_t hour = (uint64_t)time(NULL) / 3600;
		unsigned slot = (unsigned)(hour % METRICS_HOURS);
		if (slot_hour[h][slot] != hour) {
			slot_hour[h][slot] = hour;
			hourly[h][slot] = 0;
		}
		hourly[h][slot] += n;
	}
}

uint64_t metrics_get(enum metric m)
{
	return atomic_load_explicit(&counters[m], memory_order_relaxed);
}

void metrics_hourly(enum metric m, uint64_t counts[METRICS_HOURS],
		    time_t *start)
{
	uint64_t now = (uint64_t)time(NULL) / 3600;
	int h = hourly_index(m);

	for (unsigned i = 0; i < METRICS_HOURS; i++) {
		uint64_t hour = now - (METRICS_HOURS - 1) + i;
		unsigned slot = (unsigned)(hour % METRICS_HOURS);
		counts[i] =
		    h >= 0 && slot_hour[h][slot] == hour ? hourly[h][slot] : 0;
	}
	*start = (time_t)((now - (METRICS_HOURS - 1)) * 3600);
}

/* Saved: for each series, for each slot, u64 hour and u64 count,
 * big-endian. */
static void put_be64(unsigned char *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (unsigned char)v;
}

static uint64_t get_be64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

_Static_assert(METRICS_HOURLY_BYTES == H_COUNT * METRICS_HOURS * 16,
	       "the saved series' size");

void metrics_hourly_save(unsigned char buf[METRICS_HOURLY_BYTES])
{
	for (int h = 0; h < H_COUNT; h++)
		for (unsigned i = 0; i < METRICS_HOURS; i++, buf += 16) {
			put_be64(buf, slot_hour[h][i]);
			put_be64(buf + 8, hourly[h][i]);
		}
}

void metrics_hourly_load(const unsigned char *buf, size_t len)
{
	uint64_t now = (uint64_t)time(NULL) / 3600;

	if (len != METRICS_HOURLY_BYTES)
		return;
	for (int h = 0; h < H_COUNT; h++)
		for (unsigned i = 0; i < METRICS_HOURS; i++, buf += 16) {
			uint64_t hour = get_be64(buf);
			unsigned slot = (unsigned)(hour % METRICS_HOURS);
			if (hour + METRICS_HOURS <= now || hour > now)
				continue; /* over a day old, or ahead */
			if (slot_hour[h][slot] != hour) {
				slot_hour[h][slot] = hour;
				hourly[h][slot] = 0;
			}
			hourly[h][slot] += get_be64(buf + 8);
		}
}

/* Commit latency buckets, in microseconds: from a fast NVMe sync to a
 * stalled disk. */
static const uint64_t bounds[] = {250,	  500,	  1000,	  2500,
				  5000,	  10000,  25000,  50000,
				  100000, 250000, 500000, 1000000};
#define NBOUNDS (sizeof bounds / sizeof bounds[0])
static _Atomic uint64_t buckets[NBOUNDS + 1], lat_sum, lat_count;

void metrics_commit_latency(uint64_t usec)
{
	size_t i = 0;

	while (i < NBOUNDS && usec > bounds[i])
		i++;
	atomic_fetch_add_explicit(&buckets[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&lat_sum, usec, memory_order_relaxed);
	atomic_fetch_add_explicit(&lat_count, 1, memory_order_relaxed);
}

static __attribute__((format(printf, 3, 4))) void
outf(void (*out)(const char *, size_t, void *), void *arg, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n > 0)
		out(buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1,
		    arg);
}

void metrics_write(void (*out)(const char *s, size_t n, void *arg), void *arg)
{
	uint64_t cum = 0;

	for (size_t i = 0; i < METRIC_COUNT; i++) {
		if (i == 0 || strcmp(rows[i].family, rows[i - 1].family) != 0)
			outf(out, arg, "# HELP %s %s\n# TYPE %s counter\n",
			     rows[i].family, rows[i].help, rows[i].family);
		outf(out, arg, "%s%s%s%s %llu\n", rows[i].family,
		     rows[i].label[0] ? "{" : "", rows[i].label,
		     rows[i].label[0] ? "}" : "",
		     (unsigned long long)metrics_get((enum metric)i));
	}
	outf(out, arg,
	     "# HELP pillarbox_commit_seconds Time of one store commit "
	     "(write transaction and sync)\n"
	     "# TYPE pillarbox_commit_seconds histogram\n");
	for (size_t i = 0; i <= NBOUNDS; i++) {
		cum += atomic_load_explicit(&buckets[i], memory_order_relaxed);
		if (i < NBOUNDS)
			outf(out, arg,
			     "pillarbox_commit_seconds_bucket{le=\"%g\"} "
			     "%llu\n",
			     (double)bounds[i] / 1e6, (unsigned long long)cum);
		else
			outf(out, arg,
			     "pillarbox_commit_seconds_bucket{le=\"+Inf\"} "
			     "%llu\n",
			     (unsigned long long)cum);
	}
	outf(out, arg,
	     "pillarbox_commit_seconds_sum %.6f\n"
	     "pillarbox_commit_seconds_count %llu\n",
	     (double)atomic_load_explicit(&lat_sum, memory_order_relaxed) / 1e6,
	     (unsigned long long)atomic_load_explicit(&lat_count,
						      memory_order_relaxed));
}
