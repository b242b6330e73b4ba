/*
 * store_priv.h - what store.c and commit.c share and nobody else sees: the
 * store struct, the transaction wrapper and the map-growth gate.
 */
#ifndef PILLARBOX_STORE_PRIV_H
#define PILLARBOX_STORE_PRIV_H

#include <lmdb.h>
#include <stdatomic.h>

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
	bool full; /* an operation hit MDB_MAP_FULL: grow, then redo it all */
};

struct store {
	MDB_env *env;
	MDB_dbi dbi[DB_COUNT];
	uint64_t max_size; /* 0 = no cap */

	/* The growth gate: mdb_env_set_mapsize needs every txn of the process
	 * ended, so while grow_pending is set no read may start, and the
	 * commit thread waits on cond until readers drops to 0. */
	atomic_int readers;
	atomic_bool grow_pending;
	atomic_bool adopt; /* a reader met MDB_MAP_RESIZED: remap to size 0 */

	/* The commit thread; mu guards the lists, stopping and the figures,
	 * and cond wakes the thread (job, stop, adopt or last reader gone). */
	uv_mutex_t mu;
	uv_cond_t cond;
	uv_loop_t *loop; /* non-NULL while the commit thread runs */
	uv_thread_t thread;
	uv_async_t async;
	bool async_open; /* until its close callback ran */
	bool stopping;
	struct store_job *queue_head, *queue_tail;
	struct store_job *done_head, *done_tail;
	uint64_t commits, jobs;
};

/* Maps an LMDB code or errno to 0 / negative errno; flags t->full on
 * MDB_MAP_FULL (t may be NULL). Logs codes that become -EIO. */
int store_err(struct store_txn *t, int rc);

/* Remaps: grow doubles the map (MDB_MAP_FULL at max_size or when the
 * address space is short), !grow adopts the size another process set. The
 * caller makes sure no transaction of this process is open. A failing
 * mdb_env_set_mapsize leaves LMDB without a map: fatal(). */
int store_remap(struct store *st, bool grow);

/* Wakes the commit thread (commit.c). */
void store_commit_wake(struct store *st);

#endif
