/*
 * metrics.h - the server's counters, for /metrics (Prometheus text format)
 * and the web console's dashboard.
 *
 * Counters are one X-macro list: a row is a Prometheus family name, its
 * label (or ""), and its help text; adding a counter is adding a row. They
 * are relaxed atomics, so any thread may count (the commit thread times its
 * commits) and a reader on the loop sees a recent value; nothing orders
 * them against each other, which a scrape never needs.
 *
 * A few counters also keep an hourly series of the last METRICS_HOURS
 * hours (the dashboard's chart): those are counted on the loop thread only.
 */
#ifndef PILLARBOX_METRICS_H
#define PILLARBOX_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define METRICS_HOURS 24 /* the dashboard's chart: the last day */

/* X(ENUM, family, label, help). Rows of one family stand together. */
#define METRICS_COUNTERS(X)                                                    \
	X(ACCEPTED, "pillarbox_messages_accepted_total", "",                   \
	  "Messages accepted by SMTP (250 sent after the sync)")               \
	X(RETRIEVED, "pillarbox_messages_retrieved_total", "",                 \
	  "Messages sent to a POP3 client (RETR)")                             \
	X(DELIVERED, "pillarbox_messages_delivered_total", "",                 \
	  "Outbound deliveries, per recipient: the next server took the "      \
	  "message for it (Postfix's status=sent)")                            \
	X(BOUNCED, "pillarbox_messages_bounced_total", "",                     \
	  "Recipients returned to their sender, per recipient: refused for "   \
	  "good, expired, or bounced from the console (status=bounced)")       \
	X(DEFERRED, "pillarbox_messages_deferred_total", "",                   \
	  "Outbound attempts failed for now, per recipient and attempt "       \
	  "(status=deferred)")                                                 \
	X(REJ_UNKNOWN_USER, "pillarbox_messages_rejected_total",               \
	  "reason=\"unknown-user\"", "Recipients or messages refused")         \
	X(REJ_RELAY, "pillarbox_messages_rejected_total", "reason=\"relay\"",  \
	  "")                                                                  \
	X(REJ_CONTENT, "pillarbox_messages_rejected_total",                    \
	  "reason=\"content\"", "")                                            \
	X(REJ_STORAGE, "pillarbox_messages_rejected_total",                    \
	  "reason=\"storage\"", "")                                            \
	X(REJ_QUOTA, "pillarbox_messages_rejected_total", "reason=\"quota\"",  \
	  "")                                                                  \
	X(AUTH_FAIL_POP3, "pillarbox_auth_failures_total", "proto=\"pop3\"",   \
	  "Failed logins")                                                     \
	X(AUTH_FAIL_SMTP, "pillarbox_auth_failures_total", "proto=\"smtp\"",   \
	  "")                                                                  \
	X(AUTH_FAIL_WEB, "pillarbox_auth_failures_total", "proto=\"web\"", "") \
	X(WEB_REQUESTS, "pillarbox_web_requests_total", "",                    \
	  "HTTP requests answered by the web console")                         \
	X(QUEUE_WALKS, "pillarbox_queue_walks_total", "",                      \
	  "Walks of the whole outbound queue by the delivery runner")

enum metric {
#define X(e, family, label, help) METRIC_##e,
	METRICS_COUNTERS(X)
#undef X
	    METRIC_COUNT
};

/* Adds one (n) to m. */
void metrics_inc(enum metric m);
void metrics_add(enum metric m, uint64_t n);
uint64_t metrics_get(enum metric m);

/* Every counter as Prometheus text (# HELP, # TYPE, samples), and the
 * commit latency histogram, appended through out(text, len, arg). */
void metrics_write(void (*out)(const char *s, size_t n, void *arg), void *arg);

/* The hourly series of m (METRIC_ACCEPTED, _RETRIEVED, _DELIVERED, or
 * METRIC_COUNT for none): counts[i] for the hour starting at
 * start + i * 3600, oldest first, the last being the current hour. */
void metrics_hourly(enum metric m, uint64_t counts[METRICS_HOURS],
		    time_t *start);

/* The hourly series as bytes, to keep across a restart (loop thread), and
 * back: what load finds of the last METRICS_HOURS hours counts again, the
 * rest is dropped, and bytes of another length are ignored. */
#define METRICS_HOURLY_BYTES (3 * METRICS_HOURS * 16)
void metrics_hourly_save(unsigned char buf[METRICS_HOURLY_BYTES]);
void metrics_hourly_load(const unsigned char *buf, size_t len);

/* The commit latency histogram: one observation per commit, in
 * microseconds (from any thread). */
void metrics_commit_latency(uint64_t usec);

#endif
