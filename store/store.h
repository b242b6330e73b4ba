/*
 * store.h - the LMDB store: domains, users, aliases, messages, mailboxes and
 * the outbound queue, in one LMDB environment.
 *
 * This header is the manual. Every function returns 0 (or a documented
 * positive count/flag) on success and a negative errno on failure; LMDB's own
 * codes never leave store/:
 *   -ENOENT   no such key          -EEXIST   key already present
 *   -ENOSPC   no room: max_size reached, or the disk full (see store_job)
 *   -EAGAIN   try again later (a map resize found transactions still open
 *             after STORE_GROW_WAIT_MS, reader slots full)
 *   -EPROTO   the environment has a schema version this binary does not know
 *   -EINVAL   bad argument (empty/oversized key)
 *   -EIO      anything else LMDB reported (logged once)
 *
 * Addresses and domains are stored lower-cased; callers may pass any case.
 * store/ knows libuv (thread, mutex, async) but no socket or protocol.
 */
#ifndef PILLARBOX_STORE_H
#define PILLARBOX_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* 2: user records keep their mailbox's usage (1 is upgraded on open). */
#define STORE_SCHEMA_VERSION 2
#define STORE_ADDR_MAX	     320 /* RFC 5321 4.5.3.1: 64 local + @ + 255 domain */
#define STORE_HASH_MAX	     160  /* a crypt(3) hash string, yescrypt is ~73 */
#define STORE_ALIAS_MAX	     4096 /* comma-joined targets of one alias */
/* A mailbox entry's own trace header: "Return-Path: <" + an address +
 * ">\r\n" (RFC 5321 4.4) is 340 octets at most. */
#define STORE_TRACE_MAX 512
/* The first map size; doubled when full. The map is address space, not
 * disk, and growing it makes every read wait for the resize: 64-bit
 * systems start big enough that it is rare; 32-bit ones (routers) have
 * little address space to spare. */
#define STORE_MAP_INITIAL                                                      \
	(sizeof(size_t) >= 8 ? (size_t)1 << 30 : (size_t)64 << 20)
/* How long a map resize waits for the open transactions to end. None is
 * held across a loop turn, so they end within microseconds; one open for
 * this long is stuck, and waiting on would stall every commit (and every
 * read waiting at the gate) for nothing: the batch fails with -EAGAIN. */
#define STORE_GROW_WAIT_MS 500
/* Room kept for deletions, on the disk (allocated ahead in the data file)
 * and under max_size (a sixteenth of a smaller cap): a deletion writes a
 * few copied pages plus 8 bytes per page it frees, so 1 MiB lets one
 * commit free some 400 MiB of mail on a full disk. */
#define STORE_RESERVE (1u << 20)

struct store;
struct store_txn;

/* --- environment ------------------------------------------------------- */

/* Opens (creating when missing) the environment in directory dir, which is
 * created with mode 0700 when absent. max_size caps map growth in bytes
 * (0 = no cap but the address space and the disk); the map starts at
 * STORE_MAP_INITIAL, a quarter of a smaller cap, or the data file's size if
 * larger. Writes the schema version into a new store; upgrades a store of
 * version 1 (user records without their usage: each mailbox is counted
 * once, in the same transaction that writes version 2); refuses (-EPROTO)
 * one with another version. */
int store_open(const char *dir, uint64_t max_size, struct store **out);

/* Closes the environment. No transaction may be open and the commit thread
 * must be stopped, with the loop run since (its handle closed). NULL is a
 * no-op. */
void store_close(struct store *st);

/* Current size of the data file in bytes (for logs and figures). */
uint64_t store_file_size(struct store *st);

/* --- transactions ------------------------------------------------------ */

/* Begins a transaction. A read transaction (write=false) may be taken on
 * any thread; several may be open at once (MDB_NOTLS). End it within the
 * callback that began it: a map resize waits (at most STORE_GROW_WAIT_MS)
 * for every transaction of the process to end, and a transaction begun
 * meanwhile waits for the resize (microseconds, once the open ones end).
 * So a read held across a loop turn fails the growth, and a read begun
 * while another of the same thread is open may wait STORE_GROW_WAIT_MS.
 * When another process grew the map past ours, the map is remapped first,
 * the same way; -EAGAIN if that wait ran out. A write transaction is for
 * the CLI, and for setup before store_commit_start: the server never
 * writes from the loop. Without a commit thread the map grows before a
 * write once it is over half full, since a caller's writes cannot be re-run
 * after the map filled up. */
int store_txn_begin(struct store *st, bool write, struct store_txn **out);

/* Commits a write transaction (synced to disk when this returns 0) and
 * frees it; -ENOSPC when the map or the disk is full. On a read
 * transaction it is the same as store_txn_abort. */
int store_txn_commit(struct store_txn *txn);

/* Aborts (or ends a read) transaction and frees it. NULL is a no-op. */
void store_txn_abort(struct store_txn *txn);

/* --- domains: domain -> flags ----------------------------------------- */

int store_domain_add(struct store_txn *txn, const char *domain); /* -EEXIST */
int store_domain_del(struct store_txn *txn, const char *domain); /* -ENOENT */
/* 1 if domain is local, 0 if not, <0 on error. */
int store_domain_exists(struct store_txn *txn, const char *domain);
/* Calls fn once per domain in order; stops early when fn returns non-zero
 * and returns that value. name is valid only during the call. */
int store_domain_list(struct store_txn *txn,
		      int (*fn)(const char *name, void *arg), void *arg);

/* --- users: address -> hash, flags, quota, usage, next uid ------------ */

#define STORE_USER_ADMIN 0x1u

struct store_user {
	char hash[STORE_HASH_MAX + 1]; /* crypt(3) string */
	uint32_t flags;		       /* STORE_USER_* */
	uint32_t next_uid;	       /* next mailbox uid; uids never reused */
	uint64_t quota; /* octets the mailbox may hold; 0 = no limit */
	/* The mailbox's usage, kept by every change to it in the same
	 * transaction (add, delete, rename, user delete), so a delivery
	 * never walks the mailbox: the sum of its entries' sizes (what POP3
	 * STAT says) and their number. */
	uint64_t used;
	uint32_t messages;
};

/* Whether u's mailbox can take an entry of size octets: no quota, or
 * used + size within it (a mailbox may reach its quota exactly). */
bool store_user_fits(const struct store_user *u, uint64_t size);
/* At or over its quota: no message fits any more. */
bool store_user_full(const struct store_user *u);

/* Adds a user; the domain of addr must be local (-ENOENT otherwise);
 * -EEXIST if the user or an alias of that name exists. */
int store_user_add(struct store_txn *txn, const char *addr, const char *hash);
/* Deletes a user and their mailbox (dropping message references). */
int store_user_del(struct store_txn *txn, const char *addr);
int store_user_set_hash(struct store_txn *txn, const char *addr,
			const char *hash);
/* Sets the user's flags (STORE_USER_*) or quota (octets, 0 = none; a
 * quota below the usage is allowed: nothing more is delivered until
 * mail is deleted). -ENOENT if there is no such user. */
int store_user_set_flags(struct store_txn *txn, const char *addr,
			 uint32_t flags);
int store_user_set_quota(struct store_txn *txn, const char *addr,
			 uint64_t quota);
/* Renames user from to to, with its mailbox (uids kept), and rewrites
 * every alias target naming from. to must be free and in a local domain
 * (the errors of store_user_add); -ENOENT when from is no user. */
int store_user_rename(struct store_txn *txn, const char *from, const char *to);
/* Copies the record into *u. -ENOENT if there is no such user. */
int store_user_get(struct store_txn *txn, const char *addr,
		   struct store_user *u);
/* Calls fn per user in address order (see store_domain_list). */
int store_user_list(struct store_txn *txn,
		    int (*fn)(const char *addr, const struct store_user *u,
			      void *arg),
		    void *arg);

/* --- aliases: alias -> comma-joined targets ---------------------------- */

/* targets: "a@x,b@y" (spaces allowed around commas). Each target must be a
 * local user (-ENOENT if one is not); the alias's domain must be local;
 * -EEXIST if a user or alias of that name exists. Aliases of aliases arise
 * when a user is deleted and an alias takes the name. */
int store_alias_add(struct store_txn *txn, const char *alias,
		    const char *targets);
int store_alias_del(struct store_txn *txn, const char *alias);
int store_alias_list(struct store_txn *txn,
		     int (*fn)(const char *alias, const char *targets,
			       void *arg),
		     void *arg);

/* Resolves a recipient address to local users: a user resolves to itself,
 * an alias to its targets (aliases of aliases are followed up to 8 deep,
 * duplicates dropped). fn is called once per distinct user address (valid
 * during the call). Returns the number of users (>0), -ENOENT when addr is
 * neither a user nor an alias that reaches one. */
int store_rcpt_resolve(struct store_txn *txn, const char *addr,
		       void (*fn)(const char *user, void *arg), void *arg);

/* --- messages: id -> raw bytes (refcount kept beside it) --------------- */

/* Reserves a new message of len bytes with reference count 0 and returns
 * its id and a pointer to fill: fill all len bytes before any other write
 * in this transaction (LMDB's MDB_RESERVE space is only yours until then).
 * A message left with no reference when the transaction commits is a bug:
 * give it at least one mailbox or queue entry (each holds one reference;
 * dropping the last one deletes the body). */
int store_msg_put(struct store_txn *txn, size_t len, uint64_t *id, void **dst);
/* Points *data at the stored bytes (valid until txn ends, or its next
 * write). -ENOENT. Ids are never reused (a counter in meta), so an id kept
 * from an earlier transaction names that message or nothing. */
int store_msg_get(struct store_txn *txn, uint64_t id, const void **data,
		  size_t *len);
/* Number of stored message bodies (for tests and figures). */
int store_msg_count(struct store_txn *txn, uint64_t *count);

/* --- mailboxes: user || uid -> message id, size, trace ------------------ */

/* One copy of a message in a mailbox. Trace headers that differ per copy
 * (Return-Path: is added at final delivery, RFC 5321 4.4, and a relayed
 * copy must not carry it) are kept with the entry, not in the shared body:
 * a reader sends trace, then the message. */
struct store_mail {
	uint32_t uid;	   /* per-user, increasing, never reused */
	uint64_t id;	   /* message id */
	uint64_t size;	   /* octets of trace and message together */
	const char *trace; /* this copy's trace header, trace_len octets (not
			    * NUL-terminated; "" for an entry made without
			    * one): valid until the transaction ends, or its
			    * next write */
	size_t trace_len;
};

/* Appends message id to user's mailbox with the user's next uid (returned
 * in *uid when not NULL), adds one reference to the message and the
 * entry's size to the user's usage. trace (NULL or "": none) is this
 * copy's own trace header, whole CRLF-ended lines of at most
 * STORE_TRACE_MAX octets (-EINVAL if longer). The quota is not checked
 * here: a delivery asks store_user_fits first and decides what to do with
 * a recipient whose mailbox is full. -ENOENT when there is no such user
 * or message. */
int store_mailbox_add_trace(struct store_txn *txn, const char *user,
			    uint64_t id, const char *trace, uint32_t *uid);
/* The same without a trace header of its own. */
int store_mailbox_add(struct store_txn *txn, const char *user, uint64_t id,
		      uint32_t *uid);
/* Removes entry uid, if it still holds message id (0: whatever it holds);
 * takes its size off the user's usage, drops the reference and deletes
 * the message body when it was the last one. -ENOENT if absent (or the
 * user is). */
int store_mailbox_del(struct store_txn *txn, const char *user, uint32_t uid,
		      uint64_t id);
/* Copies entry uid of user's mailbox into *m (m->trace points into the
 * map: see struct store_mail). -ENOENT if absent. */
int store_mailbox_get(struct store_txn *txn, const char *user, uint32_t uid,
		      struct store_mail *m);
/* Calls fn per entry in uid order (see store_domain_list). */
int store_mailbox_list(struct store_txn *txn, const char *user,
		       int (*fn)(const struct store_mail *m, void *arg),
		       void *arg);

/* --- outbound queue: id || recipient -> next attempt, attempts, ... ----- */

/* One recipient of one message, waiting to be sent on (relayed). An entry
 * holds one reference to the message, like a mailbox entry, so a message
 * with local and remote recipients is stored once. */
struct store_queue_entry {
	uint64_t id;		/* message id */
	const char *recipient;	/* as the client gave it (local part's case
				 * kept: RFC 5321 2.4) */
	const char *sender;	/* reverse-path, "" for <> */
	uint64_t next_attempt;	/* wall clock, seconds since the epoch (UTC) */
	uint32_t attempts;	/* made so far */
	const char *last_error; /* "" before the first failure */
	uint64_t arrival;	/* when it was queued (seconds): bounce_after
				 * counts from here */
};

/* Queues message id for recipient (1 to STORE_ADDR_MAX octets, no control
 * character), first attempt at next_attempt, and adds a reference to the
 * message. -EEXIST if recipient is queued for id already; -ENOENT if
 * there is no such message; -EINVAL for a bad recipient or sender. */
int store_queue_add(struct store_txn *txn, uint64_t id, const char *recipient,
		    const char *sender, uint64_t next_attempt);
/* Removes an entry (delivered, or given up) and drops its reference; the
 * body goes with the last one. -ENOENT if absent. */
int store_queue_del(struct store_txn *txn, uint64_t id, const char *recipient);
/* 1 if recipient is queued for message id, 0 if not, <0 on error (the
 * queue runner asks before it bounces: the CLI or the console may have
 * removed the entry while it was being tried). */
int store_queue_has(struct store_txn *txn, uint64_t id, const char *recipient);
/* After a failed attempt: the entry is next due at next_attempt, with one
 * attempt more and last_error (cut to STORE_QUEUE_ERROR_MAX octets); its
 * reference stays. -ENOENT if absent (the CLI removed it meanwhile). */
#define STORE_QUEUE_ERROR_MAX 512 /* a reply line: RFC 5321 4.5.3.1.5 */
int store_queue_retry(struct store_txn *txn, uint64_t id,
		      const char *recipient, uint64_t next_attempt,
		      const char *last_error);
/* Calls fn per entry in key order: by message, then recipient (strings
 * valid during the call; see store_domain_list for the return value). */
int store_queue_list(struct store_txn *txn,
		     int (*fn)(const struct store_queue_entry *e, void *arg),
		     void *arg);
/* The same for message id's entries only (a walk of their keys). */
int store_queue_list_id(struct store_txn *txn, uint64_t id,
			int (*fn)(const struct store_queue_entry *e, void *arg),
			void *arg);
/* Number of queued entries (for /metrics and the dashboard). */
int store_queue_count(struct store_txn *txn, uint64_t *count);

/* --- meta: small records the server keeps for itself --------------------- */

/* Copies the meta record key (not one of the store's own: "schema",
 * "next_id", "tick") into buf, at most cap octets: its length, -ENOENT, or
 * -ENOSPC when it is longer than cap. */
int store_meta_get(struct store_txn *txn, const char *key, void *buf,
		   size_t cap);
/* Writes (or replaces) the meta record key. */
int store_meta_put(struct store_txn *txn, const char *key, const void *data,
		   size_t len);

/* --- group commit ------------------------------------------------------ */

/* A unit of work for the commit thread. run() executes on the commit thread
 * inside a nested write transaction: return 0 to keep its changes, <0 to
 * undo just this job; it must not commit or abort txn. run() may be called
 * again (the map grew, or room was short and the job is retried), so it
 * must touch nothing but the store. done() runs later on the loop thread
 * with the job's final result: 0 only once the enclosing transaction is
 * synced; -ENOSPC when there is no room for it; -EAGAIN when a map resize
 * waited in vain (try again later). The caller owns the job memory until
 * done() is called.
 *
 * Room: a job that adds records (store.c counts the bytes of every new
 * record it writes) is refused with -ENOSPC, and undone alone, when they
 * would leave less than STORE_RESERVE free under max_size or on the disk.
 * A job that only deletes may use that reserve, which on the disk is
 * allocated in the data file ahead of LMDB's last page: a user can delete
 * mail on a full disk, whoever filled it. Other jobs of the batch still
 * commit; if a whole batch fails for room (LMDB needed more than counted),
 * each job is retried in its own commit. The room a deletion made is
 * usable at once: when a job is refused, the thread first commits a tick
 * (LMDB reuses freed pages only from the second commit after the one that
 * freed them), then runs the job once more. No caller marks its job: the
 * store sees what it writes. */
struct store_job {
	int (*run)(struct store_txn *txn, void *arg);
	void (*done)(void *arg, int rc);
	void *arg;
	int rc;			/* private */
	bool todo;		/* private */
	struct store_job *next; /* private */
};

/* Starts the commit thread, which reports back to loop. */
int store_commit_start(struct store *st, uv_loop_t *loop);

/* Queues a job (loop thread). Every job waiting when the thread wakes is
 * run in one write transaction and made durable by one commit. */
void store_commit_submit(struct store *st, struct store_job *job);

/* Lets queued jobs finish (their done() callbacks run, from here), then
 * stops the thread and closes its async handle. Call from the loop thread
 * with no read transaction open; the loop must run afterwards for the
 * close callback. */
void store_commit_stop(struct store *st);

/* Figures: commits made and jobs run since start (for the bench). */
void store_commit_stats(struct store *st, uint64_t *commits, uint64_t *jobs);

#endif
