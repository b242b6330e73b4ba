/*
 * deliver.h - the queue runner: sends queued mail on to other servers,
 * retries what fails for now, bounces what fails for good.
 *
 * The queue lives in the store (store_queue_*: one entry per recipient of
 * a message, with when it is next due). The runner looks at a message's
 * entries as soon as it is committed (deliver_queued), and at the whole
 * queue when the next entry falls due (a loop timer), when a slot frees
 * or a result is recorded (deliver_wake), or on `pillarbox queue flush`;
 * walks of the whole queue take at most a tenth of the loop's time. Due
 * entries are grouped by destination - the recipient's domain, or the
 * smarthost for everything - into jobs: one DNS lookup, then one
 * connection at a time to the exchangers in order, carrying every message
 * of the job, each message in one transaction with all its recipients
 * there. At most max_concurrent jobs run, max_per_domain per destination.
 *
 * Each message's outcome for an attempt is one commit (store job):
 * delivered entries are removed, failed ones removed and bounced (in the
 * same commit), the others moved to their next attempt along
 * retry_schedule. An entry is removed only after the peer's 250 for the
 * data, so a crash at any point means the message goes again after a
 * restart: at least once, never lost.
 *
 * Everything here runs on the loop thread, except what the commit thread
 * runs for a job's result.
 */
#ifndef PILLARBOX_SMTP_DELIVER_H
#define PILLARBOX_SMTP_DELIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/config.h"
#include "smtp/dsn.h"
#include "store/store.h"

/* Recipients of one message in one transaction: RFC 5321 4.5.3.1.8's
 * minimum a server must take; more wait for the next attempt. */
#define DELIVER_RCPTS_MAX 100
/* Entries a job takes on while running (late arrivals for the same
 * destination ride on its connection); past this, a new job. */
#define DELIVER_BACKLOG_MAX 100
/* How long the runner waits after a result could not be committed (the
 * store full or failing) before it tries the queue again. */
#define DELIVER_STORE_BACKOFF_MS 30000
/* The queue is looked at this often even when nothing is due, so an entry
 * whose time a clock change moved is not forgotten. */
#define DELIVER_RESCAN_MS 60000
/* Messages queued since the last look that the next looks at by their
 * keys alone (deliver_queued); past this, the whole queue. */
#define DELIVER_FRESH_MAX 256

/* Starts the runner for cfg (kept) on st, whose commit thread runs; reads
 * the smarthost password file. Needs dns_init(). 0, or -1 with the
 * reason on stderr (a config problem: exit 2). */
int deliver_start(const struct config *cfg, struct store *st);

/* Look at the whole queue soon: a result was recorded, a slot is free,
 * a bounce was queued. */
void deliver_wake(void);

/* Message id was just queued: look at its entries now. */
void deliver_queued(uint64_t id);

/* Retries now what is queued (id 0: every entry; else that message's),
 * whatever its next attempt says; an entry under way now is left to its
 * attempt. Returns how many entries of id (id 0: of the queue) it found,
 * under way or not (0: id is not queued), -ESHUTDOWN once the runner
 * stops, or <0 when the store cannot be read. */
int deliver_flush(uint64_t id);

/* The server stops: no new attempt; connections end (what they had
 * delivered is still committed), lookups are cancelled. */
void deliver_stop(void);

/* Frees what is left, once the loop has stopped. */
void deliver_cleanup(void);

/* Returns msg's failed recipients to its sender (arrival in seconds), inside a
 * write transaction (the commit thread's, or the CLI's): a bounce built by
 * dsn_build, put straight into the sender's mailbox when the sender is a
 * local user (into each of its mailboxes with room under its quota; a
 * full one does not get it, logged event=bounce-dropped), else queued for
 * the sender with the null sender. Never to <> (sender ""). Returns 1 when
 * a bounce was queued (wake the runner), 0 when it went to a mailbox or
 * nowhere, <0 on a store error. */
int deliver_bounce(struct store_txn *txn, const struct config *cfg, uint64_t id,
		   const char *sender, time_t arrival,
		   const struct dsn_rcpt *rcpts, size_t n);

/* What a bounce says of a recipient the postmaster returned. */
#define DELIVER_RETURNED "550 5.0.0 returned by the postmaster"

/* `queue delete ID` and `queue bounce ID`, from the CLI (its own write
 * transaction) and the console (the commit thread's): removes every queue
 * entry of message id; with bounce, first returns the message to its
 * sender for all of them (deliver_bounce, DELIVER_RETURNED). *n: the
 * entries removed. Returns 1 when a bounce was queued (wake the runner),
 * 0 when done, -ENOENT when id is not queued, <0 on a store error.
 *
 * The runner may be trying the message meanwhile (in this process or
 * another): the peer may still take it, and what the runner then records
 * leaves the removed entries gone - no second bounce, no next attempt. */
int deliver_remove(struct store_txn *txn, const struct config *cfg, uint64_t id,
		   bool bounce, size_t *n);

#endif
