/*
 * map.c - the map and the disk under it: the gate that lets a remap run
 * with no transaction of this process open, the remap itself (growth, or
 * adopting a size another process set), and the room left for new records
 * once the reserve for deletions is set aside. See store_priv.h.
 */
#include "store/store_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "base/log.h"

/* LMDB's freelist: database 0, keyed by the id of the transaction that
 * freed the pages, each value a list of page numbers led by its length
 * (as mdb_stat -f reads it). */
#define FREE_DBI 0

/* Under a small cap (a router, the tests) a sixteenth of it is reserve
 * enough: a deletion needs a few pages plus 8 bytes per page it frees. */
#define CAP_RESERVE(max)                                                       \
	((max) / 16 < STORE_RESERVE ? (max) / 16 : STORE_RESERVE)

void map_init(struct store *st)
{
	if (uv_mutex_init(&st->map.mu) != 0 || uv_cond_init(&st->map.cond) != 0)
		fatal("event=store_open err=mutex_init");
	st->map.wait_ms = STORE_GROW_WAIT_MS;
}

void map_destroy(struct store *st)
{
	uv_cond_destroy(&st->map.cond);
	uv_mutex_destroy(&st->map.mu);
}

void map_enter(struct store *st)
{
	uv_mutex_lock(&st->map.mu);
	while (st->map.closed)
		uv_cond_wait(&st->map.cond, &st->map.mu);
	st->map.open++;
	uv_mutex_unlock(&st->map.mu);
}

void map_leave(struct store *st)
{
	uv_mutex_lock(&st->map.mu);
	if (--st->map.open < 0)
		fatal("event=map_leave err=not_entered");
	if (st->map.open == 0 && st->map.closed)
		uv_cond_broadcast(&st->map.cond); /* the remap may run */
	uv_mutex_unlock(&st->map.mu);
}

/* Bytes LMDB uses: up to its last page (of the newest commit, by any
 * process). */
static uint64_t map_used(struct store *st, size_t *mapsize)
{
	MDB_envinfo info;
	MDB_stat ms;

	if (mdb_env_info(st->env, &info) != 0 || mdb_env_stat(st->env, &ms))
		fatal("event=map_info err=env_info");
	if (mapsize != NULL)
		*mapsize = info.me_mapsize;
	return ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize;
}

/* The size a growth goes to, or 0 when it cannot grow. */
static size_t map_next_size(struct store *st)
{
	size_t cur, size;
	void *probe;

	map_used(st, &cur);
	size = cur * 2;
	if (st->max_size != 0 && size > st->max_size)
		size = (size_t)st->max_size;
	if (size <= cur)
		return 0;
	/* LMDB unmaps before it maps again and cannot undo a failed mmap, so
	 * first make sure the address space is there. */
	probe = mmap(NULL, size, PROT_NONE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (probe == MAP_FAILED)
		return 0;
	munmap(probe, size);
	return size;
}

int map_remap(struct store *st, bool grow, unsigned wait_ms)
{
	uint64_t deadline = uv_hrtime() + (uint64_t)wait_ms * 1000000;
	size_t size = 0; /* 0: adopt the size in the meta page */
	MDB_envinfo info;
	int rc = 0;

	/* Cannot grow: spare the readers a pointless wait. */
	if (grow && (size = map_next_size(st)) == 0)
		return MDB_MAP_FULL;
	uv_mutex_lock(&st->map.mu);
	while (st->map.closed) /* another remap first */
		uv_cond_wait(&st->map.cond, &st->map.mu);
	st->map.closed = true;
	while (st->map.open > 0 && rc == 0) {
		uint64_t now = uv_hrtime();
		if (now >= deadline)
			rc = EAGAIN;
		else
			uv_cond_timedwait(&st->map.cond, &st->map.mu,
					  deadline - now);
	}
	/* Again, now that nothing moves: another remap may have run. */
	if (rc == 0 && grow && (size = map_next_size(st)) == 0)
		rc = MDB_MAP_FULL;
	if (rc == 0) {
		/* A failing set_mapsize leaves LMDB without a map. */
		if ((rc = mdb_env_set_mapsize(st->env, size)) != 0)
			fatal("event=map_resize size=%zu err=%s", size,
			      mdb_strerror(rc));
		mdb_env_info(st->env, &info);
		log_msg(LOG_INFO, "store", "event=map_resize size=%zu",
			info.me_mapsize);
	} else if (rc == EAGAIN && wait_ms > 0) {
		log_msg(LOG_WARN, "store",
			"event=map_resize_timeout open=%d wait_ms=%u",
			st->map.open, wait_ms);
	}
	st->map.closed = false;
	uv_cond_broadcast(&st->map.cond); /* reads wait in map_enter */
	uv_mutex_unlock(&st->map.mu);
	return rc;
}

void map_grow_ahead(struct store *st)
{
	size_t mapsize;

	if (map_used(st, &mapsize) > mapsize / 2)
		map_remap(st, true, 0);
}

/* Bytes in LMDB's free pages that a write transaction begun after read
 * snapshot txn may reuse: LMDB takes pages freed by commit N only from
 * commit N + 2 on, so those of the newest commit do not count yet. */
static uint64_t map_free_pages(MDB_txn *txn)
{
	MDB_cursor *c;
	MDB_val k, v;
	size_t id, n;
	uint64_t pages = 0;

	if (mdb_cursor_open(txn, FREE_DBI, &c) != 0)
		return 0;
	while (mdb_cursor_get(c, &k, &v, MDB_NEXT) == 0) {
		if (k.mv_size != sizeof id || v.mv_size < sizeof n)
			break;
		memcpy(&id, k.mv_data, sizeof id);
		memcpy(&n, v.mv_data, sizeof n);
		if (id >= mdb_txn_id(txn))
			break; /* keys ascend */
		pages += n;
	}
	mdb_cursor_close(c);
	return pages;
}

uint64_t map_room(struct store *st)
{
	struct statvfs vfs;
	MDB_txn *txn;
	MDB_stat ms;
	uint64_t used = map_used(st, NULL), reuse = 0;
	int64_t room = INT64_MAX, r;
	int fd;

	if (st->max_size != 0) {
		room = (int64_t)st->max_size - (int64_t)used -
		       (int64_t)CAP_RESERVE(st->max_size);
	}
	/* After the job the file must still be allocated STORE_RESERVE past
	 * its last page. The part of the reserve allocated already (past
	 * used) is not in f_bavail, and new pages go into it first: only
	 * the rest of the reserve must come out of the free disk. */
	if (mdb_env_get_fd(st->env, &fd) == 0 && fstatvfs(fd, &vfs) == 0) {
		uint64_t held =
		    st->map.reserved > used ? st->map.reserved - used : 0;
		r = (int64_t)((uint64_t)vfs.f_bavail * vfs.f_frsize) -
		    STORE_RESERVE +
		    (int64_t)(held < STORE_RESERVE ? held : STORE_RESERVE);
		room = r < room ? r : room;
	}
	map_enter(st);
	if (mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn) == 0) {
		if (mdb_env_stat(st->env, &ms) == 0)
			reuse = map_free_pages(txn) * ms.ms_psize;
		mdb_txn_abort(txn);
	}
	map_leave(st);
	if (room > INT64_MAX - (int64_t)reuse)
		return INT64_MAX;
	room += (int64_t)reuse;
	return room > 0 ? (uint64_t)room : 0;
}

void map_reserve(struct store *st)
{
	uint64_t used = map_used(st, NULL), end = used + STORE_RESERVE, from;
	struct stat sb;
	int fd;

	if (mdb_env_get_fd(st->env, &fd) != 0)
		return;
	if (st->max_size != 0 && end > st->max_size)
		end = st->max_size; /* no disk past what the store may use */
	/* At start, what the file holds already (st_blocks counts 512-byte
	 * units): LMDB leaves no hole below its last page, and the reserve
	 * follows it. */
	if (st->map.reserved == 0 && fstat(fd, &sb) == 0)
		st->map.reserved = (uint64_t)sb.st_blocks * 512;
	/* Top up once less than half of it is left. */
	if (end <= used || st->map.reserved >= used + (end - used) / 2)
		return;
	/* Only past what is ours already, so that a failing call (which may
	 * undo what it allocated) leaves the rest as it was. KEEP_SIZE: the
	 * blocks are the file's, LMDB sees no bigger file, and writing into
	 * them later needs no free block. */
	from = used > st->map.reserved ? used : st->map.reserved;
	if (fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)from,
		      (off_t)(end - from)) == 0) {
		st->map.reserved = end;
		if (st->map.reserve_low)
			log_msg(LOG_INFO, "store", "event=disk_reserve ok=1");
		st->map.reserve_low = false;
	} else if (!st->map.reserve_low) {
		log_msg(LOG_WARN, "store", "event=disk_reserve ok=0 err=%s",
			log_str(strerror(errno)));
		st->map.reserve_low = true;
	}
}

int map_write_err(struct store *st, int rc)
{
	struct statvfs vfs;
	int fd;

	if (rc == MDB_MAP_FULL || rc == ENOSPC || rc == EDQUOT)
		return ENOSPC;
	if (rc == EIO && mdb_env_get_fd(st->env, &fd) == 0 &&
	    fstatvfs(fd, &vfs) == 0 &&
	    (uint64_t)vfs.f_bavail * vfs.f_frsize < STORE_RESERVE)
		return ENOSPC;
	return rc;
}
