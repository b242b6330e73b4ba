/*
 * commit.c - the group-commit thread: every job waiting runs in one LMDB
 * write transaction made durable by one sync. A job short of room is
 * undone alone; it is retried once after a tick, and a batch that cannot
 * be written as a whole is retried job by job. The map and the room are
 * map.c's. See store.h.
 */
#include "store/store_priv.h"

#include <errno.h>

#include "base/log.h"
#include "base/metrics.h"

/* A job's rc while its batch is worked on, until it is final (<= 0). */
#define JOB_NOROOM 1 /* refused for room: -ENOSPC, unless a retry fits */

/* One write transaction over the jobs of batch still to do (only the
 * first of them when one): each job in a nested transaction, so that a
 * failing one is undone alone, and a job that meets the end of the map at
 * the cap or adds more than the room left is undone as JOB_NOROOM. Below
 * the cap, the map grows and the jobs run again. Returns 0 once committed
 * (*real when anything was written), or the code that undid them all, the
 * jobs still to do: ENOSPC when it was room. */
static int commit_try(struct store *st, struct store_job *batch, bool one,
		      bool *real)
{
	struct store_txn t = {.st = st, .write = true};
	struct store_job *j;
	MDB_txn *parent;
	bool grow = true, regrow = false;
	uint64_t room;
	int rc;

again:
	room = map_room(st);
	map_enter(st);
	if ((rc = mdb_txn_begin(st->env, NULL, 0, &parent)) != 0) {
		map_leave(st);
		if (rc == MDB_MAP_RESIZED &&
		    (rc = map_remap(st, false, st->map.wait_ms)) == 0)
			goto again; /* the CLI grew the map: adopt its size */
		return rc;
	}
	for (j = batch; j != NULL; j = j->next) {
		if (!j->todo)
			continue;
		t.full = false;
		t.added = 0;
		if ((rc = mdb_txn_begin(st->env, parent, 0, &t.txn)) != 0) {
			j->rc = store_err(NULL, rc);
		} else {
			rc = j->run(&t, j->arg);
			if ((regrow = t.full && grow))
				break; /* aborting the parent ends the child */
			if (t.full || (rc == 0 && t.added > room))
				rc = JOB_NOROOM;
			if (rc == 0)
				rc = store_err(&t, mdb_txn_commit(t.txn));
			else
				mdb_txn_abort(t.txn);
			if (rc == 0)
				room -= t.added;
			j->rc = rc;
		}
		if (one)
			break;
	}
	if (regrow) {
		mdb_txn_abort(parent);
		map_leave(st);
		if ((rc = map_remap(st, true, st->map.wait_ms)) == MDB_MAP_FULL)
			grow = false; /* at the cap: refuse what does not fit */
		else if (rc != 0)
			return rc;
		goto again;
	}
	rc = mdb_txn_commit(parent);
	map_leave(st);
	if (rc == MDB_MAP_FULL && grow &&
	    (rc = map_remap(st, true, st->map.wait_ms)) == 0)
		goto again;
	if (rc != 0)
		return map_write_err(st, rc);
	*real = false;
	for (j = batch; j != NULL; j = j->next) {
		if (!j->todo)
			continue;
		j->todo = false;
		*real |= j->rc == 0;
		if (one)
			break;
	}
	if (*real) {
		st->ticked = false;
		map_reserve(st);
	}
	return 0;
}

/* Commits one tiny write. LMDB reuses the pages freed by a commit only
 * from the second commit after it, and a refused attempt commits nothing,
 * so on a quiet server the room a deletion made would stay out of reach
 * until some other write came along. */
static void commit_tick(struct store *st)
{
	unsigned char v[8];
	MDB_val k = {4, "tick"}, val = {8, v};
	MDB_txn *txn;
	uint64_t id;
	int rc;

	map_enter(st);
	if ((rc = mdb_txn_begin(st->env, NULL, 0, &txn)) == 0) {
		id = mdb_txn_id(txn);
		for (int i = 7; i >= 0; i--, id >>= 8)
			v[i] = (unsigned char)id;
		if ((rc = mdb_put(txn, st->dbi[DB_META], &k, &val, 0)) != 0)
			mdb_txn_abort(txn);
		else
			rc = mdb_txn_commit(txn);
	}
	map_leave(st);
	st->ticked = true; /* tried: not again before a real commit */
	if (rc == 0)
		map_reserve(st);
}

/* Jobs of batch still to do (undone with a whole batch). */
static int commit_todo(struct store_job *batch)
{
	int n = 0;

	for (; batch != NULL; batch = batch->next)
		n += batch->todo;
	return n;
}

/* Runs the batch and sets every job's final rc; returns the number of
 * commits that wrote something. */
static uint64_t commit_batch(struct store *st, struct store_job *batch)
{
	struct store_job *j;
	uint64_t commits = 0;
	bool real = false, noroom = false;
	int rc, refused = 0;

	for (j = batch; j != NULL; j = j->next)
		j->todo = true;
	rc = commit_try(st, batch, false, &real);
	commits += rc == 0 && real;
	for (j = batch; j != NULL; j = j->next)
		noroom |= !j->todo && j->rc == JOB_NOROOM;
	/* Short of room: perhaps only of the room the last commit made. */
	if ((noroom || rc == ENOSPC) && !st->ticked) {
		commit_tick(st);
		for (j = batch; j != NULL; j = j->next)
			j->todo |= j->rc == JOB_NOROOM;
		rc = commit_try(st, batch, false, &real);
		commits += rc == 0 && real;
	}
	/* No room for the batch as a whole: each job in its own commit, so
	 * that the ones that fit are kept. */
	if (rc == ENOSPC && commit_todo(batch) > 1) {
		for (j = batch; j != NULL; j = j->next) {
			if (!j->todo)
				continue;
			if ((rc = commit_try(st, j, true, &real)) == 0) {
				commits += real;
				continue;
			}
			j->rc = rc == ENOSPC ? JOB_NOROOM : store_err(NULL, rc);
			j->todo = false;
		}
	}
	for (j = batch; j != NULL; j = j->next) {
		if (j->todo) /* undone with the whole batch */
			j->rc = store_err(NULL, rc);
		if (j->rc == JOB_NOROOM) {
			j->rc = -ENOSPC;
			refused++;
		}
	}
	if (refused > 0)
		log_msg(LOG_WARN, "store", "event=no_room refused=%d", refused);
	return commits;
}

static void commit_main(void *arg)
{
	struct store *st = arg;
	struct store_job *batch, *last;
	uint64_t commits;

	uv_mutex_lock(&st->mu);
	for (;;) {
		while (st->queue_head == NULL && !st->stopping)
			uv_cond_wait(&st->cond, &st->mu);
		if (st->queue_head == NULL)
			break;		/* stopping, and the queue is empty */
		batch = st->queue_head; /* every job waiting */
		last = st->queue_tail;
		st->queue_head = st->queue_tail = NULL;
		uv_mutex_unlock(&st->mu);

		uint64_t t0 = uv_hrtime();
		commits = commit_batch(st, batch);
		if (commits > 0) /* a batch that only failed is no latency */
			metrics_commit_latency((uv_hrtime() - t0) / 1000);

		uv_mutex_lock(&st->mu);
		st->commits += commits;
		for (struct store_job *j = batch; j != NULL; j = j->next)
			st->jobs++;
		if (st->done_tail != NULL)
			st->done_tail->next = batch;
		else
			st->done_head = batch;
		st->done_tail = last;
		uv_async_send(&st->async);
	}
	uv_mutex_unlock(&st->mu);
}

/* Loop thread: reports finished jobs in submission order. */
static void commit_done_cb(uv_async_t *async)
{
	struct store *st = async->data;
	struct store_job *j, *next;

	uv_mutex_lock(&st->mu);
	j = st->done_head;
	st->done_head = st->done_tail = NULL;
	uv_mutex_unlock(&st->mu);
	for (; j != NULL; j = next) {
		next = j->next; /* done() may free j */
		j->done(j->arg, j->rc);
	}
}

static void commit_close_cb(uv_handle_t *h)
{
	((struct store *)h->data)->async_open = false;
}

int store_commit_start(struct store *st, uv_loop_t *loop)
{
	int rc;

	if (st->loop != NULL || st->async_open)
		fatal("event=commit_start err=already_started");
	if ((rc = uv_async_init(loop, &st->async, commit_done_cb)) < 0)
		return rc;
	st->async.data = st;
	st->async_open = true;
	st->loop = loop;
	st->stopping = false;
	st->ticked = false;
	st->commits = st->jobs = 0;
	map_reserve(st); /* before the thread: it owns it from then on */
	if ((rc = uv_thread_create(&st->thread, commit_main, st)) < 0) {
		st->loop = NULL;
		uv_close((uv_handle_t *)&st->async, commit_close_cb);
	}
	return rc;
}

void store_commit_submit(struct store *st, struct store_job *job)
{
	if (st->loop == NULL || job->run == NULL || job->done == NULL)
		fatal("event=commit_submit err=not_started_or_bad_job");
	job->rc = 0;
	job->next = NULL;
	uv_mutex_lock(&st->mu);
	if (st->queue_tail != NULL)
		st->queue_tail->next = job;
	else
		st->queue_head = job;
	st->queue_tail = job;
	uv_cond_signal(&st->cond);
	uv_mutex_unlock(&st->mu);
}

void store_commit_stop(struct store *st)
{
	if (st->loop == NULL)
		return;
	uv_mutex_lock(&st->mu);
	st->stopping = true;
	uv_cond_signal(&st->cond);
	uv_mutex_unlock(&st->mu);
	uv_thread_join(&st->thread); /* it empties the queue first */
	commit_done_cb(&st->async);
	uv_close((uv_handle_t *)&st->async, commit_close_cb);
	st->loop = NULL;
}

void store_commit_stats(struct store *st, uint64_t *commits, uint64_t *jobs)
{
	uv_mutex_lock(&st->mu);
	*commits = st->commits;
	*jobs = st->jobs;
	uv_mutex_unlock(&st->mu);
}
