/*
 * store_priv.h - what the files of store/ share and nobody else sees: the
 * store struct, the transaction wrapper, and map.c's interface (the map,
 * the gate that guards a remap, and the room left for new records).
 * map.c calls neither store.c nor commit.c; both call it.
 */
#ifndef PILLARBOX_STORE_PRIV_H
#define PILLARBOX_STORE_PRIV_H

#include <lmdb.h>

#include "store/store.h"

enum store_db {
	DB_META,
	DB_DOMAINS,
	DB_USERS,
	DB_ALIASES,
	DB_MESSAGES,
	DB_MSGREFS,
	DB_MAILBOX,
	DB_QUEUE,
	DB_COUNT
};

struct store_txn {
	MDB_txn *txn;
	struct store *st;
	bool write;
	bool full;    /* an operation hit MDB_MAP_FULL */
	size_t added; /* bytes of new records written: 0 when it only deletes */
};

/* --- map.c: the map and the disk under it ------------------------------ */

/* mdb_env_set_mapsize needs every transaction of the process ended, so
 * every transaction counts itself in (open) and a remap closes the gate:
 * no transaction begins until it is done. */
struct store_map {
	uv_mutex_t mu;
	uv_cond_t cond;	   /* open fell to 0, or the gate reopened */
	int open;	   /* transactions of this process now open */
	bool closed;	   /* a remap waits for open to reach 0 */
	unsigned wait_ms;  /* STORE_GROW_WAIT_MS (tests change it) */
	uint64_t reserved; /* the data file is allocated up to here (commit
			    * thread; 0 until the first map_reserve) */
	bool reserve_low;  /* the last top-up failed (logged once) */
};

void map_init(struct store *st);
void map_destroy(struct store *st);

/* Counts a transaction in, waiting while a remap is pending (it takes
 * microseconds once the open transactions end). Call before
 * mdb_txn_begin; map_leave after the transaction ended or failed to
 * begin. */
void map_enter(struct store *st);
void map_leave(struct store *st);

/* Remaps behind the gate: grow doubles the map (up to max_size, and only
 * when the address space is there); !grow adopts the size another process
 * set. The caller has no transaction open. Waits at most wait_ms for the
 * open transactions to end. Returns 0, MDB_MAP_FULL (cannot grow), or
 * EAGAIN (transactions stayed open; nothing changed and the gate is open
 * again). */
int map_remap(struct store *st, bool grow, unsigned wait_ms);

/* For a writer that cannot re-run its work after MDB_MAP_FULL (the CLI):
 * grows the map when it is over half used and nothing is open. */
void map_grow_ahead(struct store *st);

/* Bytes of new records the next write transaction may add and still leave
 * the reserve for deletions, under max_size and on the disk: the free
 * space past LMDB's last page, plus its free pages that the next write
 * transaction may reuse. Opens (and ends) a read transaction. */
uint64_t map_room(struct store *st);

/* After a commit: keeps STORE_RESERVE of disk allocated past LMDB's last
 * page, so that a deletion can be written on a full disk. */
void map_reserve(struct store *st);

/* The code of a failed commit as the store means it: MDB_MAP_FULL, and a
 * write error while the disk is full (LMDB reports a short write as EIO),
 * become ENOSPC. */
int map_write_err(struct store *st, int rc);

/* --- the store --------------------------------------------------------- */

struct store {
	MDB_env *env;
	MDB_dbi dbi[DB_COUNT];
	uint64_t max_size; /* 0 = no cap */
	struct store_map map;

	/* The commit thread; mu guards the lists, stopping and the figures,
	 * and cond wakes the thread (a job, or stop). */
	uv_mutex_t mu;
	uv_cond_t cond;
	uv_loop_t *loop; /* non-NULL while the commit thread runs */
	uv_thread_t thread;
	uv_async_t async;
	bool async_open; /* until its close callback ran */
	bool stopping;
	bool ticked; /* commit thread: no real commit since the last tick */
	struct store_job *queue_head, *queue_tail;
	struct store_job *done_head, *done_tail;
	uint64_t commits, jobs;
};

/* Maps an LMDB code or errno to 0 / negative errno; flags t->full on
 * MDB_MAP_FULL (t may be NULL). Logs codes that become -EIO. */
int store_err(struct store_txn *t, int rc);

#endif
