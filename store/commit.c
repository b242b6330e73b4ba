/*
 * commit.c - the group-commit thread: every job waiting runs in one LMDB
 * write transaction made durable by one sync, and the map is resized here,
 * behind the reader gate (see store_priv.h). See store.h.
 */
#include "store/store_priv.h"

#include "base/log.h"

void store_commit_wake(struct store *st)
{
	uv_mutex_lock(&st->mu);
	uv_cond_broadcast(&st->cond); /* the thread, or a reader waiting */
	uv_mutex_unlock(&st->mu);
}

/* Resizes once no read is open: new reads wait (or get -EAGAIN while a
 * held read is open), and the loop is woken so it notices (and logs). */
static int commit_remap(struct store *st, bool grow)
{
	MDB_envinfo info;
	int rc;

	/* At the cap already: spare the readers a pointless wait. */
	if (grow && st->max_size != 0 && mdb_env_info(st->env, &info) == 0 &&
	    info.me_mapsize >= st->max_size)
		return MDB_MAP_FULL;
	atomic_store(&st->grow_pending, true);
	uv_async_send(&st->async);
	uv_mutex_lock(&st->mu);
	while (atomic_load(&st->readers) > 0)
		uv_cond_wait(&st->cond, &st->mu);
	uv_mutex_unlock(&st->mu);
	rc = store_remap(st, grow);
	uv_mutex_lock(&st->mu);
	atomic_store(&st->grow_pending, false);
	uv_cond_broadcast(&st->cond); /* a read may be waiting in the gate */
	uv_mutex_unlock(&st->mu);
	return rc;
}

/* Runs the batch and sets every job's rc; on MDB_MAP_FULL grows the map
 * and runs it all again. Returns 0 once committed. */
static int commit_batch(struct store *st, struct store_job *batch)
{
	struct store_txn t = {.st = st, .write = true};
	struct store_job *j;
	MDB_txn *parent;
	int rc;

	for (;;) {
		rc = mdb_txn_begin(st->env, NULL, 0, &parent);
		if (rc == MDB_MAP_RESIZED && commit_remap(st, false) == 0)
			continue; /* the CLI grew the map: adopt its size */
		if (rc != 0)
			break;
		t.full = false;
		/* Each job in a child txn, so a failing one is undone alone. */
		for (j = batch; j != NULL && !t.full; j = j->next) {
			if ((rc = mdb_txn_begin(st->env, parent, 0, &t.txn))) {
				j->rc = store_err(&t, rc);
				continue;
			}
			j->rc = j->run(&t, j->arg);
			if (t.full) /* aborting the parent ends the child */
				break;
			if (j->rc < 0)
				mdb_txn_abort(t.txn);
			else if ((rc = mdb_txn_commit(t.txn)) != 0)
				j->rc = store_err(&t, rc);
		}
		if (t.full) {
			mdb_txn_abort(parent);
			rc = MDB_MAP_FULL;
		} else if ((rc = mdb_txn_commit(parent)) == 0) {
			return 0;
		}
		if (rc != MDB_MAP_FULL || commit_remap(st, true) != 0)
			break;
	}
	if (rc == MDB_MAP_FULL)
		log_msg(LOG_WARN, "store", "event=map_full max_size=%llu",
			(unsigned long long)st->max_size);
	rc = store_err(NULL, rc); /* -ENOSPC when full: SMTP says 452 */
	for (j = batch; j != NULL; j = j->next)
		j->rc = rc;
	return rc;
}

static void commit_main(void *arg)
{
	struct store *st = arg;
	struct store_job *batch, *last;
	bool ok;

	uv_mutex_lock(&st->mu);
	for (;;) {
		while (st->queue_head == NULL && !st->stopping &&
		       !atomic_load(&st->adopt))
			uv_cond_wait(&st->cond, &st->mu);
		if (st->queue_head == NULL && st->stopping)
			break;
		batch = st->queue_head; /* every job waiting */
		last = st->queue_tail;
		st->queue_head = st->queue_tail = NULL;
		uv_mutex_unlock(&st->mu);

		if (atomic_exchange(&st->adopt, false))
			commit_remap(st, false);
		ok = batch != NULL && commit_batch(st, batch) == 0;

		uv_mutex_lock(&st->mu);
		if (batch == NULL)
			continue;
		st->commits += ok;
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
	if (atomic_load(&st->grow_pending))
		log_msg(LOG_INFO, "store", "event=map_resize_wait readers=%d",
			atomic_load(&st->readers));
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
	st->commits = st->jobs = 0;
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
