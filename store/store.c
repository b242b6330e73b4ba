/*
 * store.c - the LMDB environment, its schema and every record in it:
 * domains, users, aliases, messages, mailboxes and the queue listing.
 * The commit thread lives in commit.c, the map and its gate in map.c.
 * See store.h.
 *
 * Encodings (integers big-endian, so key order is numeric order):
 *   meta      "schema"                 -> u32 version
 *             "next_id"                -> u64 next message id
 *             "tick"                   -> u64 LMDB txn id (commit.c)
 *             "hourly"                 -> the dashboard's chart (app/)
 *   domains   domain                   -> u32 flags (0 for now)
 *   users     address                  -> u32 flags, u64 quota (octets,
 *                                         0 = none), u32 next_uid,
 *                                         u64 used, u32 messages (the
 *                                         mailbox's usage), hash bytes
 *                                         (schema 1 had no usage: 16
 *                                         octets, then the hash)
 *   aliases   alias                    -> "a@x,b@y" (lower-cased, no spaces)
 *   messages  u64 id                   -> raw message bytes
 *   msgrefs   u64 id                   -> u32 refcount (apart, so a new
 *                                         reference never rewrites a body)
 *   mailbox   address 0x00 u32 uid     -> u64 id, u64 size, trace bytes
 *                                         (size counts trace and body; an
 *                                         entry of 16 octets has no trace:
 *                                         the bodies stored before traces
 *                                         were kept apart begin with their
 *                                         own Return-Path, and still read)
 *   queue     u64 id, recipient        -> u64 next_attempt, u32 attempts,
 *                                         sender 0x00 last_error 0x00
 *                                         [u64 arrival: written by the
 *                                         first retry; until then
 *                                         next_attempt is the arrival]
 * Names never contain 0x00, so "a@x\0" prefixes a@x's mailbox entries only.
 *
 * The queue was keyed next_attempt || id before, which made two recipients
 * of one message collide; nothing wrote a queue entry then, so no store
 * holds one of that shape and the schema version did not change. The
 * queue runner looks at a new message by its id (a prefix walk) and walks
 * the whole queue for entries that are due, at most a tenth of its time
 * (smtp/deliver.c); an index by time can be added beside it if that is
 * ever too little.
 */
#include "store/store_priv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "base/log.h"

/* flags + quota + next_uid + used + messages, then the hash */
#define USER_FIXED    28
#define USER_FIXED_V1 16 /* schema 1: flags + quota + next_uid */
#define RESOLVE_DEPTH 8	 /* store.h: aliases of aliases, 8 deep */
/* Named databases a process may open: DB_COUNT now, and room for the
 * schema to grow; a slot costs a few bytes per transaction. */
#define STORE_MAXDBS 16
_Static_assert(DB_COUNT <= STORE_MAXDBS, "STORE_MAXDBS too small");
/* Reader slots in the lock file, one per open read of every process (the
 * loop thread, the thread pool, CLI runs): reads last microseconds, so
 * 1024 is far more than ever needed and costs 64 KiB of lock file. */
#define STORE_MAXREADERS 1024

static const char *const db_names[DB_COUNT] = {
    "meta",	"domains", "users",   "aliases",
    "messages", "msgrefs", "mailbox", "queue",
};

static void put_u32(unsigned char *p, uint32_t v)
{
	for (int i = 3; i >= 0; i--, v >>= 8)
		p[i] = (unsigned char)v;
}

static void put_u64(unsigned char *p, uint64_t v)
{
	put_u32(p, (uint32_t)(v >> 32));
	put_u32(p + 4, (uint32_t)v);
}

static uint32_t get_u32(const void *v)
{
	const unsigned char *p = v;

	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get_u64(const void *v)
{
	return (uint64_t)get_u32(v) << 32 | get_u32((const char *)v + 4);
}

int store_err(struct store_txn *t, int rc)
{
	switch (rc) {
	case 0:
		return 0;
	case MDB_NOTFOUND:
		return -ENOENT;
	case MDB_KEYEXIST:
		return -EEXIST;
	case MDB_MAP_FULL:
		if (t != NULL)
			t->full = true;
		return -ENOSPC;
	case ENOSPC:
	case EDQUOT:
		return -ENOSPC;
	case EAGAIN: /* map.c: a resize waited in vain */
	case MDB_MAP_RESIZED:
	case MDB_READERS_FULL:
		return -EAGAIN;
	case MDB_BAD_VALSIZE:
		return -EINVAL;
	case MDB_VERSION_MISMATCH: /* also our own schema check */
	case MDB_INVALID:
		return -EPROTO;
	case ENOMEM:
		fatal("event=oom area=lmdb");
	default:
		log_msg(LOG_ERROR, "store", "event=lmdb_error rc=%d err=%s", rc,
			log_str(mdb_strerror(rc)));
		return -EIO;
	}
}

static int get(struct store_txn *t, enum store_db db, MDB_val *k, MDB_val *v)
{
	return store_err(t, mdb_get(t->txn, t->st->dbi[db], k, v));
}

/* A new record is written with MDB_NOOVERWRITE or MDB_APPEND, and counted
 * in t->added: a commit job that adds none only deletes, and may use the
 * room kept for deletions (see store_job). */
static int put(struct store_txn *t, enum store_db db, MDB_val *k, MDB_val *v,
	       unsigned flags)
{
	if (flags & (MDB_NOOVERWRITE | MDB_APPEND))
		t->added += k->mv_size + v->mv_size;
	return store_err(t, mdb_put(t->txn, t->st->dbi[db], k, v, flags));
}

static int del(struct store_txn *t, enum store_db db, MDB_val *k)
{
	return store_err(t, mdb_del(t->txn, t->st->dbi[db], k, NULL));
}

/* 1 when key k exists in db, 0 when not, <0 on error. */
static int has(struct store_txn *t, enum store_db db, MDB_val *k)
{
	MDB_val v;
	int rc = get(t, db, k, &v);

	return rc == -ENOENT ? 0 : rc == 0 ? 1 : rc;
}

/* A name made key: lower-cased, and for an address split at its '@'. The
 * struct must not be copied (k points into s). */
struct key {
	MDB_val k;
	const char *dom;
	char s[STORE_ADDR_MAX + 1];
};

/* Refuses bytes that would break our encodings or a log line: controls,
 * space and ',' (the alias target separator). An address (addr) needs a
 * non-empty local part and domain. */
static int key_make(struct key *key, const char *s, size_t n, bool addr)
{
	char *at;

	if (s == NULL || n == 0 || n > STORE_ADDR_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= ' ' || c == 0x7f || c == ',')
			return -EINVAL;
		key->s[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
	}
	key->s[n] = '\0';
	key->k = (MDB_val){n, key->s};
	at = strrchr(key->s, '@');
	key->dom = at != NULL ? at + 1 : NULL;
	if (addr && (at == NULL || at == key->s || at[1] == '\0'))
		return -EINVAL;
	return 0;
}

#define KEY(key, s, addr) key_make(key, s, (s) ? strlen(s) : 0, addr)

/* Calls each() per record of db whose key starts with prefix (every record
 * when plen is 0), in key order, until one returns non-zero. */
static int walk(struct store_txn *t, enum store_db db, const void *prefix,
		size_t plen, int (*each)(MDB_val *k, MDB_val *v, void *ctx),
		void *ctx)
{
	MDB_cursor *c = NULL;
	MDB_val k = {plen, (void *)prefix}, v;
	MDB_cursor_op op = plen != 0 ? MDB_SET_RANGE : MDB_FIRST;
	int rc;

	if ((rc = store_err(t, mdb_cursor_open(t->txn, t->st->dbi[db], &c))))
		goto fail;
	for (; (rc = mdb_cursor_get(c, &k, &v, op)) == 0; op = MDB_NEXT) {
		if (plen != 0 &&
		    (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0))
			break;
		if ((rc = each(&k, &v, ctx)) != 0)
			goto fail;
	}
	rc = rc == MDB_NOTFOUND ? 0 : store_err(t, rc);
fail:
	mdb_cursor_close(c);
	return rc;
}

/* What a list hands walk() for its record decoder. */
struct walk_ctx {
	union {
		int (*domain)(const char *name, void *arg);
		int (*user)(const char *addr, const struct store_user *u,
			    void *arg);
		int (*alias)(const char *alias, const char *targets, void *arg);
		int (*mail)(const struct store_mail *m, void *arg);
		int (*queue)(const struct store_queue_entry *e, void *arg);
	} fn;
	void *arg;
};

/* Copies a stored name into a C string for a callback. */
static int name_copy(const MDB_val *v, char *buf, size_t max)
{
	if (v->mv_size > max)
		return store_err(NULL, MDB_CORRUPTED);
	memcpy(buf, v->mv_data, v->mv_size);
	buf[v->mv_size] = '\0';
	return 0;
}

/* --- environment ------------------------------------------------------- */

static int users_upgrade(struct store_txn *t);

int store_open(const char *dir, uint64_t max_size, struct store **out)
{
	struct store *st = NULL;
	MDB_txn *txn = NULL;
	MDB_val k = {6, "schema"}, v;
	unsigned char ver[4];
	size_t size = STORE_MAP_INITIAL;
	int rc, err = 0; /* err: a store code (<0) from the upgrade */

	*out = NULL;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	st = xcalloc(1, sizeof *st);
	st->max_size = max_size;
	if (uv_mutex_init(&st->mu) != 0 || uv_cond_init(&st->cond) != 0)
		fatal("event=store_open err=mutex_init");
	map_init(st);
	/* Small caps (router firmware) start at a quarter of the cap:
	 * address space is scarce there and the map grows on demand. */
	if (max_size != 0 && size > max_size / 4)
		size = (size_t)(max_size / 4);
	/* MDB_NOTLS: a thread may hold several reads at once. Sync stays
	 * on: a commit that returned 0 is on disk. */
	if ((rc = mdb_env_create(&st->env)) != 0 ||
	    (rc = mdb_env_set_maxdbs(st->env, STORE_MAXDBS)) != 0 ||
	    (rc = mdb_env_set_maxreaders(st->env, STORE_MAXREADERS)) != 0 ||
	    (rc = mdb_env_set_mapsize(st->env, size)) != 0 ||
	    (rc = mdb_env_open(st->env, dir, MDB_NOTLS, 0600)) != 0)
		goto fail;
	/* A store that grew in an earlier run keeps its size. */
	if (store_file_size(st) > size &&
	    (rc = mdb_env_set_mapsize(st->env, store_file_size(st))) != 0)
		goto fail;
	rc = mdb_txn_begin(st->env, NULL, 0, &txn);
	if (rc == MDB_MAP_RESIZED && /* another process grew it meanwhile */
	    (rc = mdb_env_set_mapsize(st->env, 0)) == 0)
		rc = mdb_txn_begin(st->env, NULL, 0, &txn);
	for (int i = 0; rc == 0 && i < DB_COUNT; i++)
		rc = mdb_dbi_open(txn, db_names[i], MDB_CREATE, &st->dbi[i]);
	if (rc == 0)
		rc = mdb_get(txn, st->dbi[DB_META], &k, &v);
	if (rc == 0 && v.mv_size == 4 && get_u32(v.mv_data) == 1) {
		/* Schema 1 kept no usage in the user records: count each
		 * mailbox once, in the transaction that writes version 2. */
		struct store_txn t = {.txn = txn, .st = st, .write = true};
		if ((err = users_upgrade(&t)) < 0)
			goto fail;
		rc = MDB_NOTFOUND; /* the version is written below */
	}
	if (rc == MDB_NOTFOUND) {
		put_u32(ver, STORE_SCHEMA_VERSION);
		v = (MDB_val){4, ver};
		rc = mdb_put(txn, st->dbi[DB_META], &k, &v, 0);
	} else if (rc == 0 && (v.mv_size != 4 ||
			       get_u32(v.mv_data) != STORE_SCHEMA_VERSION)) {
		log_msg(LOG_ERROR, "store", "event=schema_mismatch want=%d",
			STORE_SCHEMA_VERSION);
		rc = MDB_VERSION_MISMATCH; /* -EPROTO */
	}
	if (rc != 0)
		goto fail;
	rc = mdb_txn_commit(txn);
	txn = NULL;
	if (rc != 0)
		goto fail;
	*out = st;
	return 0;
fail:
	mdb_txn_abort(txn);
	mdb_env_close(st->env);
	map_destroy(st);
	uv_cond_destroy(&st->cond);
	uv_mutex_destroy(&st->mu);
	free(st);
	return err < 0 ? err : store_err(NULL, rc);
}

void store_close(struct store *st)
{
	if (st == NULL)
		return;
	if (st->loop != NULL || st->async_open)
		fatal("event=store_close err=commit_thread_running");
	mdb_env_close(st->env);
	map_destroy(st);
	uv_cond_destroy(&st->cond);
	uv_mutex_destroy(&st->mu);
	free(st);
}

uint64_t store_file_size(struct store *st)
{
	struct stat sb;
	int fd;

	if (mdb_env_get_fd(st->env, &fd) != 0 || fstat(fd, &sb) < 0)
		return 0;
	return (uint64_t)sb.st_size;
}

/* --- transactions ------------------------------------------------------ */

int store_txn_begin(struct store *st, bool write, struct store_txn **out)
{
	struct store_txn *t = NULL;
	unsigned flags = write ? 0 : MDB_RDONLY;
	int rc;

	*out = NULL;
	if (write && st->loop == NULL)
		map_grow_ahead(st);
	t = xmalloc(sizeof *t);
	*t = (struct store_txn){.st = st, .write = write};
	map_enter(st);
	rc = mdb_txn_begin(st->env, NULL, flags, &t->txn);
	if (rc == MDB_MAP_RESIZED) {
		/* Another process grew the map past ours: adopt its size.
		 * Without the commit thread this thread owns every transaction
		 * of the process: there is nothing to wait for. */
		map_leave(st);
		rc = map_remap(st, false,
			       st->loop != NULL ? st->map.wait_ms : 0);
		map_enter(st);
		if (rc == 0)
			rc = mdb_txn_begin(st->env, NULL, flags, &t->txn);
	}
	if ((rc = store_err(t, rc)) < 0) {
		map_leave(st);
		free(t);
		return rc;
	}
	*out = t;
	return 0;
}

int store_txn_commit(struct store_txn *t)
{
	struct store *st = t->st;
	int rc;

	if (!t->write || t->full) { /* a failed write cannot commit */
		rc = t->full ? -ENOSPC : 0;
		store_txn_abort(t);
		return rc;
	}
	rc = mdb_txn_commit(t->txn);
	map_leave(st);
	free(t);
	return store_err(NULL, map_write_err(st, rc));
}

void store_txn_abort(struct store_txn *t)
{
	if (t == NULL)
		return;
	mdb_txn_abort(t->txn);
	map_leave(t->st);
	free(t);
}

/* --- domains ----------------------------------------------------------- */

int store_domain_add(struct store_txn *t, const char *domain)
{
	unsigned char flags[4] = {0};
	MDB_val v = {4, flags};
	struct key d;
	int rc = KEY(&d, domain, false);

	if (rc == 0 && d.dom != NULL)
		rc = -EINVAL;
	return rc < 0 ? rc : put(t, DB_DOMAINS, &d.k, &v, MDB_NOOVERWRITE);
}

int store_domain_del(struct store_txn *t, const char *domain)
{
	struct key d;
	int rc = KEY(&d, domain, false);

	return rc < 0 ? rc : del(t, DB_DOMAINS, &d.k);
}

int store_domain_exists(struct store_txn *t, const char *domain)
{
	struct key d;
	int rc = KEY(&d, domain, false);

	return rc < 0 ? rc : has(t, DB_DOMAINS, &d.k);
}

static int domain_each(MDB_val *k, MDB_val *v, void *ctx)
{
	struct walk_ctx *w = ctx;
	char name[STORE_ADDR_MAX + 1];
	int rc = name_copy(k, name, STORE_ADDR_MAX);

	(void)v;
	return rc < 0 ? rc : w->fn.domain(name, w->arg);
}

int store_domain_list(struct store_txn *t,
		      int (*fn)(const char *name, void *arg), void *arg)
{
	return walk(t, DB_DOMAINS, NULL, 0, domain_each,
		    &(struct walk_ctx){.fn.domain = fn, .arg = arg});
}

/* --- messages and their reference counts ------------------------------- */

static int ref_change(struct store_txn *t, uint64_t id, int delta)
{
	unsigned char kb[8], vb[4];
	MDB_val k = {8, kb}, v;
	int rc;

	put_u64(kb, id);
	if ((rc = get(t, DB_MSGREFS, &k, &v)) < 0)
		return rc;
	if (v.mv_size != 4)
		return store_err(t, MDB_CORRUPTED);
	if (delta < 0 && get_u32(v.mv_data) <= 1) /* the body goes too */
		return (rc = del(t, DB_MSGREFS, &k)) < 0
			   ? rc
			   : del(t, DB_MESSAGES, &k);
	put_u32(vb, get_u32(v.mv_data) + (uint32_t)delta);
	v = (MDB_val){4, vb};
	return put(t, DB_MSGREFS, &k, &v, 0);
}

int store_msg_put(struct store_txn *t, size_t len, uint64_t *id, void **dst)
{
	MDB_cursor *c = NULL;
	unsigned char kb[8], zero[4] = {0};
	MDB_val k, v;
	uint64_t next = 1;
	int rc;

	/* Ids are never reused: a POP3 session's snapshot may name a message
	 * that is deleted meanwhile (user del), and must not then find
	 * another one under its id. The counter lives in meta; a store that
	 * predates it starts after the largest id. */
	MDB_val mk = {7, "next_id"};
	unsigned char nb[8];
	if ((rc = store_err(
		 t, mdb_cursor_open(t->txn, t->st->dbi[DB_MESSAGES], &c))) < 0)
		goto fail;
	rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
	if (rc == 0 && k.mv_size == 8)
		next = get_u64(k.mv_data) + 1;
	else if (rc == 0)
		rc = MDB_CORRUPTED;
	if ((rc = store_err(t, rc == MDB_NOTFOUND ? 0 : rc)) < 0)
		goto fail;
	if ((rc = get(t, DB_META, &mk, &v)) == 0 && v.mv_size == 8 &&
	    get_u64(v.mv_data) > next)
		next = get_u64(v.mv_data);
	else if (rc < 0 && rc != -ENOENT)
		goto fail;
	put_u64(nb, next + 1);
	v = (MDB_val){8, nb};
	if ((rc = put(t, DB_META, &mk, &v, 0)) < 0)
		goto fail;
	put_u64(kb, next);
	k = (MDB_val){8, kb};
	v = (MDB_val){4, zero};
	if ((rc = put(t, DB_MSGREFS, &k, &v, MDB_NOOVERWRITE)) < 0)
		goto fail;
	/* Reserved last: LMDB keeps the space ours only until the next write.
	 */
	v = (MDB_val){len, NULL};
	if ((rc = put(t, DB_MESSAGES, &k, &v, MDB_RESERVE | MDB_APPEND)) < 0)
		goto fail;
	*id = next;
	*dst = v.mv_data;
fail:
	mdb_cursor_close(c);
	return rc;
}

int store_msg_get(struct store_txn *t, uint64_t id, const void **data,
		  size_t *len)
{
	unsigned char kb[8];
	MDB_val k = {8, kb}, v;
	int rc;

	put_u64(kb, id);
	if ((rc = get(t, DB_MESSAGES, &k, &v)) == 0) {
		*data = v.mv_data;
		*len = v.mv_size;
	}
	return rc;
}

int store_msg_count(struct store_txn *t, uint64_t *count)
{
	MDB_stat ms;
	int rc = store_err(t, mdb_stat(t->txn, t->st->dbi[DB_MESSAGES], &ms));

	*count = rc == 0 ? ms.ms_entries : 0;
	return rc;
}

/* --- users ------------------------------------------------------------- */

/* Decodes a record of schema 2 (fixed = USER_FIXED) or, for the upgrade
 * only, of schema 1 (USER_FIXED_V1: no usage, which reads as 0). */
static int user_decode_fixed(const MDB_val *v, size_t fixed,
			     struct store_user *u)
{
	const char *p = v->mv_data;

	if (v->mv_size < fixed || v->mv_size > fixed + STORE_HASH_MAX)
		return store_err(NULL, MDB_CORRUPTED);
	u->flags = get_u32(p);
	u->quota = get_u64(p + 4); /* written 0 before quotas: no limit */
	u->next_uid = get_u32(p + 12);
	u->used = fixed == USER_FIXED ? get_u64(p + 16) : 0;
	u->messages = fixed == USER_FIXED ? get_u32(p + 24) : 0;
	memcpy(u->hash, p + fixed, v->mv_size - fixed);
	u->hash[v->mv_size - fixed] = '\0';
	return 0;
}

static int user_decode(const MDB_val *v, struct store_user *u)
{
	return user_decode_fixed(v, USER_FIXED, u);
}

static int user_put(struct store_txn *t, struct key *a,
		    const struct store_user *u, unsigned flags)
{
	unsigned char rec[USER_FIXED + STORE_HASH_MAX];
	size_t hlen = strlen(u->hash);
	MDB_val v = {USER_FIXED + hlen, rec};

	put_u32(rec, u->flags);
	put_u64(rec + 4, u->quota);
	put_u32(rec + 12, u->next_uid);
	put_u64(rec + 16, u->used);
	put_u32(rec + 24, u->messages);
	memcpy(rec + USER_FIXED, u->hash, hlen);
	return put(t, DB_USERS, &a->k, &v, flags);
}

bool store_user_fits(const struct store_user *u, uint64_t size)
{
	return u->quota == 0 ||
	       (u->used <= u->quota && size <= u->quota - u->used);
}

bool store_user_full(const struct store_user *u)
{
	return u->quota != 0 && u->used >= u->quota;
}

static int user_find(struct store_txn *t, struct key *a, const char *addr,
		     struct store_user *u)
{
	MDB_val v;
	int rc = KEY(a, addr, true);

	if (rc == 0 && (rc = get(t, DB_USERS, &a->k, &v)) == 0)
		rc = user_decode(&v, u);
	return rc;
}

/* For a new user or alias: its domain is local and the name is unused by
 * either, since one name has one meaning. */
static int name_check(struct store_txn *t, struct key *a, const char *addr)
{
	int rc = KEY(a, addr, true);

	if (rc == 0 && (rc = store_domain_exists(t, a->dom)) == 0)
		rc = -ENOENT;
	if (rc > 0 && (rc = has(t, DB_USERS, &a->k)) == 0)
		rc = has(t, DB_ALIASES, &a->k);
	return rc > 0 ? -EEXIST : rc;
}

int store_user_add(struct store_txn *t, const char *addr, const char *hash)
{
	struct store_user u = {.next_uid = 1};
	struct key a;
	int rc;

	if (hash == NULL || strlen(hash) > STORE_HASH_MAX)
		return -EINVAL;
	if ((rc = name_check(t, &a, addr)) < 0)
		return rc;
	/* UIDs must not repeat even for an address deleted and added again
	 * (RFC 1939 7): a mailbox never holds more messages than were ever
	 * stored, so starting at the message counter is always past them. */
	MDB_val mk = {7, "next_id"}, v;
	if (get(t, DB_META, &mk, &v) == 0 && v.mv_size == 8 &&
	    get_u64(v.mv_data) < UINT32_MAX)
		u.next_uid = (uint32_t)get_u64(v.mv_data);
	strcpy(u.hash, hash);
	return user_put(t, &a, &u, MDB_NOOVERWRITE);
}

static int mail_first(const struct store_mail *m, void *arg)
{
	*(uint32_t *)arg = m->uid;
	return 1;
}

static int mbox_remove(struct store_txn *t, const struct key *a, uint32_t uid,
		       uint64_t id, uint64_t *size);

int store_user_del(struct store_txn *t, const char *addr)
{
	struct store_user u;
	struct key a;
	uint32_t uid;
	uint64_t size;
	int rc;

	if ((rc = user_find(t, &a, addr, &u)) < 0)
		return rc;
	/* Empty the mailbox first: each entry drops its message reference.
	 * The usage goes with the record. */
	while ((rc = store_mailbox_list(t, addr, mail_first, &uid)) == 1)
		if ((rc = mbox_remove(t, &a, uid, 0, &size)) < 0)
			return rc;
	return rc < 0 ? rc : del(t, DB_USERS, &a.k);
}

int store_user_set_hash(struct store_txn *t, const char *addr, const char *hash)
{
	struct store_user u;
	struct key a;
	int rc;

	if (hash == NULL || strlen(hash) > STORE_HASH_MAX)
		return -EINVAL;
	if ((rc = user_find(t, &a, addr, &u)) < 0)
		return rc;
	strcpy(u.hash, hash);
	return user_put(t, &a, &u, 0);
}

int store_user_set_flags(struct store_txn *t, const char *addr, uint32_t flags)
{
	struct store_user u;
	struct key a;
	int rc;

	if ((rc = user_find(t, &a, addr, &u)) < 0)
		return rc;
	u.flags = flags;
	return user_put(t, &a, &u, 0);
}

int store_user_set_quota(struct store_txn *t, const char *addr, uint64_t quota)
{
	struct store_user u;
	struct key a;
	int rc;

	if ((rc = user_find(t, &a, addr, &u)) < 0)
		return rc;
	u.quota = quota;
	return user_put(t, &a, &u, 0);
}

static MDB_val mbox_key(const struct key *a, uint32_t uid, unsigned char *kb);

/* store_user_rename: the first mailbox entry left under the old name,
 * its value whole (id, size and this copy's own trace header). */
struct rename_entry {
	uint32_t uid;
	size_t len;
	unsigned char v[16 + STORE_TRACE_MAX];
};

static int rename_first(MDB_val *k, MDB_val *v, void *ctx)
{
	struct rename_entry *e = ctx;

	if (v->mv_size < 16 || v->mv_size > sizeof e->v || k->mv_size < 5)
		return store_err(NULL, MDB_CORRUPTED);
	e->uid = get_u32((const char *)k->mv_data + k->mv_size - 4);
	e->len = v->mv_size;
	memcpy(e->v, v->mv_data, v->mv_size);
	return 1;
}

/* An alias whose targets name from gets to instead. */
static int rename_alias(struct store_txn *t, MDB_val *k, MDB_val *v,
			const struct key *from, const struct key *to)
{
	char old[STORE_ALIAS_MAX + 1], neu[STORE_ALIAS_MAX + 1];
	char *save, *tok;
	size_t n = 0;
	bool hit = false;
	MDB_val nv;

	if (v->mv_size > STORE_ALIAS_MAX)
		return store_err(t, MDB_CORRUPTED);
	memcpy(old, v->mv_data, v->mv_size);
	old[v->mv_size] = '\0';
	for (tok = strtok_r(old, ",", &save); tok != NULL;
	     tok = strtok_r(NULL, ",", &save)) {
		bool is = strcmp(tok, from->s) == 0;
		const char *name = is ? to->s : tok;
		hit |= is;
		if (n + 1 + strlen(name) > STORE_ALIAS_MAX)
			return -EINVAL;
		n += (size_t)sprintf(neu + n, "%s%s", n ? "," : "", name);
	}
	if (!hit)
		return 0;
	nv = (MDB_val){n, neu};
	return put(t, DB_ALIASES, k, &nv, 0);
}

struct rename_aliases {
	struct store_txn *t;
	const struct key *from, *to;
	MDB_val keys[64];
	char names[64][STORE_ADDR_MAX + 1];
	size_t n;
};

/* Collects aliases naming from (written after the walk: a cursor must
 * not see its own writes). At most 64 per pass; the caller loops. */
static int rename_scan(MDB_val *k, MDB_val *v, void *ctx)
{
	struct rename_aliases *r = ctx;
	const char *p = v->mv_data, *end = p + v->mv_size, *comma;
	size_t flen = r->from->k.mv_size;

	for (; p < end; p = comma + 1) {
		comma = memchr(p, ',', (size_t)(end - p));
		comma = comma != NULL ? comma : end;
		if ((size_t)(comma - p) == flen &&
		    memcmp(p, r->from->s, flen) == 0) {
			if (k->mv_size > STORE_ADDR_MAX)
				return store_err(NULL, MDB_CORRUPTED);
			memcpy(r->names[r->n], k->mv_data, k->mv_size);
			r->keys[r->n] = (MDB_val){k->mv_size, r->names[r->n]};
			return ++r->n == 64 ? 1 : 0;
		}
	}
	return 0;
}

int store_user_rename(struct store_txn *t, const char *from, const char *to)
{
	unsigned char ka[STORE_ADDR_MAX + 5], kb[STORE_ADDR_MAX + 5];
	struct rename_aliases *ra;
	struct rename_entry e;
	struct store_user u;
	struct key a, b;
	bool more;
	int rc;

	if ((rc = user_find(t, &a, from, &u)) < 0)
		return rc;
	if ((rc = name_check(t, &b, to)) < 0)
		return rc;
	/* The mailbox, entry by entry, uids kept (they are the UIDL). */
	while ((rc = walk(t, DB_MAILBOX, a.s, a.k.mv_size + 1, rename_first,
			  &e)) == 1) {
		MDB_val ok = mbox_key(&a, e.uid, ka),
			nk = mbox_key(&b, e.uid, kb);
		MDB_val v = {e.len, e.v};
		if ((rc = put(t, DB_MAILBOX, &nk, &v, MDB_NOOVERWRITE)) < 0 ||
		    (rc = del(t, DB_MAILBOX, &ok)) < 0)
			return rc;
	}
	if (rc < 0)
		return rc;
	if ((rc = del(t, DB_USERS, &a.k)) < 0 ||
	    (rc = user_put(t, &b, &u, MDB_NOOVERWRITE)) < 0)
		return rc;
	ra = xmalloc(sizeof *ra);
	do {
		*ra = (struct rename_aliases){.t = t, .from = &a, .to = &b};
		rc = walk(t, DB_ALIASES, NULL, 0, rename_scan, ra);
		more = rc == 1;
		for (size_t i = 0; rc >= 0 && i < ra->n; i++) {
			MDB_val v;
			if ((rc = get(t, DB_ALIASES, &ra->keys[i], &v)) == 0)
				rc = rename_alias(t, &ra->keys[i], &v, &a, &b);
		}
	} while (rc >= 0 && more);
	free(ra);
	return rc < 0 ? rc : 0;
}

int store_user_get(struct store_txn *t, const char *addr, struct store_user *u)
{
	struct key a;

	return user_find(t, &a, addr, u);
}

static int user_each(MDB_val *k, MDB_val *v, void *ctx)
{
	struct walk_ctx *w = ctx;
	char addr[STORE_ADDR_MAX + 1];
	struct store_user u;
	int rc = name_copy(k, addr, STORE_ADDR_MAX);

	if (rc == 0)
		rc = user_decode(v, &u);
	return rc < 0 ? rc : w->fn.user(addr, &u, w->arg);
}

int store_user_list(struct store_txn *t,
		    int (*fn)(const char *addr, const struct store_user *u,
			      void *arg),
		    void *arg)
{
	return walk(t, DB_USERS, NULL, 0, user_each,
		    &(struct walk_ctx){.fn.user = fn, .arg = arg});
}

/* --- aliases ----------------------------------------------------------- */

int store_alias_add(struct store_txn *t, const char *alias, const char *targets)
{
	char norm[STORE_ALIAS_MAX + 1];
	const char *p, *end;
	struct key a, u;
	size_t n = 0, len;
	MDB_val v;
	int rc;

	if (targets == NULL)
		return -EINVAL;
	if ((rc = name_check(t, &a, alias)) < 0)
		return rc;
	/* Kept normalised ("a@x,b@y") so resolving only splits on ','. */
	for (p = targets;; p = end + 1) {
		end = strchr(p, ',');
		end = end != NULL ? end : p + strlen(p);
		p += strspn(p, " \t");
		for (len = (size_t)(end - p);
		     len > 0 && strchr(" \t", p[len - 1]);)
			len--;
		if ((rc = key_make(&u, p, len, true)) < 0)
			return rc;
		if (n + 1 + len > STORE_ALIAS_MAX)
			return -EINVAL;
		if ((rc = has(t, DB_USERS, &u.k)) <= 0)
			return rc == 0 ? -ENOENT : rc;
		n += (size_t)sprintf(norm + n, "%s%s", n ? "," : "", u.s);
		if (*end == '\0')
			break;
	}
	v = (MDB_val){n, norm};
	return put(t, DB_ALIASES, &a.k, &v, MDB_NOOVERWRITE);
}

int store_alias_del(struct store_txn *t, const char *alias)
{
	struct key a;
	int rc = KEY(&a, alias, true);

	return rc < 0 ? rc : del(t, DB_ALIASES, &a.k);
}

static int alias_each(MDB_val *k, MDB_val *v, void *ctx)
{
	struct walk_ctx *w = ctx;
	char alias[STORE_ADDR_MAX + 1], targets[STORE_ALIAS_MAX + 1];
	int rc = name_copy(k, alias, STORE_ADDR_MAX);

	if (rc == 0)
		rc = name_copy(v, targets, STORE_ALIAS_MAX);
	return rc < 0 ? rc : w->fn.alias(alias, targets, w->arg);
}

int store_alias_list(struct store_txn *t,
		     int (*fn)(const char *alias, const char *targets,
			       void *arg),
		     void *arg)
{
	return walk(t, DB_ALIASES, NULL, 0, alias_each,
		    &(struct walk_ctx){.fn.alias = fn, .arg = arg});
}

/* Every name met so far, users and aliases: drops duplicate users and
 * stops alias loops. */
struct resolve {
	struct store_txn *t;
	char **seen;
	size_t nseen;
	void (*fn)(const char *user, void *arg);
	void *arg;
	int users;
};

static int resolve_name(struct resolve *r, MDB_val *k, int depth)
{
	const char *p, *end, *comma;
	MDB_val v, tk;
	char *name;
	int rc;

	for (size_t i = 0; i < r->nseen; i++)
		if (strlen(r->seen[i]) == k->mv_size &&
		    memcmp(r->seen[i], k->mv_data, k->mv_size) == 0)
			return 0;
	r->seen = xrealloc(r->seen, (r->nseen + 1) * sizeof *r->seen);
	name = r->seen[r->nseen++] = xmalloc(k->mv_size + 1);
	name_copy(k, name, k->mv_size);
	if ((rc = has(r->t, DB_USERS, k)) > 0) {
		r->fn(name, r->arg);
		r->users++;
	}
	if (rc != 0)
		return rc < 0 ? rc : 0;
	rc = get(r->t, DB_ALIASES, k, &v);
	if (rc == -ENOENT) /* a target deleted since */
		return 0;
	if (rc < 0 || depth == RESOLVE_DEPTH)
		return rc;
	/* v stays valid: nothing is written while we resolve. */
	for (p = v.mv_data, end = p + v.mv_size; p < end; p = comma + 1) {
		comma = memchr(p, ',', (size_t)(end - p));
		comma = comma != NULL ? comma : end;
		tk = (MDB_val){(size_t)(comma - p), (void *)p};
		if ((rc = resolve_name(r, &tk, depth + 1)) < 0)
			return rc;
	}
	return 0;
}

int store_rcpt_resolve(struct store_txn *t, const char *addr,
		       void (*fn)(const char *user, void *arg), void *arg)
{
	struct resolve r = {.t = t, .fn = fn, .arg = arg};
	struct key a;
	int rc = KEY(&a, addr, true);

	if (rc == 0)
		rc = resolve_name(&r, &a.k, 0);
	for (size_t i = 0; i < r.nseen; i++)
		free(r.seen[i]);
	free(r.seen);
	return rc < 0 ? rc : r.users > 0 ? r.users : -ENOENT;
}

/* --- mailboxes --------------------------------------------------------- */

#define MBOX_FIXED 16 /* u64 id, u64 size; then the trace */

/* Builds a's mailbox key for uid in kb. */
static MDB_val mbox_key(const struct key *a, uint32_t uid, unsigned char *kb)
{
	memcpy(kb, a->s, a->k.mv_size + 1);
	put_u32(kb + a->k.mv_size + 1, uid);
	return (MDB_val){a->k.mv_size + 5, kb};
}

static int mail_decode(const MDB_val *k, const MDB_val *v, struct store_mail *m)
{
	if (v->mv_size < MBOX_FIXED ||
	    v->mv_size > MBOX_FIXED + STORE_TRACE_MAX || k->mv_size < 5)
		return store_err(NULL, MDB_CORRUPTED);
	m->uid = get_u32((const char *)k->mv_data + k->mv_size - 4);
	m->id = get_u64(v->mv_data);
	m->size = get_u64((const char *)v->mv_data + 8);
	m->trace = (const char *)v->mv_data + MBOX_FIXED;
	m->trace_len = v->mv_size - MBOX_FIXED;
	return 0;
}

int store_mailbox_add_trace(struct store_txn *t, const char *user, uint64_t id,
			    const char *trace, uint32_t *uid)
{
	unsigned char kb[STORE_ADDR_MAX + 5], vb[MBOX_FIXED + STORE_TRACE_MAX];
	size_t tlen = trace != NULL ? strlen(trace) : 0;
	struct store_user u;
	struct key a;
	const void *data = NULL;
	MDB_val k, v = {MBOX_FIXED + tlen, vb};
	size_t len = 0;
	int rc;

	if (tlen > STORE_TRACE_MAX)
		return -EINVAL;
	if ((rc = user_find(t, &a, user, &u)) < 0 ||
	    (rc = store_msg_get(t, id, &data, &len)) < 0)
		return rc;
	if (u.next_uid == UINT32_MAX) /* POP3 UIDs must never wrap */
		return -ENOSPC;
	k = mbox_key(&a, u.next_uid, kb);
	put_u64(vb, id);
	put_u64(vb + 8, tlen + len);
	if (tlen > 0)
		memcpy(vb + MBOX_FIXED, trace, tlen);
	if ((rc = put(t, DB_MAILBOX, &k, &v, MDB_NOOVERWRITE)) < 0 ||
	    (rc = ref_change(t, id, +1)) < 0)
		return rc;
	if (uid != NULL)
		*uid = u.next_uid;
	u.next_uid++;
	u.used += tlen + len;
	u.messages++;
	return user_put(t, &a, &u, 0);
}

int store_mailbox_add(struct store_txn *t, const char *user, uint64_t id,
		      uint32_t *uid)
{
	return store_mailbox_add_trace(t, user, id, NULL, uid);
}

int store_mailbox_get(struct store_txn *t, const char *user, uint32_t uid,
		      struct store_mail *m)
{
	unsigned char kb[STORE_ADDR_MAX + 5];
	struct key a;
	MDB_val k, v;
	int rc;

	if ((rc = KEY(&a, user, true)) < 0)
		return rc;
	k = mbox_key(&a, uid, kb);
	if ((rc = get(t, DB_MAILBOX, &k, &v)) < 0)
		return rc;
	return mail_decode(&k, &v, m);
}

/* Removes entry uid of a's mailbox if it holds id (0: any) and drops its
 * reference; its size in *size. The user's usage is the caller's. */
static int mbox_remove(struct store_txn *t, const struct key *a, uint32_t uid,
		       uint64_t id, uint64_t *size)
{
	unsigned char kb[STORE_ADDR_MAX + 5];
	struct store_mail m;
	MDB_val k, v;
	int rc;

	k = mbox_key(a, uid, kb);
	if ((rc = get(t, DB_MAILBOX, &k, &v)) < 0 ||
	    (rc = mail_decode(&k, &v, &m)) < 0)
		return rc;
	if (id != 0 && m.id != id)
		return -ENOENT; /* the entry is another message now */
	*size = m.size;
	return (rc = del(t, DB_MAILBOX, &k)) < 0 ? rc : ref_change(t, m.id, -1);
}

int store_mailbox_del(struct store_txn *t, const char *user, uint32_t uid,
		      uint64_t id)
{
	struct store_user u;
	struct key a;
	uint64_t size;
	int rc;

	if ((rc = user_find(t, &a, user, &u)) < 0 ||
	    (rc = mbox_remove(t, &a, uid, id, &size)) < 0)
		return rc;
	/* Never short; if it were, a deletion must still go through (the
	 * user is cleaning up): the count stops at 0 rather than wrap. */
	if (u.used < size || u.messages == 0)
		log_msg(LOG_WARN, "store",
			"event=usage_short user=%s used=%llu messages=%u "
			"size=%llu",
			log_str(a.s), (unsigned long long)u.used, u.messages,
			(unsigned long long)size);
	u.used -= u.used < size ? u.used : size;
	u.messages -= u.messages > 0;
	return user_put(t, &a, &u, 0);
}

static int mail_each(MDB_val *k, MDB_val *v, void *ctx)
{
	struct walk_ctx *w = ctx;
	struct store_mail m;
	int rc = mail_decode(k, v, &m);

	return rc < 0 ? rc : w->fn.mail(&m, w->arg);
}

int store_mailbox_list(struct store_txn *t, const char *user,
		       int (*fn)(const struct store_mail *m, void *arg),
		       void *arg)
{
	struct walk_ctx w = {.fn.mail = fn, .arg = arg};
	struct key a;
	int rc = KEY(&a, user, true);

	/* The address with its NUL prefixes exactly this user's entries. */
	return rc < 0
		   ? rc
		   : walk(t, DB_MAILBOX, a.s, a.k.mv_size + 1, mail_each, &w);
}

/* Adds one entry to a usage (the upgrade's walk of a mailbox). */
static int usage_add(MDB_val *k, MDB_val *v, void *ctx)
{
	struct store_user *u = ctx;
	struct store_mail m = {0};
	int rc = mail_decode(k, v, &m);

	if (rc == 0) {
		u->used += m.size;
		u->messages++;
	}
	return rc;
}

/* store_open, on a store of schema 1: rewrites every user record with its
 * mailbox's usage, counted once. No cursor stays open across a write:
 * each step looks up the first user after the last one done (a name never
 * holds 0x00, so name 0x00 sorts right after it and before the next). */
static int users_upgrade(struct store_txn *t)
{
	char after[STORE_ADDR_MAX + 1];
	size_t alen = 0;
	unsigned n = 0;
	int rc;

	for (;;) {
		MDB_cursor *c = NULL;
		MDB_val k = {alen, after}, v;
		struct store_user u;
		struct key a;

		rc = mdb_cursor_open(t->txn, t->st->dbi[DB_USERS], &c);
		if (rc == 0)
			rc = mdb_cursor_get(c, &k, &v,
					    alen ? MDB_SET_RANGE : MDB_FIRST);
		if (rc == 0 &&
		    ((rc = key_make(&a, k.mv_data, k.mv_size, true)) < 0 ||
		     (rc = user_decode_fixed(&v, USER_FIXED_V1, &u)) < 0))
			rc = MDB_CORRUPTED;
		mdb_cursor_close(c);
		if (rc != 0) {
			rc = rc == MDB_NOTFOUND ? 0 : store_err(t, rc);
			break;
		}
		if ((rc = walk(t, DB_MAILBOX, a.s, a.k.mv_size + 1, usage_add,
			       &u)) < 0 ||
		    (rc = user_put(t, &a, &u, 0)) < 0)
			break;
		memcpy(after, a.s, a.k.mv_size + 1); /* with its NUL */
		alen = a.k.mv_size + 1;
		n++;
	}
	log_msg(rc == 0 ? LOG_INFO : LOG_ERROR, "store",
		"event=schema_upgrade from=1 to=%d users=%u result=%s",
		STORE_SCHEMA_VERSION, n, rc == 0 ? "ok" : "failed");
	return rc;
}

/* --- queue ------------------------------------------------------------- */

#define QUEUE_FIXED 12 /* u64 next_attempt, u32 attempts; then the strings */

/* A recipient or sender as the queue keeps it: at most STORE_ADDR_MAX
 * octets (empty only for a sender: <>), no control character, which
 * would break the encoding or a log line. Case is kept: a remote
 * mailbox's local part is the remote host's to interpret. */
static bool queue_name_ok(const char *s, bool empty_ok)
{
	size_t n = s != NULL ? strlen(s) : 0;

	if (s == NULL || (n == 0 && !empty_ok) || n > STORE_ADDR_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < ' ' || s[i] == 0x7f)
			return false;
	return true;
}

/* Builds the key of (id, recipient) in kb (8 + STORE_ADDR_MAX octets). */
static MDB_val queue_key(uint64_t id, const char *rcpt, unsigned char *kb)
{
	size_t n = strlen(rcpt);

	put_u64(kb, id);
	memcpy(kb + 8, rcpt, n);
	return (MDB_val){8 + n, kb};
}

int store_queue_add(struct store_txn *t, uint64_t id, const char *recipient,
		    const char *sender, uint64_t next_attempt)
{
	unsigned char kb[8 + STORE_ADDR_MAX],
	    vb[QUEUE_FIXED + STORE_ADDR_MAX + 2];
	const void *data;
	size_t len, slen;
	MDB_val k, v;
	int rc;

	if (!queue_name_ok(recipient, false) || !queue_name_ok(sender, true))
		return -EINVAL;
	if ((rc = store_msg_get(t, id, &data, &len)) < 0)
		return rc;
	k = queue_key(id, recipient, kb);
	slen = strlen(sender);
	put_u64(vb, next_attempt);
	put_u32(vb + 8, 0);
	memcpy(vb + QUEUE_FIXED, sender, slen + 1); /* and its NUL */
	vb[QUEUE_FIXED + slen + 1] = '\0';	    /* no last error yet */
	v = (MDB_val){QUEUE_FIXED + slen + 2, vb};
	if ((rc = put(t, DB_QUEUE, &k, &v, MDB_NOOVERWRITE)) < 0)
		return rc;
	return ref_change(t, id, +1);
}

int store_queue_del(struct store_txn *t, uint64_t id, const char *recipient)
{
	unsigned char kb[8 + STORE_ADDR_MAX];
	MDB_val k;
	int rc;

	if (!queue_name_ok(recipient, false))
		return -EINVAL;
	k = queue_key(id, recipient, kb);
	if ((rc = del(t, DB_QUEUE, &k)) < 0)
		return rc;
	return ref_change(t, id, -1);
}

int store_queue_has(struct store_txn *t, uint64_t id, const char *recipient)
{
	unsigned char kb[8 + STORE_ADDR_MAX];
	MDB_val k;

	if (!queue_name_ok(recipient, false))
		return -EINVAL;
	k = queue_key(id, recipient, kb);
	return has(t, DB_QUEUE, &k);
}

/* The value after the two strings may hold u64 arrival (written by the
 * first retry: until then next_attempt, set when the entry was queued, is
 * its arrival). */
int store_queue_retry(struct store_txn *t, uint64_t id, const char *recipient,
		      uint64_t next_attempt, const char *last_error)
{
	unsigned char kb[8 + STORE_ADDR_MAX],
	    vb[QUEUE_FIXED + STORE_ADDR_MAX + 1 + STORE_QUEUE_ERROR_MAX + 1 +
	       8];
	const char *p, *nul, *end;
	size_t slen, elen = strnlen(last_error, STORE_QUEUE_ERROR_MAX);
	uint64_t arrival;
	MDB_val k, v;
	int rc;

	if (!queue_name_ok(recipient, false))
		return -EINVAL;
	k = queue_key(id, recipient, kb);
	if ((rc = get(t, DB_QUEUE, &k, &v)) < 0)
		return rc;
	p = (const char *)v.mv_data + QUEUE_FIXED;
	end = (const char *)v.mv_data + v.mv_size;
	if (v.mv_size < QUEUE_FIXED + 2 ||
	    (nul = memchr(p, '\0', (size_t)(end - p))) == NULL ||
	    (slen = (size_t)(nul - p)) > STORE_ADDR_MAX)
		return store_err(t, MDB_CORRUPTED);
	nul = memchr(nul + 1, '\0', (size_t)(end - nul - 1));
	if (nul == NULL)
		return store_err(t, MDB_CORRUPTED);
	arrival = end - nul - 1 >= 8 ? get_u64(nul + 1) : get_u64(v.mv_data);
	put_u64(vb, next_attempt);
	put_u32(vb + 8, get_u32((const char *)v.mv_data + 8) + 1);
	memcpy(vb + QUEUE_FIXED, p, slen + 1);
	memcpy(vb + QUEUE_FIXED + slen + 1, last_error, elen);
	vb[QUEUE_FIXED + slen + 1 + elen] = '\0';
	put_u64(vb + QUEUE_FIXED + slen + 2 + elen, arrival);
	v = (MDB_val){QUEUE_FIXED + slen + 2 + elen + 8, vb};
	return put(t, DB_QUEUE, &k, &v, 0);
}

static int queue_each(MDB_val *k, MDB_val *v, void *ctx)
{
	struct walk_ctx *w = ctx;
	const char *p = (const char *)v->mv_data + QUEUE_FIXED, *str[2];
	const char *end = (const char *)v->mv_data + v->mv_size;
	char rcpt[STORE_ADDR_MAX + 1];
	MDB_val rk = {k->mv_size - 8, (char *)k->mv_data + 8};
	struct store_queue_entry e;

	if (k->mv_size <= 8 || v->mv_size < QUEUE_FIXED ||
	    name_copy(&rk, rcpt, STORE_ADDR_MAX) < 0)
		return store_err(NULL, MDB_CORRUPTED);
	for (int i = 0; i < 2; i++) { /* two NUL-terminated strings */
		const char *nul = memchr(p, '\0', (size_t)(end - p));
		if (nul == NULL)
			return store_err(NULL, MDB_CORRUPTED);
		str[i] = p;
		p = nul + 1;
	}
	e = (struct store_queue_entry){
	    .id = get_u64(k->mv_data),
	    .recipient = rcpt,
	    .sender = str[0],
	    .next_attempt = get_u64(v->mv_data),
	    .attempts = get_u32((const char *)v->mv_data + 8),
	    .last_error = str[1],
	    .arrival = end - p >= 8 ? get_u64(p) : get_u64(v->mv_data),
	};
	return w->fn.queue(&e, w->arg);
}

int store_meta_get(struct store_txn *t, const char *key, void *buf,
		   size_t cap)
{
	MDB_val k = {strlen(key), (void *)key}, v;
	int rc = get(t, DB_META, &k, &v);

	if (rc < 0)
		return rc;
	if (v.mv_size > cap)
		return -ENOSPC;
	memcpy(buf, v.mv_data, v.mv_size);
	return (int)v.mv_size;
}

int store_meta_put(struct store_txn *t, const char *key, const void *data,
		   size_t len)
{
	MDB_val k = {strlen(key), (void *)key}, v = {len, (void *)data};

	t->added += k.mv_size + v.mv_size; /* it may be new: not room's */
	return put(t, DB_META, &k, &v, 0);
}

int store_queue_count(struct store_txn *t, uint64_t *count)
{
	MDB_stat ms;
	int rc = store_err(t, mdb_stat(t->txn, t->st->dbi[DB_QUEUE], &ms));

	*count = rc == 0 ? ms.ms_entries : 0;
	return rc;
}

int store_queue_list(struct store_txn *t,
		     int (*fn)(const struct store_queue_entry *e, void *arg),
		     void *arg)
{
	return walk(t, DB_QUEUE, NULL, 0, queue_each,
		    &(struct walk_ctx){.fn.queue = fn, .arg = arg});
}

int store_queue_list_id(struct store_txn *t, uint64_t id,
			int (*fn)(const struct store_queue_entry *e, void *arg),
			void *arg)
{
	unsigned char kb[8];

	put_u64(kb, id);
	return walk(t, DB_QUEUE, kb, sizeof kb, queue_each,
		    &(struct walk_ctx){.fn.queue = fn, .arg = arg});
}
