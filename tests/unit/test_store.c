/* test_store.c - the LMDB store (store/store.c), its commit thread
 * (store/commit.c) and its map (store/map.c), each test in a fresh mkdtemp
 * directory. Raw LMDB is used only to forge what the API refuses to write
 * (other schema versions, alias loops, queue entries) or to read what it
 * does not show; store_priv.h only to watch the map and its gate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store/store_priv.h"

struct fx {
	char dir[64];
	struct store *st;
	uv_loop_t loop; /* here, not on a test's stack: teardown may need it */
	bool mounted;	/* dir is a tmpfs of the test's */
};

static int fx_setup(void **state)
{
	struct fx *fx = calloc(1, sizeof *fx);

	strcpy(fx->dir, "/tmp/test_store.XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	*state = fx;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *fx = *state;
	char path[128];

	/* A test that failed with the commit thread running left it so. */
	if (fx->st != NULL && fx->st->loop != NULL) {
		store_commit_stop(fx->st);
		uv_run(&fx->loop, UV_RUN_DEFAULT);
		uv_loop_close(&fx->loop);
	}
	store_close(fx->st);
	snprintf(path, sizeof path, "%s/data.mdb", fx->dir);
	unlink(path);
	snprintf(path, sizeof path, "%s/lock.mdb", fx->dir);
	unlink(path);
	if (fx->mounted)
		umount2(fx->dir, MNT_DETACH);
	rmdir(fx->dir);
	free(fx);
	return 0;
}

static struct store_txn *wtxn(struct store *st)
{
	struct store_txn *t;

	assert_int_equal(store_txn_begin(st, true, &t), 0);
	return t;
}

static struct store_txn *rtxn(struct store *st)
{
	struct store_txn *t;

	assert_int_equal(store_txn_begin(st, false, &t), 0);
	return t;
}

/* Writes key -> val into named db dbname behind the store's back. */
static void raw_put(const char *dir, const char *dbname, const void *key,
		    size_t klen, const void *val, size_t vlen)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};

	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 16), 0);
	assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, dbname, MDB_CREATE, &dbi), 0);
	assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

/* Reads key from named db dbname behind the store's back into buf (the
 * store must be closed); returns the value's length. */
static size_t raw_get(const char *dir, const char *dbname, const void *key,
		      size_t klen, void *buf, size_t max)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = {klen, (void *)key}, v;

	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 16), 0);
	assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, dbname, 0, &dbi), 0);
	assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
	assert_true(v.mv_size <= max);
	memcpy(buf, v.mv_data, v.mv_size);
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return v.mv_size;
}

/* A store with domain x.test and users alice, bob, carol. */
static void populate(struct store *st)
{
	struct store_txn *t = wtxn(st);

	assert_int_equal(store_domain_add(t, "x.test"), 0);
	assert_int_equal(store_user_add(t, "alice@x.test", "$y$a"), 0);
	assert_int_equal(store_user_add(t, "bob@x.test", "$y$b"), 0);
	assert_int_equal(store_user_add(t, "carol@x.test", "$y$c"), 0);
	assert_int_equal(store_txn_commit(t), 0);
}

static uint64_t msg_count(struct store *st)
{
	struct store_txn *t = rtxn(st);
	uint64_t n;

	assert_int_equal(store_msg_count(t, &n), 0);
	store_txn_abort(t);
	return n;
}

/* Stores body in one transaction and files it to n users. */
static uint64_t deliver(struct store *st, const char *body, const char **users,
			int n, uint32_t *uids)
{
	struct store_txn *t = wtxn(st);
	uint64_t id;
	void *dst;

	assert_int_equal(store_msg_put(t, strlen(body), &id, &dst), 0);
	memcpy(dst, body, strlen(body));
	for (int i = 0; i < n; i++)
		assert_int_equal(
		    store_mailbox_add(t, users[i], id, uids ? &uids[i] : NULL),
		    0);
	assert_int_equal(store_txn_commit(t), 0);
	return id;
}

/* --- schema ------------------------------------------------------------ */

static void test_schema(void **state)
{
	struct fx *fx = *state;
	unsigned char v3[4] = {0, 0, 0, 3}, v1[4] = {0, 0, 0, 1};

	assert_int_equal(store_open(fx->dir, 0, &fx->st), 0);
	store_close(fx->st);
	fx->st = NULL;
	assert_int_equal(store_open(fx->dir, 0, &fx->st), 0); /* reopen */
	store_close(fx->st);
	fx->st = NULL;

	raw_put(fx->dir, "meta", "schema", 6, v3, 4);
	assert_int_equal(store_open(fx->dir, 0, &fx->st), -EPROTO);
	assert_null(fx->st);
	raw_put(fx->dir, "meta", "schema", 6, v1, 3); /* truncated */
	assert_int_equal(store_open(fx->dir, 0, &fx->st), -EPROTO);
	raw_put(fx->dir, "meta", "schema", 6, v1, 4); /* upgraded */
	assert_int_equal(store_open(fx->dir, 0, &fx->st), 0);
	store_close(fx->st);
	fx->st = NULL;
	assert_int_equal(raw_get(fx->dir, "meta", "schema", 6, v1, 4), 4);
	assert_memory_equal(v1, "\0\0\0\2", 4);
}

/* --- domains, users, aliases ------------------------------------------- */

static int collect(const char *name, void *arg)
{
	char *out = arg;

	strcat(out, name);
	strcat(out, ";");
	return 0;
}

static int stop_at_second(const char *name, void *arg)
{
	(void)name;
	return ++*(int *)arg == 2 ? 42 : 0;
}

static void test_domains(void **state)
{
	struct fx *fx = *state;
	struct store_txn *t;
	char out[256] = "";
	int n = 0;

	assert_int_equal(store_open(fx->dir, 0, &fx->st), 0);
	t = wtxn(fx->st);
	assert_int_equal(store_domain_add(t, "b.test"), 0);
	assert_int_equal(store_domain_add(t, "A.Test"), 0);
	assert_int_equal(store_domain_add(t, "a.TEST"), -EEXIST);
	assert_int_equal(store_domain_add(t, ""), -EINVAL);
	assert_int_equal(store_domain_add(t, "a@b"), -EINVAL);
	assert_int_equal(store_domain_add(t, "a b"), -EINVAL);
	assert_int_equal(store_txn_commit(t), 0);

	t = rtxn(fx->st);
	assert_int_equal(store_domain_exists(t, "a.test"), 1);
	assert_int_equal(store_domain_exists(t, "B.TEST"), 1);
	assert_int_equal(store_domain_exists(t, "c.test"), 0);
	assert_int_equal(store_domain_list(t, collect, out), 0);
	assert_string_equal(out, "a.test;b.test;");
	assert_int_equal(store_domain_list(t, stop_at_second, &n), 42);
	store_txn_abort(t);

	t = wtxn(fx->st);
	assert_int_equal(store_domain_del(t, "A.test"), 0);
	assert_int_equal(store_domain_del(t, "a.test"), -ENOENT);
	assert_int_equal(store_domain_exists(t, "a.test"), 0);
	assert_int_equal(store_txn_commit(t), 0);
}

static int collect_user(const char *addr, const struct store_user *u, void *arg)
{
	char *out = arg;

	sprintf(out + strlen(out), "%s=%s/%u;", addr, u->hash, u->next_uid);
	return 0;
}

static void test_users(void **state)
{
	struct fx *fx = *state;
	struct store_user u;
	struct store_txn *t;
	char out[256] = "", longhash[STORE_HASH_MAX + 2];

	assert_int_equal(store_open(fx->dir, 0, &fx->st), 0);
	t = wtxn(fx->st);
	assert_int_equal(store_user_add(t, "a@x.test", "h"), -ENOENT);
	assert_int_equal(store_domain_add(t, "x.test"), 0);
	assert_int_equal(store_user_add(t, "Alice@X.Test", "$y$h1"), 0);
	assert_int_equal(store_user_add(t, "alice@x.test", "h"), -EEXIST);
	assert_int_equal(store_user_add(t, "noat", "h"), -EINVAL);
	assert_int_equal(store_user_add(t, "@x.test", "h"), -EINVAL);
	assert_int_equal(store_user_add(t, "a@", "h"), -EINVAL);
	memset(longhash, 'h', sizeof longhash - 1);
	longhash[sizeof longhash - 1] = '\0';
	assert_int_equal(store_user_add(t, "b@x.test", longhash), -EINVAL);
	assert_int_equal(store_user_add(t, "bob@x.test", "$y$h2"), 0);
	assert_int_equal(store_alias_add(t, "team@x.test", "bob@x.test"), 0);
	assert_int_equal(store_user_add(t, "Team@x.test", "h"), -EEXIST);
	assert_int_equal(store_user_set_hash(t, "BOB@x.test", "$y$h3"), 0);
	assert_int_equal(store_user_set_hash(t, "zed@x.test", "h"), -ENOENT);
	assert_int_equal(store_txn_commit(t), 0);

	t = rtxn(fx->st);
	assert_int_equal(store_user_get(t, "ALICE@x.test", &u), 0);
	assert_string_equal(u.hash, "$y$h1");
	assert_int_equal(u.flags, 0);
	assert_int_equal(u.next_uid, 1);
	assert_int_equal(store_user_get(t, "zed@x.test", &u), -ENOENT);
	assert_int_equal(store_user_list(t, collect_user, out), 0);
	assert_string_equal(out, "alice@x.test=$y$h1/1;bob@x.test=$y$h3/1;");
	store_txn_abort(t);

	t = wtxn(fx->st);
	assert_int_equal(store_user_del(t, "alice@x.test"), 0);
	assert_int_equal(store_user_del(t, "alice@x.test"), -ENOENT);
	assert_int_equal(store_user_get(t, "alice@x.test", &u), -ENOENT);
	assert_int_equal(store_txn_commit(t), 0);
}

static int collect_alias(const char *alias, const char *targets, void *arg)
{
	char *out = arg;

	sprintf(out + strlen(out), "%s=%s;", alias, targets);
	return 0;
}

/* The record: u32 flags, u64 quota (0 = no limit), u32 next uid, u64
 * octets used, u32 messages, then the hash; every field survives every
 * other change to the record. */
static void test_user_record(void **state)
{
	struct fx *fx = *state;
	unsigned char rec[64];
	struct store_user u;
	struct store_txn *t;

	assert_int_equal(store_open(fx->dir, 0, &fx->st), 0);
	populate(fx->st);
	deliver(fx->st, "hello", (const char *[]){"bob@x.test"}, 1, NULL);
	t = wtxn(fx->st);
	assert_int_equal(store_user_set_flags(t, "bob@x.test", 1), 0);
	assert_int_equal(store_user_set_quota(t, "bob@x.test", 0x400), 0);
	assert_int_equal(store_user_set_hash(t, "bob@x.test", "$y$n"), 0);
	assert_int_equal(store_user_get(t, "bob@x.test", &u), 0);
	assert_int_equal(u.flags, STORE_USER_ADMIN);
	assert_int_equal(u.quota, 0x400);
	assert_int_equal(u.next_uid, 2);
	assert_int_equal(u.used, 5);
	assert_int_equal(u.messages, 1);
	assert_string_equal(u.hash, "$y$n");
	assert_int_equal(store_txn_commit(t), 0);
	store_close(fx->st);
	fx->st = NULL;
	assert_int_equal(
	    raw_get(fx->dir, "users", "bob@x.test", 10, rec, sizeof rec),
	    28 + 4);
	assert_memory_equal(rec,
			    "\0\0\0\1"
			    "\0\0\0\0\0\0\4\0"
			    "\0\0\0\2"
			    "\0\0\0\0\0\0\0\5"
			    "\0\0\0\1"
			    "$y$n",
			    32);
}

/* A store of schema 1: user records of 16 octets (flags, quota, next uid)
 * and the hash, no usage. Opening it counts each mailbox once and writes
 * the records anew, in one transaction with the version; the fields kept
 * are unchanged, and the next open finds nothing to do. */
static const unsigned char *v1_record(uint32_t flags, uint32_t quota,
				      uint32_t next_uid, const char *hash,
				      size_t *len)
{
	static unsigned char rec[16 + STORE_HASH_MAX];

	memset(rec, 0, 16);
	for (int i = 0; i < 4; i++) {
		rec[3 - i] = (unsigned char)(flags >> 8 * i);
		rec[11 - i] = (unsigned char)(quota >> 8 * i);
		rec[15 - i] = (unsigned char)(next_uid >> 8 * i);
	}
	memcpy(rec + 16, hash, strlen(hash));
	*len = 16 + strlen(hash);
	return rec;
}

static void test_user_record_upgrade(void **state)
{
	struct fx *fx = *state;
	const char *rp = "Return-Path: <a@b>\r\n"; /* 20 octets */
	unsigned char rec[64], entry[16] = {0}, key[18] = {0}, refs[4] = {0};
	unsigned char v1[4] = {0, 0, 0, 1};
	const unsigned char *old;
	struct store_user u;
	struct store_txn *t;
	uint64_t id, id2;
	size_t len;
	void *dst;

	/* Two users of the new code, one with two messages (one of them with
	 * a trace of its own), then everything of the old layout. */
	assert_int_equal(store_open(fx->dir, 0, &fx->st), 0);
	t = wtxn(fx->st);
	assert_int_equal(store_domain_add(t, "x.test"), 0);
	assert_int_equal(store_user_add(t, "old@x.test", "$y$o"), 0);
	assert_int_equal(store_user_add(t, "none@x.test", "$y$n"), 0);
	assert_int_equal(store_user_add(t, "oldest@x.test", "$y$z"), 0);
	assert_int_equal(store_msg_put(t, 5, &id, &dst), 0);
	memcpy(dst, "hello", 5);
	assert_int_equal(store_mailbox_add_trace(t, "old@x.test", id, rp, NULL),
			 0);
	assert_int_equal(store_msg_put(t, 1000, &id2, &dst), 0);
	memset(dst, 'x', 1000);
	assert_int_equal(store_mailbox_add(t, "old@x.test", id2, NULL), 0);
	assert_int_equal(store_txn_commit(t), 0);
	store_close(fx->st);
	fx->st = NULL;
	old = v1_record(STORE_USER_ADMIN, 0x400, 9, "$y$o", &len);
	raw_put(fx->dir, "users", "old@x.test", 10, old, len);
	old = v1_record(0, 0, 1, "$y$n", &len);
	raw_put(fx->dir, "users", "none@x.test", 11, old, len);
	old = v1_record(0, 0, 8, "$y$z", &len);
	raw_put(fx->dir, "users", "oldest@x.test", 13, old, len);
	/* oldest's entry predates traces: 16 octets, the size in it. */
	memcpy(key, "oldest@x.test", 13); /* then 0x00 and uid 7 */
	key[17] = 7;
	entry[7] = (unsigned char)id, entry[15] = 5;
	raw_put(fx->dir, "mailbox", key, 18, entry, sizeof entry);
	refs[3] = 2; /* old's and oldest's */
	raw_put(fx->dir, "msgrefs", entry, 8, refs, sizeof refs);
	raw_put(fx->dir, "meta", "schema", 6, v1, 4);

	for (int round = 0; round < 2; round++) {
		assert_int_equal(store_open(fx->dir, 0, &fx->st), 0);
		t = rtxn(fx->st);
		assert_int_equal(store_user_get(t, "old@x.test", &u), 0);
		assert_int_equal(u.flags, STORE_USER_ADMIN);
		assert_int_equal(u.quota, 0x400);
		assert_int_equal(u.next_uid, 9);
		assert_string_equal(u.hash, "$y$o");
		assert_int_equal(u.used, 20 + 5 + 1000);
		assert_int_equal(u.messages, 2);
		assert_int_equal(store_user_get(t, "none@x.test", &u), 0);
		assert_int_equal(u.used, 0);
		assert_int_equal(u.messages, 0);
		assert_string_equal(u.hash, "$y$n");
		assert_int_equal(store_user_get(t, "oldest@x.test", &u), 0);
		assert_int_equal(u.used, 5);
		assert_int_equal(u.messages, 1);
		assert_int_equal(u.next_uid, 8);
		store_txn_abort(t);
		store_close(fx->st);
		fx->st = NULL;
		assert_int_equal(raw_get(fx->dir, "meta", "schema", 6, v1, 4),
				 4);
		assert_memory_equal(v1, "\0\0\0\2", 4);
		assert_int_equal(raw_get(fx->dir, "users", "old@x.test", 10,
					 rec, sizeof rec),
				 28 + 4);
		assert_memory_equal(rec + 16,
				    "\0\0\0\0\0\0\4\1"
				    "\0\0\0\2"
				    "$y$o",
				    16);
	}
}

/* The usage kept in the record, and the one a walk of the mailbox finds:
 * they must agree after every change. */
static int usage_sum(const struct store_mail *m, void *arg)
{
	struct store_user *sum = arg;

	sum->used += m->size;
	sum->messages++;
	return 0;
}

static void assert_usage(struct store *st, const char *user, uint64_t used,
			 uint32_t messages)
{
	struct store_user u, sum = {.used = 0};
	struct store_txn *t = rtxn(st);

	assert_int_equal(store_user_get(t, user, &u), 0);
	assert_int_equal(store_mailbox_list(t, user, usage_sum, &sum), 0);
	store_txn_abort(t);
	assert_int_equal(u.used, used);
	assert_int_equal(u.messages, messages);
	assert_int_equal(sum.used, used);
	assert_int_equal(sum.messages, messages);
}

/* Every change to a mailbox changes its usage in the same transaction:
 * adding (trace included), deleting (as POP3's QUIT does), a rename (it
 * moves with the mailbox), a user deleted and added again (starts at 0);
 * an aborted transaction changes nothing. */
static void test_usage(void **state)
{
	struct fx *fx = *state;
	const char *rp = "Return-Path: <a@b>\r\n"; /* 20 octets */
	struct store_user u;
	struct store_txn *t;
	uint64_t id, id2;
	uint32_t uid, uid2;
	void *dst;

	assert_int_equal(store_open(fx->dir, 0, &fx->st), 0);
	populate(fx->st);
	assert_usage(fx->st, "alice@x.test", 0, 0);
	t = wtxn(fx->st);
	assert_int_equal(store_msg_put(t, 100, &id, &dst), 0);
	memset(dst, 'a', 100);
	assert_int_equal(
	    store_mailbox_add_trace(t, "alice@x.test", id, rp, &uid), 0);
	assert_int_equal(store_mailbox_add(t, "bob@x.test", id, NULL), 0);
	assert_int_equal(store_msg_put(t, 1000, &id2, &dst), 0);
	memset(dst, 'b', 1000);
	assert_int_equal(
	    store_mailbox_add_trace(t, "Alice@x.test", id2, rp, &uid2), 0);
	assert_int_equal(store_txn_commit(t), 0);
	assert_usage(fx->st, "alice@x.test", 120 + 1020, 2);
	assert_usage(fx->st, "bob@x.test", 100, 1);
	assert_usage(fx->st, "carol@x.test", 0, 0);

	/* Aborted: nothing changes. */
	t = wtxn(fx->st);
	assert_int_equal(store_mailbox_del(t, "alice@x.test", uid2, id2), 0);
	store_txn_abort(t);
	assert_usage(fx->st, "alice@x.test", 1140, 2);

	/* A deletion, and a miss (wrong id, no such uid, no such user). */
	t = wtxn(fx->st);
	assert_int_equal(store_mailbox_del(t, "alice@x.test", uid2, id),
			 -ENOENT);
	assert_int_equal(store_mailbox_del(t, "alice@x.test", 999, 0), -ENOENT);
	assert_int_equal(store_mailbox_del(t, "zed@x.test", uid2, 0), -ENOENT);
	assert_int_equal(store_mailbox_del(t, "alice@x.test", uid2, id2), 0);
	assert_int_equal(store_txn_commit(t), 0);
	assert_usage(fx->st, "alice@x.test", 120, 1);

	/* Other changes to the record keep it; a rename moves it. */
	t = wtxn(fx->st);
	assert_int_equal(store_user_set_quota(t, "alice@x.test", 500), 0);
	assert_int_equal(store_user_set_hash(t, "alice@x.test", "$y$z"), 0);
	assert_int_equal(store_user_set_flags(t, "alice@x.test", 1), 0);
	assert_int_equal(store_user_rename(t, "alice@x.test", "ann@x.test"), 0);
	assert_int_equal(store_txn_commit(t), 0);
	assert_usage(fx->st, "ann@x.test", 120, 1);

	/* Deleted and added again: an empty mailbox; bob's copy stays. */
	t = wtxn(fx->st);
	assert_int_equal(store_user_del(t, "ann@x.test"), 0);
	assert_int_equal(store_user_add(t, "ann@x.test", "$y$a"), 0);
	assert_int_equal(store_user_get(t, "ann@x.test", &u), 0);
	assert_int_equal(u.quota, 0);
	assert_int_equal(store_txn_commit(t), 0);
	assert_usage(fx->st, "ann@x.test", 0, 0);
	assert_usage(fx->st, "bob@x.test", 100, 1);
	assert_int_equal(msg_count(fx->st), 1);
}

/* What fits under a quota: a mailbox may reach it exactly; at it or over
 * it (a quota lowered below the usage) nothing fits; 0 is no limit. */
static void test_quota_fits(void **state)
{
	struct store_user u = {.quota = 0, .used = UINT64_MAX - 1};

	(void)state;
	assert_true(store_user_fits(&u, UINT64_MAX));
	assert_false(store_user_full(&u));
	u = (struct store_user){.quota = 1000, .used = 0};
	assert_true(store_user_fits(&u, 1000));
	assert_false(store_user_fits(&u, 1001));
	assert_false(store_user_fits(&u, UINT64_MAX));
	assert_false(store_user_full(&u));
	u.used = 999;
	assert_true(store_user_fits(&u, 1));
	assert_false(store_user_fits(&u, 2));
	assert_false(store_user_full(&u));
	u.used = 1000;
	assert_true(store_user_full(&u));
	assert_false(store_user_fits(&u, 1));
	u.used = 5000;
	assert_true(store_user_full(&u));
	assert_false(store_user_fits(&u, 1));
	assert_false(store_user_fits(&u, 0));
}

static int collect_mail_id(const struct store_mail *m, void *arg)
{
	char *out = arg;

	sprintf(out + strlen(out), "%u:%llu;", m->uid,
		(unsigned long long)m->id);
	return 0;
}

/* Flags, quota and a rename: the mailbox moves with its uids, aliases
 * follow, the old name is free again. */
static void test_user_rename_quota(void **state)
{
	struct fx *fx = *state;
	char before[256] = "", after[256] = "", aliases[512] = "";
	struct store_user u;
	struct store_txn *t;
	uint64_t id;
	void *dst;

	assert_int_equal(store_open(fx->dir, 0, &fx->st), 0);
	populate(fx->st);
	t = wtxn(fx->st);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(store_msg_put(t, 5, &id, &dst), 0);
		memcpy(dst, "hello", 5);
		assert_int_equal(store_mailbox_add(t, "bob@x.test", id, NULL),
				 0);
	}
	assert_int_equal(store_alias_add(t, "team@x.test", "bob@x.test"), 0);
	assert_int_equal(store_user_set_flags(t, "bob@x.test", 1), 0);
	assert_int_equal(store_user_set_quota(t, "bob@x.test", 1u << 30), 0);
	assert_int_equal(store_user_set_quota(t, "nobody@x.test", 1), -ENOENT);
	assert_int_equal(
	    store_mailbox_list(t, "bob@x.test", collect_mail_id, before), 0);
	assert_int_equal(store_user_rename(t, "bob@x.test", "alice@x.test"),
			 -EEXIST);
	assert_int_equal(store_user_rename(t, "bob@x.test", "b@nowhere.test"),
			 -ENOENT);
	assert_int_equal(store_user_rename(t, "ghost@x.test", "g2@x.test"),
			 -ENOENT);
	assert_int_equal(store_user_rename(t, "BOB@x.test", "Rob@x.test"), 0);
	assert_int_equal(store_txn_commit(t), 0);

	t = wtxn(fx->st);
	assert_int_equal(store_user_get(t, "bob@x.test", &u), -ENOENT);
	assert_int_equal(store_user_get(t, "rob@x.test", &u), 0);
	assert_int_equal(u.flags, 1);
	assert_int_equal(u.quota, 1u << 30);
	assert_string_equal(u.hash, "$y$b");
	assert_int_equal(
	    store_mailbox_list(t, "rob@x.test", collect_mail_id, after), 0);
	assert_string_equal(before, after);
	assert_true(strlen(after) > 0);
	assert_int_equal(
	    store_mailbox_list(t, "bob@x.test", collect_mail_id, aliases), 0);
	assert_string_equal(aliases, "");
	assert_int_equal(store_alias_list(t, collect_alias, aliases), 0);
	assert_string_equal(aliases, "team@x.test=rob@x.test;");
	assert_int_equal(store_user_add(t, "bob@x.test", "$y$x"), 0);
	assert_int_equal(store_txn_commit(t), 0);
}

static void collect_rcpt(const char *user, void *arg)
{
	collect(user, arg);
}

static int resolve(struct store *st, const char *addr, char *out)
{
	struct store_txn *t = rtxn(st);
	int rc;

	out[0] = '\0';
	rc = store_rcpt_resolve(t, addr, collect_rcpt, out);
	store_txn_abort(t);
	return rc;
}

static void test_aliases(void **state)
{
	struct fx *fx = *state;
	struct store_txn *t;
	char out[512] = "";

	assert_int_equal(store_open(fx->dir, 0, &fx->st), 0);
	populate(fx->st);
	t = wtxn(fx->st);
	assert_int_equal(store_alias_add(t, "t@y.test", "alice@x.test"),
			 -ENOENT); /* alias domain not local */
	assert_int_equal(
	    store_alias_add(t, "t@x.test", "alice@x.test,zed@x.test"), -ENOENT);
	assert_int_equal(store_alias_add(t, "t@x.test", "team@x.test"),
			 -ENOENT);
	assert_int_equal(store_alias_add(t, "t@x.test", ""), -EINVAL);
	assert_int_equal(store_alias_add(t, "t@x.test", "alice@x.test,"),
			 -EINVAL);
	assert_int_equal(store_alias_add(t, "alice@x.test", "bob@x.test"),
			 -EEXIST);
	assert_int_equal(
	    store_alias_add(t, "Team@x.test",
			    " Alice@x.test , bob@x.test,carol@x.test"),
	    0);
	assert_int_equal(store_alias_add(t, "team@x.test", "bob@x.test"),
			 -EEXIST);
	assert_int_equal(
	    store_alias_add(t, "dup@x.test", "alice@x.test,ALICE@x.test"), 0);
	assert_int_equal(store_txn_commit(t), 0);

	t = rtxn(fx->st);
	assert_int_equal(store_alias_list(t, collect_alias, out), 0);
	assert_string_equal(out, "dup@x.test=alice@x.test,alice@x.test;"
				 "team@x.test=alice@x.test,bob@x.test,"
				 "carol@x.test;");
	store_txn_abort(t);

	assert_int_equal(resolve(fx->st, "ALICE@x.test", out), 1);
	assert_string_equal(out, "alice@x.test;");
	assert_int_equal(resolve(fx->st, "team@x.test", out), 3);
	assert_string_equal(out, "alice@x.test;bob@x.test;carol@x.test;");
	assert_int_equal(resolve(fx->st, "dup@x.test", out), 1);
	assert_int_equal(resolve(fx->st, "zed@x.test", out), -ENOENT);
	assert_int_equal(resolve(fx->st, "", out), -EINVAL);

	/* Bob leaves; his mail goes to carol and alice: team now reaches an
	 * alias, and every user once. */
	t = wtxn(fx->st);
	assert_int_equal(store_user_del(t, "bob@x.test"), 0);
	assert_int_equal(
	    store_alias_add(t, "bob@x.test", "carol@x.test,alice@x.test"), 0);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(resolve(fx->st, "team@x.test", out), 2);
	assert_string_equal(out, "alice@x.test;carol@x.test;");

	/* An alias whose only target is gone reaches nobody. */
	t = wtxn(fx->st);
	assert_int_equal(store_user_del(t, "alice@x.test"), 0);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(resolve(fx->st, "dup@x.test", out), -ENOENT);

	t = wtxn(fx->st);
	assert_int_equal(store_alias_del(t, "DUP@x.test"), 0);
	assert_int_equal(store_alias_del(t, "dup@x.test"), -ENOENT);
	assert_int_equal(store_txn_commit(t), 0);
}

/* Loops and over-deep chains cannot be made through the API (targets must
 * be users when added), so forge them and check resolution stays bounded. */
static void test_alias_loops_depth(void **state)
{
	struct fx *fx = *state;
	char out[512], a[32], b[64];

	assert_int_equal(store_open(fx->dir, 0, &fx->st), 0);
	populate(fx->st);
	store_close(fx->st);
	fx->st = NULL;
	raw_put(fx->dir, "aliases", "l1@x.test", 9, "l2@x.test", 9);
	raw_put(fx->dir, "aliases", "l2@x.test", 9,
		"l1@x.test,bob@x.test,l2@x.test", 29);
	raw_put(fx->dir, "aliases", "l3@x.test", 9, "l3@x.test", 9);
	/* c0 -> c1 -> ... -> c9 -> alice */
	for (int i = 0; i < 10; i++) {
		snprintf(a, sizeof a, "c%d@x.test", i);
		if (i < 9)
			snprintf(b, sizeof b, "c%d@x.test", i + 1);
		else
			strcpy(b, "alice@x.test");
		raw_put(fx->dir, "aliases", a, strlen(a), b, strlen(b));
	}
	assert_int_equal(store_open(fx->dir, 0, &fx->st), 0);
	assert_int_equal(resolve(fx->st, "l1@x.test", out), 1);
	assert_string_equal(out, "bob@x.test;");
	assert_int_equal(resolve(fx->st, "l3@x.test", out), -ENOENT);
	assert_int_equal(resolve(fx->st, "c2@x.test", out), 1); /* 8 deep */
	assert_int_equal(resolve(fx->st, "c1@x.test", out), -ENOENT);
}

/* --- messages and mailboxes -------------------------------------------- */

static int collect_mail(const struct store_mail *m, void *arg)
{
	char *out = arg;

	sprintf(out + strlen(out), "%u:%llu;", m->uid,
		(unsigned long long)m->size);
	return 0;
}

static void test_refcount(void **state)
{
	struct fx *fx = *state;
	const char *users[] = {"alice@x.test", "bob@x.test", "carol@x.test"};
	struct store_txn *t;
	const void *data;
	size_t len;
	uint64_t id, id2;
	uint32_t uids[3];
	char out[64] = "";

	assert_int_equal(store_open(fx->dir, 0, &fx->st), 0);
	populate(fx->st);
	id = deliver(fx->st, "Subject: hi\r\n\r\nbody\r\n", users, 3, uids);
	assert_int_equal(msg_count(fx->st), 1); /* stored once */
	for (int i = 0; i < 3; i++)
		assert_int_equal(uids[i], 1);

	t = rtxn(fx->st);
	assert_int_equal(store_msg_get(t, id, &data, &len), 0);
	assert_int_equal(len, 21);
	assert_memory_equal(data, "Subject: hi\r\n\r\nbody\r\n", len);
	assert_int_equal(store_mailbox_list(t, "BOB@x.test", collect_mail, out),
			 0);
	assert_string_equal(out, "1:21;");
	store_txn_abort(t);

	for (int i = 0; i < 3; i++) {
		t = wtxn(fx->st);
		assert_int_equal(store_mailbox_del(t, users[i], 1, 0), 0);
		assert_int_equal(store_mailbox_del(t, users[i], 1, 0), -ENOENT);
		assert_int_equal(store_txn_commit(t), 0);
		assert_int_equal(msg_count(fx->st), i < 2 ? 1 : 0);
	}
	t = rtxn(fx->st);
	assert_int_equal(store_msg_get(t, id, &data, &len), -ENOENT);
	store_txn_abort(t);

	/* Deleting users drops their references too. */
	id2 = deliver(fx->st, "x", users, 2, NULL);
	t = wtxn(fx->st);
	assert_int_equal(store_mailbox_add(t, "zed@x.test", id2, NULL),
			 -ENOENT);
	assert_int_equal(store_mailbox_add(t, "alice@x.test", 999, NULL),
			 -ENOENT);
	assert_int_equal(store_user_del(t, "alice@x.test"), 0);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(msg_count(fx->st), 1);
	t = wtxn(fx->st);
	assert_int_equal(store_user_del(t, "bob@x.test"), 0);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(msg_count(fx->st), 0);
}

static int stop_first(const struct store_mail *m, void *arg)
{
	*(uint32_t *)arg = m->uid;
	return 7;
}

static void test_uids(void **state)
{
	struct fx *fx = *state;
	const char *alice[] = {"alice@x.test"};
	struct store_txn *t;
	uint32_t uid, first = 0;
	char out[128] = "";

	assert_int_equal(store_open(fx->dir, 0, &fx->st), 0);
	populate(fx->st);
	t = wtxn(fx->st);
	assert_int_equal(store_domain_add(t, "x.testy"), 0);
	assert_int_equal(store_user_add(t, "alice@x.testy", "h"), 0);
	assert_int_equal(store_txn_commit(t), 0);

	for (uint32_t i = 1; i <= 3; i++) {
		deliver(fx->st, "abc", alice, 1, &uid);
		assert_int_equal(uid, i);
	}
	t = wtxn(fx->st);
	assert_int_equal(store_mailbox_del(t, "alice@x.test", 3, 0), 0);
	assert_int_equal(store_txn_commit(t), 0);
	deliver(fx->st, "defg", alice, 1, &uid);
	assert_int_equal(uid, 4); /* 3 is never handed out again */

	t = wtxn(fx->st);
	for (uint32_t i = 1; i <= 4; i++)
		assert_int_equal(store_mailbox_del(t, "alice@x.test", i, 0),
				 i == 3 ? -ENOENT : 0);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(msg_count(fx->st), 0);
	deliver(fx->st, "abc", alice, 1, &uid);
	assert_int_equal(uid, 5);
	deliver(fx->st, "de", alice, 1, &uid);
	const char *other[] = {"alice@x.testy"};
	deliver(fx->st, "other", other, 1, &uid);
	assert_int_equal(uid, 1);

	t = rtxn(fx->st);
	/* a@x.test's list holds none of a@x.testy's entries. */
	assert_int_equal(
	    store_mailbox_list(t, "alice@x.test", collect_mail, out), 0);
	assert_string_equal(out, "5:3;6:2;");
	assert_int_equal(
	    store_mailbox_list(t, "alice@x.test", stop_first, &first), 7);
	assert_int_equal(first, 5);
	out[0] = '\0';
	assert_int_equal(
	    store_mailbox_list(t, "carol@x.test", collect_mail, out), 0);
	assert_string_equal(out, "");
	store_txn_abort(t);
}

/* Message ids are never reused, even once the newest message is gone: a
 * POP3 snapshot holding an old id must not find another message there. */
static void test_msg_ids(void **state)
{
	struct fx *fx = *state;
	const char *alice[] = {"alice@x.test"};
	struct store_txn *t;
	uint64_t a, b, c;
	uint32_t uid;

	assert_int_equal(store_open(fx->dir, 0, &fx->st), 0);
	populate(fx->st);
	a = deliver(fx->st, "one", alice, 1, &uid);
	b = deliver(fx->st, "two", alice, 1, &uid);
	assert_true(b > a);
	t = wtxn(fx->st);
	assert_int_equal(store_mailbox_del(t, "alice@x.test", uid, 0), 0);
	assert_int_equal(store_txn_commit(t), 0);
	c = deliver(fx->st, "three", alice, 1, &uid);
	assert_true(c > b);
	/* The same after a reopen: the counter is in the store. */
	t = wtxn(fx->st);
	assert_int_equal(store_mailbox_del(t, "alice@x.test", uid, 0), 0);
	assert_int_equal(store_txn_commit(t), 0);
	store_close(fx->st);
	assert_int_equal(store_open(fx->dir, 0, &fx->st), 0);
	assert_true(deliver(fx->st, "four", alice, 1, &uid) > c);

	/* Deleting by uid checks the message is still the one meant. */
	t = wtxn(fx->st);
	assert_int_equal(store_mailbox_del(t, "alice@x.test", uid, c), -ENOENT);
	store_txn_abort(t);

	/* An address deleted and added again never sees an old uid again
	 * (RFC 1939 7: a client may remember them). */
	t = wtxn(fx->st);
	assert_int_equal(store_user_del(t, "alice@x.test"), 0);
	assert_int_equal(store_user_add(t, "alice@x.test", "$y$a"), 0);
	assert_int_equal(store_txn_commit(t), 0);
	{
		uint32_t old = uid;
		deliver(fx->st, "five", alice, 1, &uid);
		assert_true(uid > old);
	}
}

/* Mailbox entries with a trace of their own: the size counts it, a
 * reader gets it apart from the shared body, and entries written before
 * traces existed (16 octets, the body holding its own Return-Path) read
 * as entries without one. */
static int collect_trace(const struct store_mail *m, void *arg)
{
	char *out = arg;

	sprintf(out + strlen(out), "%u:%llu:%.*s;", m->uid,
		(unsigned long long)m->size, (int)m->trace_len, m->trace);
	return 0;
}

static void test_mailbox_trace(void **state)
{
	struct fx *fx = *state;
	const char *body = "Received: x\r\n\r\nhi\r\n"; /* 19 octets */
	const char *rp = "Return-Path: <a@b>\r\n";	/* 20 octets */
	unsigned char old[16] = {0}, key[17], refs[4] = {0};
	struct store_mail m;
	struct store_txn *t;
	char out[256] = "", big[STORE_TRACE_MAX + 2];
	uint64_t id;
	uint32_t uid;
	void *dst;

	assert_int_equal(store_open(fx->dir, 0, &fx->st), 0);
	populate(fx->st);
	t = wtxn(fx->st);
	assert_int_equal(store_msg_put(t, strlen(body), &id, &dst), 0);
	memcpy(dst, body, strlen(body));
	assert_int_equal(
	    store_mailbox_add_trace(t, "alice@x.test", id, rp, &uid), 0);
	assert_int_equal(uid, 1);
	assert_int_equal(store_mailbox_add_trace(t, "bob@x.test", id, "", NULL),
			 0);
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	assert_int_equal(
	    store_mailbox_add_trace(t, "carol@x.test", id, big, NULL), -EINVAL);
	assert_int_equal(store_txn_commit(t), 0);

	t = rtxn(fx->st);
	assert_int_equal(
	    store_mailbox_list(t, "alice@x.test", collect_trace, out), 0);
	assert_string_equal(out, "1:39:Return-Path: <a@b>\r\n;");
	out[0] = '\0';
	assert_int_equal(
	    store_mailbox_list(t, "bob@x.test", collect_trace, out), 0);
	assert_string_equal(out, "1:19:;");
	assert_int_equal(store_mailbox_get(t, "ALICE@x.test", 1, &m), 0);
	assert_int_equal(m.id, id);
	assert_int_equal(m.size, 39);
	assert_int_equal(m.trace_len, 20);
	assert_memory_equal(m.trace, rp, 20);
	assert_int_equal(store_mailbox_get(t, "alice@x.test", 2, &m), -ENOENT);
	store_txn_abort(t);

	/* An entry of the old shape: id and size only. */
	store_close(fx->st);
	fx->st = NULL;
	memcpy(key, "carol@x.test\0\0\0\0\x07", 17);
	old[7] = (unsigned char)id;
	old[15] = 19;
	raw_put(fx->dir, "mailbox", key, 17, old, sizeof old);
	refs[3] = 3; /* alice, bob and this one */
	raw_put(fx->dir, "msgrefs", old, 8, refs, sizeof refs);
	assert_int_equal(store_open(fx->dir, 0, &fx->st), 0);
	t = rtxn(fx->st);
	out[0] = '\0';
	assert_int_equal(
	    store_mailbox_list(t, "carol@x.test", collect_trace, out), 0);
	assert_string_equal(out, "7:19:;");
	store_txn_abort(t);
	t = wtxn(fx->st);
	assert_int_equal(store_mailbox_del(t, "carol@x.test", 7, id), 0);
	assert_int_equal(store_mailbox_del(t, "alice@x.test", 1, id), 0);
	assert_int_equal(store_txn_commit(t), 0);
	/* Forged behind the usage's back: the count stops at 0, never
	 * wraps, and the deletion went through. */
	assert_usage(fx->st, "carol@x.test", 0, 0);
	assert_int_equal(msg_count(fx->st), 1); /* bob's copy holds it */
	t = wtxn(fx->st);
	assert_int_equal(store_mailbox_del(t, "bob@x.test", 1, id), 0);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(msg_count(fx->st), 0);
}

static int collect_queue(const struct store_queue_entry *e, void *arg)
{
	char *out = arg;

	sprintf(out + strlen(out), "%llu/%s/%s/%llu/%u/%s;",
		(unsigned long long)e->id, e->recipient, e->sender,
		(unsigned long long)e->next_attempt, e->attempts,
		e->last_error);
	return 0;
}

/* A failed attempt moves an entry in time: one attempt more, the error,
 * the arrival kept; the body's reference stays. */
static int queue_first(const struct store_queue_entry *e, void *arg)
{
	struct store_queue_entry *out = arg;

	out->next_attempt = e->next_attempt;
	out->attempts = e->attempts;
	out->arrival = e->arrival;
	snprintf((char *)out->last_error, 64, "%s", e->last_error);
	return 1;
}

static void test_queue_retry(void **state)
{
	struct fx *fx = *state;
	char err[64];
	struct store_queue_entry e = {.last_error = err};
	struct store_txn *t;
	const void *data;
	uint64_t id;
	size_t len;
	void *dst;

	assert_int_equal(store_open(fx->dir, 0, &fx->st), 0);
	t = wtxn(fx->st);
	assert_int_equal(store_msg_put(t, 3, &id, &dst), 0);
	memcpy(dst, "abc", 3);
	assert_int_equal(store_queue_add(t, id, "b@remote.test", "a@x", 1000),
			 0);
	assert_int_equal(
	    store_queue_retry(t, id, "b@remote.test", 1060, "451 4.3.0 later"),
	    0);
	assert_int_equal(store_queue_list(t, queue_first, &e), 1);
	assert_int_equal(e.next_attempt, 1060);
	assert_int_equal(e.attempts, 1);
	assert_int_equal(e.arrival, 1000);
	assert_string_equal(err, "451 4.3.0 later");
	assert_int_equal(store_queue_retry(t, id, "b@remote.test", 1360, "x"),
			 0);
	assert_int_equal(store_queue_list(t, queue_first, &e), 1);
	assert_int_equal(e.attempts, 2);
	assert_int_equal(e.arrival, 1000);
	assert_int_equal(e.next_attempt, 1360);
	assert_int_equal(store_queue_retry(t, id, "c@remote.test", 1, "x"),
			 -ENOENT);
	assert_int_equal(store_msg_get(t, id, &data, &len), 0);
	assert_int_equal(store_queue_del(t, id, "b@remote.test"), 0);
	assert_int_equal(store_msg_get(t, id, &data, &len), -ENOENT);
	assert_int_equal(store_txn_commit(t), 0);
}

static void test_queue(void **state)
{
	struct fx *fx = *state;
	const char *users[] = {"alice@x.test"};
	struct store_txn *t;
	char out[512] = "", addr[STORE_ADDR_MAX + 2];
	unsigned char key[8 + 5] = {0, 0, 0, 0, 0, 0, 0, 9, 'c', '@', 'd'};
	const char val[] = "\0\0\0\0\0\0\0\5\0\0\0\2a@b\0"
			   "451 later";
	uint64_t id, id2;

	assert_int_equal(store_open(fx->dir, 0, &fx->st), 0);
	populate(fx->st);
	t = rtxn(fx->st);
	assert_int_equal(store_queue_list(t, collect_queue, out), 0);
	assert_string_equal(out, "");
	store_txn_abort(t);

	/* One message: a local copy and two remote recipients, whose keys
	 * do not collide; each entry is one reference. */
	id = deliver(fx->st, "Received: x\r\n\r\nbody\r\n", users, 1, NULL);
	t = wtxn(fx->st);
	assert_int_equal(
	    store_queue_add(t, id, "Bob@Remote.test", "a@x.test", 1000), 0);
	assert_int_equal(store_queue_add(t, id, "carol@remote.test", "", 1000),
			 0);
	assert_int_equal(
	    store_queue_add(t, id, "Bob@Remote.test", "a@x.test", 2000),
	    -EEXIST);
	assert_int_equal(store_queue_add(t, 999, "x@y", "a@x.test", 1),
			 -ENOENT);
	assert_int_equal(store_queue_add(t, id, "", "a@x.test", 1), -EINVAL);
	assert_int_equal(store_queue_add(t, id, "a\r\n@y", "", 1), -EINVAL);
	assert_int_equal(store_queue_add(t, id, "x@y", "a\n@b", 1), -EINVAL);
	memset(addr, 'a', sizeof addr - 1);
	addr[sizeof addr - 1] = '\0';
	assert_int_equal(store_queue_add(t, id, addr, "", 1), -EINVAL);
	/* A quoted local part with a space is a fine remote mailbox. */
	assert_int_equal(store_queue_add(t, id, "\"a b\"@remote.test", "", 7),
			 0);
	assert_int_equal(store_txn_commit(t), 0);
	t = rtxn(fx->st);
	assert_int_equal(store_queue_list(t, collect_queue, out), 0);
	assert_string_equal(out, "1/\"a b\"@remote.test//7/0/;"
				 "1/Bob@Remote.test/a@x.test/1000/0/;"
				 "1/carol@remote.test//1000/0/;");
	/* One message's entries alone: none of another's, before or after. */
	out[0] = '\0';
	assert_int_equal(store_queue_list_id(t, id, collect_queue, out), 0);
	assert_string_equal(out, "1/\"a b\"@remote.test//7/0/;"
				 "1/Bob@Remote.test/a@x.test/1000/0/;"
				 "1/carol@remote.test//1000/0/;");
	out[0] = '\0';
	assert_int_equal(store_queue_list_id(t, 0, collect_queue, out), 0);
	assert_int_equal(store_queue_list_id(t, 2, collect_queue, out), 0);
	assert_string_equal(out, "");
	store_txn_abort(t);

	/* The body goes with the last reference, mailbox or queue. */
	t = wtxn(fx->st);
	assert_int_equal(store_mailbox_del(t, "alice@x.test", 1, id), 0);
	assert_int_equal(store_queue_has(t, id, "Bob@Remote.test"), 1);
	assert_int_equal(store_queue_has(t, id, "bob@remote.test"), 0);
	assert_int_equal(store_queue_has(t, id + 1, "Bob@Remote.test"), 0);
	assert_int_equal(store_queue_del(t, id, "Bob@Remote.test"), 0);
	assert_int_equal(store_queue_has(t, id, "Bob@Remote.test"), 0);
	assert_int_equal(store_queue_has(t, id, ""), -EINVAL);
	assert_int_equal(store_queue_del(t, id, "Bob@Remote.test"), -ENOENT);
	assert_int_equal(store_queue_del(t, id, "\"a b\"@remote.test"), 0);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(msg_count(fx->st), 1);
	t = wtxn(fx->st);
	assert_int_equal(store_queue_del(t, id, "carol@remote.test"), 0);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(msg_count(fx->st), 0);

	/* A message only queued, never in a mailbox. */
	t = wtxn(fx->st);
	{
		void *dst;
		assert_int_equal(store_msg_put(t, 4, &id2, &dst), 0);
		memcpy(dst, "x\r\n\r", 4);
		assert_int_equal(
		    store_queue_add(t, id2, "z@remote.test", "", 5), 0);
	}
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(msg_count(fx->st), 1);
	t = wtxn(fx->st);
	assert_int_equal(store_queue_del(t, id2, "z@remote.test"), 0);
	assert_int_equal(store_txn_commit(t), 0);
	assert_int_equal(msg_count(fx->st), 0);

	/* The encoding, written behind the store's back, reads back. */
	store_close(fx->st);
	fx->st = NULL;
	raw_put(fx->dir, "queue", key, 11, val, sizeof val);
	assert_int_equal(store_open(fx->dir, 0, &fx->st), 0);
	t = rtxn(fx->st);
	out[0] = '\0';
	assert_int_equal(store_queue_list(t, collect_queue, out), 0);
	assert_string_equal(out, "9/c@d/a@b/5/2/451 later;");
	store_txn_abort(t);
}

/* --- the commit thread ------------------------------------------------- */

struct tjob {
	struct store_job job;
	const char *user; /* NULL: add domain name; len 0: empty its mailbox */
	char name[32];
	size_t len;
	int fail;	/* run() returns this after its writes */
	uv_sem_t *hold; /* run() waits on it the first time */
	int rc, order;
	int *ndone;
};

static int tjob_run(struct store_txn *t, void *arg)
{
	struct tjob *j = arg;
	uint64_t id;
	void *dst;
	int rc;

	if (j->hold != NULL) /* the first run only: a batch may run again */
		uv_sem_wait(j->hold);
	j->hold = NULL;
	if (j->user == NULL) {
		rc = store_domain_add(t, j->name);
	} else if (j->len == 0) {
		uint32_t uid;
		while ((rc = store_mailbox_list(t, j->user, stop_first,
						&uid)) == 7)
			if ((rc = store_mailbox_del(t, j->user, uid, 0)) < 0)
				break;
	} else {
		rc = store_msg_put(t, j->len, &id, &dst);
		if (rc == 0) {
			memset(dst, j->name[0], j->len);
			rc = store_mailbox_add(t, j->user, id, NULL);
		}
	}
	return rc < 0 ? rc : j->fail;
}

static void tjob_done(void *arg, int rc)
{
	struct tjob *j = arg;

	j->rc = rc;
	j->order = ++*j->ndone;
}

static void tjob_init(struct tjob *j, int *ndone, const char *user, size_t len,
		      const char *fmt, int i)
{
	memset(j, 0, sizeof *j);
	j->job =
	    (struct store_job){.run = tjob_run, .done = tjob_done, .arg = j};
	j->user = user;
	j->len = len;
	j->ndone = ndone;
	j->rc = 1; /* done() not called yet */
	snprintf(j->name, sizeof j->name, fmt, i);
}

static void run_until(uv_loop_t *loop, int *ndone, int n)
{
	while (*ndone < n)
		uv_run(loop, UV_RUN_ONCE);
}

static void stop_and_close(struct store *st, uv_loop_t *loop)
{
	store_commit_stop(st);
	uv_run(loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(loop), 0);
}

static void test_group_commit(void **state)
{
	struct fx *fx = *state;
	struct tjob jobs[50];
	struct store_txn *t;
	uv_loop_t *loop = &fx->loop;
	uint64_t commits, njobs;
	char name[32];
	int ndone = 0;

	assert_int_equal(store_open(fx->dir, 0, &fx->st), 0);
	assert_int_equal(uv_loop_init(loop), 0);
	assert_int_equal(store_commit_start(fx->st, loop), 0);
	for (int i = 0; i < 50; i++) {
		tjob_init(&jobs[i], &ndone, NULL, 0, "d%d.test", i);
		store_commit_submit(fx->st, &jobs[i].job);
	}
	run_until(loop, &ndone, 50);
	for (int i = 0; i < 50; i++) {
		assert_int_equal(jobs[i].rc, 0);
		assert_int_equal(jobs[i].order, i + 1); /* submission order */
	}
	store_commit_stats(fx->st, &commits, &njobs);
	assert_int_equal(njobs, 50);
	assert_true(commits >= 1 && commits < 50);
	t = rtxn(fx->st);
	for (int i = 0; i < 50; i++) {
		snprintf(name, sizeof name, "d%d.test", i);
		assert_int_equal(store_domain_exists(t, name), 1);
	}
	store_txn_abort(t);
	stop_and_close(fx->st, loop);
}

static void test_failing_job(void **state)
{
	struct fx *fx = *state;
	struct tjob hold, j[4];
	struct store_txn *t;
	uv_sem_t sem;
	uv_loop_t *loop = &fx->loop;
	uint64_t commits, njobs;
	int ndone = 0;

	assert_int_equal(store_open(fx->dir, 0, &fx->st), 0);
	populate(fx->st);
	assert_int_equal(uv_sem_init(&sem, 0), 0);
	assert_int_equal(uv_loop_init(loop), 0);
	assert_int_equal(store_commit_start(fx->st, loop), 0);
	/* hold keeps the thread busy, so j[0..3] wait and share one batch. */
	tjob_init(&hold, &ndone, NULL, 0, "hold.test", 0);
	hold.hold = &sem;
	store_commit_submit(fx->st, &hold.job);
	tjob_init(&j[0], &ndone, NULL, 0, "ok1.test", 0);
	tjob_init(&j[1], &ndone, "alice@x.test", 100, "bad", 0);
	j[1].fail = -EPERM; /* wrote a message, then changed its mind */
	tjob_init(&j[2], &ndone, NULL, 0, "x.test", 0); /* exists already */
	tjob_init(&j[3], &ndone, "bob@x.test", 10, "ok2", 0);
	for (int i = 0; i < 4; i++)
		store_commit_submit(fx->st, &j[i].job);
	uv_sem_post(&sem);
	run_until(loop, &ndone, 5);
	assert_int_equal(hold.rc, 0);
	assert_int_equal(j[0].rc, 0);
	assert_int_equal(j[1].rc, -EPERM);
	assert_int_equal(j[2].rc, -EEXIST);
	assert_int_equal(j[3].rc, 0);
	store_commit_stats(fx->st, &commits, &njobs);
	assert_true(commits <= 2);
	assert_int_equal(njobs, 5);

	t = rtxn(fx->st);
	struct store_user u;
	assert_int_equal(store_domain_exists(t, "ok1.test"), 1);
	assert_int_equal(store_user_get(t, "alice@x.test", &u), 0);
	assert_int_equal(u.next_uid, 1); /* j[1]'s bump was undone */
	assert_int_equal(store_user_get(t, "bob@x.test", &u), 0);
	assert_int_equal(u.next_uid, 2);
	uint64_t n;
	assert_int_equal(store_msg_count(t, &n), 0);
	assert_int_equal(n, 1);
	store_txn_abort(t);
	stop_and_close(fx->st, loop);
	uv_sem_destroy(&sem);
}

static void test_commit_stop(void **state)
{
	struct fx *fx = *state;
	struct tjob jobs[5];
	uv_loop_t *loop = &fx->loop;
	int ndone = 0;

	assert_int_equal(store_open(fx->dir, 0, &fx->st), 0);
	assert_int_equal(uv_loop_init(loop), 0);
	assert_int_equal(store_commit_start(fx->st, loop), 0);
	for (int i = 0; i < 5; i++) {
		tjob_init(&jobs[i], &ndone, NULL, 0, "s%d.test", i);
		store_commit_submit(fx->st, &jobs[i].job);
	}
	store_commit_stop(fx->st); /* without running the loop first */
	assert_int_equal(ndone, 5);
	for (int i = 0; i < 5; i++)
		assert_int_equal(jobs[i].rc, 0);
	uv_run(loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(loop), 0);
	/* And it restarts on the same store. */
	assert_int_equal(uv_loop_init(loop), 0);
	assert_int_equal(store_commit_start(fx->st, loop), 0);
	stop_and_close(fx->st, loop);
}

/* --- map growth ------------------------------------------------------- */

#define CAP (8u << 20) /* so the map starts at 2 MiB */

static size_t map_size(struct store *st)
{
	MDB_envinfo info;

	assert_int_equal(mdb_env_info(st->env, &info), 0);
	return info.me_mapsize;
}

static bool gate_closed(struct store *st)
{
	bool closed;

	uv_mutex_lock(&st->map.mu);
	closed = st->map.closed;
	uv_mutex_unlock(&st->map.mu);
	return closed;
}

static void wait_gate_closed(struct store *st)
{
	for (int tries = 0; !gate_closed(st); tries++) {
		assert_true(tries < 10000); /* 10 s */
		usleep(1000);
	}
}

/* A read begun on another thread: its result and the map it saw. */
struct reader {
	struct store *st;
	uv_thread_t thread;
	int rc;
	size_t mapsize;
};

static void reader_main(void *arg)
{
	struct reader *r = arg;
	struct store_txn *t;

	if ((r->rc = store_txn_begin(r->st, false, &t)) == 0) {
		r->mapsize = map_size(r->st);
		store_txn_abort(t);
	}
}

static void test_map_initial(void **state)
{
	struct fx *fx = *state;

	assert_int_equal(store_open(fx->dir, 0, &fx->st), 0);
	assert_int_equal(map_size(fx->st), STORE_MAP_INITIAL);
	/* DESIGN.md: 1 GiB of address space on 64-bit, 64 MiB on 32-bit. */
	assert_int_equal(map_size(fx->st), sizeof(size_t) >= 8
					       ? (size_t)1 << 30
					       : (size_t)64 << 20);
	store_close(fx->st);
	assert_int_equal(store_open(fx->dir, 1ull << 40, &fx->st), 0);
	assert_int_equal(map_size(fx->st), STORE_MAP_INITIAL);
	store_close(fx->st);
	assert_int_equal(store_open(fx->dir, CAP, &fx->st), 0);
	assert_int_equal(map_size(fx->st), CAP / 4); /* a quarter of a cap */
}

/* A read that begins while a growth waits for the open reads to end waits
 * for the growth, and then sees the new map: no -EAGAIN. */
static void test_growth_waits(void **state)
{
	struct fx *fx = *state;
	struct reader r = {.rc = 1};
	struct store_txn *held;
	struct tjob big;
	uv_loop_t *loop = &fx->loop;
	size_t before;
	int ndone = 0;

	assert_int_equal(store_open(fx->dir, CAP, &fx->st), 0);
	populate(fx->st);
	fx->st->map.wait_ms = 60000; /* this test ends the held read itself */
	before = map_size(fx->st);
	assert_int_equal(uv_loop_init(loop), 0);
	assert_int_equal(store_commit_start(fx->st, loop), 0);

	held = rtxn(fx->st); /* open when the job needs more map */
	tjob_init(&big, &ndone, "alice@x.test", 3u << 20, "B", 0);
	store_commit_submit(fx->st, &big.job);
	wait_gate_closed(fx->st);
	r.st = fx->st;
	assert_int_equal(uv_thread_create(&r.thread, reader_main, &r), 0);
	usleep(20000); /* let it reach the gate (passes without, proves less) */
	assert_int_equal(r.rc, 1); /* still waiting */
	store_txn_abort(held);	   /* the last read out lets it grow */
	assert_int_equal(uv_thread_join(&r.thread), 0);
	assert_int_equal(r.rc, 0);
	assert_true(r.mapsize > before); /* it began after the growth */
	run_until(loop, &ndone, 1);
	assert_int_equal(big.rc, 0);
	assert_true(store_file_size(fx->st) > (3u << 20));
	stop_and_close(fx->st, loop);
}

/* A read held open does not hold up commits for long: the growth gives up
 * after wait_ms, the batch fails with -EAGAIN, the gate opens again. A
 * read begun meanwhile on the holder's own thread waits for that, then
 * begins. */
static void test_growth_bounded(void **state)
{
	struct fx *fx = *state;
	struct store_txn *held, *t;
	struct tjob big;
	uv_loop_t *loop = &fx->loop;
	uint64_t start;
	size_t before;
	int ndone = 0;

	assert_int_equal(store_open(fx->dir, CAP, &fx->st), 0);
	populate(fx->st);
	fx->st->map.wait_ms = 100;
	before = map_size(fx->st);
	assert_int_equal(uv_loop_init(loop), 0);
	assert_int_equal(store_commit_start(fx->st, loop), 0);

	held = rtxn(fx->st);
	tjob_init(&big, &ndone, "alice@x.test", 3u << 20, "B", 0);
	start = uv_hrtime();
	store_commit_submit(fx->st, &big.job);
	wait_gate_closed(fx->st);
	t = rtxn(fx->st); /* waits until the growth gives up */
	assert_true(uv_hrtime() - start >= 100 * 1000000ull);
	store_txn_abort(t);
	run_until(loop, &ndone, 1);
	assert_int_equal(big.rc, -EAGAIN);
	assert_int_equal(map_size(fx->st), before);
	assert_false(gate_closed(fx->st));
	store_txn_abort(held);

	/* Nothing held: the same job grows the map and commits. */
	tjob_init(&big, &ndone, "alice@x.test", 3u << 20, "B", 0);
	ndone = 0;
	store_commit_submit(fx->st, &big.job);
	run_until(loop, &ndone, 1);
	assert_int_equal(big.rc, 0);
	assert_true(map_size(fx->st) > before);
	stop_and_close(fx->st, loop);
}

/* Batches of 8 x 256 KiB up to the cap: the map grows twice, the jobs
 * that fit commit, and the full store still serves reads. */
static void test_growth_to_cap(void **state)
{
	struct fx *fx = *state;
	struct tjob small[8];
	struct store_txn *t;
	uv_loop_t *loop = &fx->loop;
	size_t stored = 0;
	uint64_t n;
	int ndone, rc = 0, i;

	assert_int_equal(store_open(fx->dir, CAP, &fx->st), 0);
	populate(fx->st);
	assert_int_equal(uv_loop_init(loop), 0);
	assert_int_equal(store_commit_start(fx->st, loop), 0);
	for (int round = 0; rc != -ENOSPC; round++) {
		assert_true(round < 10);
		ndone = 0;
		for (i = 0; i < 8; i++) {
			tjob_init(&small[i], &ndone, "bob@x.test", 256u << 10,
				  "s", 0);
			store_commit_submit(fx->st, &small[i].job);
		}
		run_until(loop, &ndone, 8);
		for (i = 0; i < 8; i++) {
			rc = small[i].rc;
			if (rc == 0)
				stored += 256u << 10;
			else
				assert_int_equal(rc, -ENOSPC);
		}
	}
	assert_true(stored > 4u << 20); /* grew twice: 2 -> 4 -> 8 MiB */
	assert_true(store_file_size(fx->st) <= CAP);
	assert_int_equal(map_size(fx->st), CAP);

	t = rtxn(fx->st);
	assert_int_equal(store_msg_count(t, &n), 0);
	assert_int_equal(n * (256u << 10), stored);
	store_txn_abort(t);
	stop_and_close(fx->st, loop);
}

/* One job too big for the store fails alone; the others of its batch
 * commit. Too big for the map at the cap (9 MiB), and too big for the room
 * left once the reserve is kept (7.5 MiB fits the map, not the room). */
static void test_oversized_job(void **state)
{
	struct fx *fx = *state;
	struct tjob hold, small[3], big;
	struct store_txn *t;
	uv_sem_t sem;
	uv_loop_t *loop = &fx->loop;
	uint64_t n;
	size_t sizes[] = {9u << 20, 15u << 19};
	int ndone;

	assert_int_equal(store_open(fx->dir, CAP, &fx->st), 0);
	populate(fx->st);
	assert_int_equal(uv_sem_init(&sem, 0), 0);
	assert_int_equal(uv_loop_init(loop), 0);
	assert_int_equal(store_commit_start(fx->st, loop), 0);
	for (int k = 0; k < 2; k++) {
		ndone = 0;
		/* hold keeps the thread busy, so the rest share one batch. */
		tjob_init(&hold, &ndone, NULL, 0, "hold%d.test", k);
		hold.hold = &sem;
		store_commit_submit(fx->st, &hold.job);
		tjob_init(&small[0], &ndone, "bob@x.test", 64u << 10, "a", 0);
		tjob_init(&big, &ndone, "alice@x.test", sizes[k], "B", 0);
		tjob_init(&small[1], &ndone, "bob@x.test", 64u << 10, "b", 0);
		tjob_init(&small[2], &ndone, NULL, 0, "d%d.test", k);
		store_commit_submit(fx->st, &small[0].job);
		store_commit_submit(fx->st, &big.job);
		store_commit_submit(fx->st, &small[1].job);
		store_commit_submit(fx->st, &small[2].job);
		uv_sem_post(&sem);
		run_until(loop, &ndone, 5);
		assert_int_equal(hold.rc, 0);
		assert_int_equal(big.rc, -ENOSPC);
		for (int i = 0; i < 3; i++)
			assert_int_equal(small[i].rc, 0);
		assert_int_equal(big.order, 3); /* reported in order */
	}
	t = rtxn(fx->st);
	assert_int_equal(store_msg_count(t, &n), 0);
	assert_int_equal(n, 4);
	assert_int_equal(store_domain_exists(t, "d1.test"), 1);
	store_txn_abort(t);
	stop_and_close(fx->st, loop);
	uv_sem_destroy(&sem);
}

/* Full at the cap: the user can still empty a mailbox, and the next
 * message fits at once, with nothing else written in between. */
static void test_full_then_delete(void **state)
{
	struct fx *fx = *state;
	struct tjob j;
	uv_loop_t *loop = &fx->loop;
	int ndone = 0, stored = 0, again = 0;

	assert_int_equal(store_open(fx->dir, CAP, &fx->st), 0);
	populate(fx->st);
	assert_int_equal(uv_loop_init(loop), 0);
	assert_int_equal(store_commit_start(fx->st, loop), 0);
	for (j.rc = 0; j.rc == 0; stored++) {
		assert_true(stored < 40);
		tjob_init(&j, &ndone, "bob@x.test", 256u << 10, "f", 0);
		store_commit_submit(fx->st, &j.job);
		run_until(loop, &ndone, ndone + 1);
	}
	assert_int_equal(j.rc, -ENOSPC);
	assert_true(--stored >= 20);

	tjob_init(&j, &ndone, "bob@x.test", 0, "clear", 0);
	store_commit_submit(fx->st, &j.job);
	run_until(loop, &ndone, ndone + 1);
	assert_int_equal(j.rc, 0);
	assert_int_equal(msg_count(fx->st), 0);

	for (j.rc = 0; j.rc == 0; again++) {
		assert_true(again < 40);
		tjob_init(&j, &ndone, "bob@x.test", 256u << 10, "g", 0);
		store_commit_submit(fx->st, &j.job);
		run_until(loop, &ndone, ndone + 1);
	}
	assert_int_equal(j.rc, -ENOSPC);
	assert_true(--again >= stored * 3 / 4);
	stop_and_close(fx->st, loop);
}

/* Writes path until the filesystem has no block left. */
static void take_every_block(const char *path)
{
	static char buf[1 << 16];
	struct statvfs vfs;
	int fd = open(path, O_WRONLY | O_CREAT, 0600);

	assert_true(fd >= 0);
	for (size_t n = sizeof buf; n > 0; n /= 16)
		while (write(fd, buf, n) > 0)
			;
	close(fd);
	assert_int_equal(statvfs(path, &vfs), 0);
	assert_int_equal(vfs.f_bavail, 0);
}

/* On a full disk a batch may fail as a whole although the room looked
 * enough: LMDB counts as free pages it cannot use for a big message
 * (freed runs too short), so it writes past the end, and the disk
 * refuses (a short write, EIO). The jobs are then retried each on its
 * own: the small ones fit in the freed runs and commit; the big one gets
 * -ENOSPC, not -EIO. Needs root to mount a small tmpfs. */
static void test_full_disk_batch(void **state)
{
	struct fx *fx = *state;
	uv_loop_t *loop = &fx->loop;
	struct tjob j, hold, small, big, dom;
	char filler[128];
	uv_sem_t sem;
	int ndone = 0, n;

	if (geteuid() != 0 ||
	    mount("tmpfs", fx->dir, "tmpfs", 0, "size=8m,mode=0700") != 0)
		skip();
	fx->mounted = true;
	assert_int_equal(store_open(fx->dir, 0, &fx->st), 0);
	populate(fx->st);
	assert_int_equal(uv_sem_init(&sem, 0), 0);
	assert_int_equal(uv_loop_init(loop), 0);
	assert_int_equal(store_commit_start(fx->st, loop), 0);
	/* alice's and bob's messages alternate up to the refusal. */
	for (n = 0, j.rc = 0; j.rc == 0; n++) {
		assert_true(n < 100);
		tjob_init(&j, &ndone, n % 2 ? "bob@x.test" : "alice@x.test",
			  100u << 10, "f", 0);
		store_commit_submit(fx->st, &j.job);
		run_until(loop, &ndone, ndone + 1);
	}
	assert_int_equal(j.rc, -ENOSPC);
	assert_true(n > 30);
	tjob_init(&j, &ndone, "alice@x.test", 0, "clear", 0);
	store_commit_submit(fx->st, &j.job);
	run_until(loop, &ndone, ndone + 1);
	assert_int_equal(j.rc, 0);
	snprintf(filler, sizeof filler, "%s/filler", fx->dir);
	take_every_block(filler);

	ndone = 0;
	tjob_init(&hold, &ndone, NULL, 0, "hold.test", 0);
	hold.hold = &sem;
	store_commit_submit(fx->st, &hold.job);
	tjob_init(&small, &ndone, "alice@x.test", 50u << 10, "s", 0);
	tjob_init(&big, &ndone, "alice@x.test", 3u << 19, "B", 0);
	tjob_init(&dom, &ndone, NULL, 0, "d.test", 0);
	store_commit_submit(fx->st, &small.job);
	store_commit_submit(fx->st, &big.job);
	store_commit_submit(fx->st, &dom.job);
	uv_sem_post(&sem);
	run_until(loop, &ndone, 4);
	assert_int_equal(hold.rc, 0);
	assert_int_equal(small.rc, 0);
	assert_int_equal(big.rc, -ENOSPC);
	assert_int_equal(dom.rc, 0);
	stop_and_close(fx->st, loop);
	uv_sem_destroy(&sem);
	unlink(filler);
}

/* The CLI path: plain write transactions, growing ahead of need. */
static void test_growth_cli(void **state)
{
	struct fx *fx = *state;
	char body[100 << 10];
	struct store_txn *t;
	uint64_t id;
	void *dst;
	int rc = 0, n = 0;

	memset(body, 'c', sizeof body - 1);
	body[sizeof body - 1] = '\0';
	assert_int_equal(store_open(fx->dir, CAP, &fx->st), 0);
	populate(fx->st);
	while (rc == 0) {
		assert_true(n < 200);
		t = wtxn(fx->st);
		rc = store_msg_put(t, sizeof body, &id, &dst);
		if (rc == 0) {
			memcpy(dst, body, sizeof body);
			rc = store_mailbox_add(t, "alice@x.test", id, NULL);
		}
		rc = rc == 0 ? store_txn_commit(t) : (store_txn_abort(t), rc);
		n += rc == 0;
	}
	assert_int_equal(rc, -ENOSPC);
	assert_true(n * sizeof body > 4u << 20);
	assert_int_equal(msg_count(fx->st), n); /* full, still readable */
}

/* Another process (the CLI) grows the map past ours: reads adopt the new
 * size, directly without the commit thread and through it with. */
static void child_fill(const char *dir, uint64_t cap, int mib)
{
	struct store *st;
	struct store_txn *t;
	uint64_t id;
	void *dst;

	if (store_open(dir, cap, &st) != 0)
		_exit(2);
	for (int i = 0; i < mib; i++) {
		if (store_txn_begin(st, true, &t) != 0 ||
		    store_msg_put(t, 1u << 20, &id, &dst) != 0)
			_exit(3);
		memset(dst, 'k', 1u << 20);
		if (store_mailbox_add(t, "carol@x.test", id, NULL) != 0 ||
		    store_txn_commit(t) != 0)
			_exit(4);
	}
	store_close(st);
}

static void test_map_resized(void **state)
{
	struct fx *fx = *state;
	struct store_txn *t;
	struct tjob j;
	uv_loop_t *loop = &fx->loop;
	int go[2], back[2], status, ndone = 0;
	char c = 0;
	pid_t pid;

	assert_int_equal(store_open(fx->dir, 16u << 20, &fx->st), 0); /* 4M */
	populate(fx->st);
	assert_int_equal(pipe(go), 0);
	assert_int_equal(pipe(back), 0);
	pid = fork(); /* before any thread exists */
	assert_true(pid >= 0);
	if (pid == 0) {
		for (int round = 0; round < 2; round++) {
			if (read(go[0], &c, 1) != 1)
				_exit(1);
			/* 5 MiB each round; the first leaves the map at 8 MiB,
			 * short of the second's data. */
			child_fill(fx->dir, round ? 32u << 20 : 8u << 20, 5);
			if (write(back[1], &c, 1) != 1)
				_exit(1);
		}
		_exit(0);
	}
	/* Round 1: no commit thread, the reader remaps itself. */
	assert_int_equal(write(go[1], &c, 1), 1);
	assert_int_equal(read(back[0], &c, 1), 1);
	assert_int_equal(msg_count(fx->st), 5);

	/* Round 2: the commit thread remaps behind the gate. */
	assert_int_equal(uv_loop_init(loop), 0);
	assert_int_equal(store_commit_start(fx->st, loop), 0);
	assert_int_equal(write(go[1], &c, 1), 1);
	assert_int_equal(read(back[0], &c, 1), 1);
	/* The read remaps at once (nothing else is open), no -EAGAIN. */
	assert_int_equal(store_txn_begin(fx->st, false, &t), 0);
	store_txn_abort(t);
	assert_int_equal(msg_count(fx->st), 10);
	tjob_init(&j, &ndone, "alice@x.test", 1000, "after", 0);
	store_commit_submit(fx->st, &j.job);
	run_until(loop, &ndone, 1);
	assert_int_equal(j.rc, 0);
	stop_and_close(fx->st, loop);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(go[0]), close(go[1]), close(back[0]), close(back[1]);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)
	const struct CMUnitTest tests[] = {
	    T(test_schema),
	    T(test_domains),
	    T(test_users),
	    T(test_user_record),
	    T(test_user_record_upgrade),
	    T(test_usage),
	    T(test_quota_fits),
	    T(test_user_rename_quota),
	    T(test_aliases),
	    T(test_alias_loops_depth),
	    T(test_refcount),
	    T(test_uids),
	    T(test_msg_ids),
	    T(test_mailbox_trace),
	    T(test_queue),
	    T(test_queue_retry),
	    T(test_group_commit),
	    T(test_failing_job),
	    T(test_commit_stop),
	    T(test_map_initial),
	    T(test_growth_waits),
	    T(test_growth_bounded),
	    T(test_growth_to_cap),
	    T(test_oversized_job),
	    T(test_full_then_delete),
	    T(test_full_disk_batch),
	    T(test_growth_cli),
	    T(test_map_resized),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
