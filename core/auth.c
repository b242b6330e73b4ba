/* auth.c - password checks on the thread pool; login throttling.
 * see auth.h */
#include "core/auth.h"

#include <crypt.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "core/loop.h"

static char dummy_hash[STORE_HASH_MAX + 1];

int auth_hash(const char *pass, char *out, size_t n)
{
	char salt[CRYPT_GENSALT_OUTPUT_SIZE];
	struct crypt_data *cd;
	int rc = -1;

	if (crypt_gensalt_rn("$y$", 0, NULL, 0, salt, sizeof salt) == NULL)
		return -1;
	cd = xcalloc(1, sizeof *cd);
	if (crypt_r(pass, salt, cd) != NULL && cd->output[0] != '*' &&
	    strlen(cd->output) < n) {
		strcpy(out, cd->output);
		rc = 0;
	}
	explicit_bzero(cd, sizeof *cd);
	free(cd);
	return rc;
}

int auth_init(void)
{
	return auth_hash("pillarbox-no-such-user", dummy_hash,
			 sizeof dummy_hash);
}

struct auth_work {
	bool ok, known, temp;
	void (*cb)(void *arg, enum auth_result r);
	void *arg;
	char hash[STORE_HASH_MAX + 1];
	char pass[AUTH_PASS_MAX + 1];
	struct crypt_data cd;
};

static void auth_run(void *arg)
{
	struct auth_work *w = arg;
	const char *out = crypt_r(w->pass, w->hash, &w->cd);
	size_t n = strlen(w->hash);

	/* Compare the whole string in constant time. */
	unsigned char diff = out == NULL || strlen(out) != n;
	for (size_t i = 0; out != NULL && i < n && out[i] != '\0'; i++)
		diff |= (unsigned char)(out[i] ^ w->hash[i]);
	w->ok = diff == 0 && w->known;
}

static void auth_after(void *arg)
{
	struct auth_work *w = arg;

	w->cb(w->arg, w->temp ? AUTH_TEMP : w->ok ? AUTH_OK : AUTH_FAIL);
	explicit_bzero(w, sizeof *w);
	free(w);
}

void auth_check(struct store *st, const char *user, const char *pass,
		void (*cb)(void *arg, enum auth_result r), void *arg)
{
	struct auth_work *w = xcalloc(1, sizeof *w);
	struct store_txn *txn = NULL;
	struct store_user u;
	int r;

	w->cb = cb;
	w->arg = arg;
	r = store_txn_begin(st, false, &txn);
	if (r == 0)
		r = store_user_get(txn, user, &u);
	/* A store that cannot be read is no reason to call a password wrong
	 * (nor to count it toward the throttle). The hash still runs, so the
	 * answer takes the usual time. */
	w->temp = r < 0 && r != -ENOENT && r != -EINVAL;
	if (r == 0 && u.hash[0] == '$') {
		strcpy(w->hash, u.hash);
		w->known = true;
	} else {
		/* Unknown user: spend the same time on a hash that never
		 * matches, so replies do not tell users apart. */
		strcpy(w->hash, dummy_hash);
	}
	store_txn_abort(txn);
	if (strlen(pass) > AUTH_PASS_MAX)
		w->known = false;
	else
		strcpy(w->pass, pass);
	loop_work(auth_run, auth_after, w);
}

/* --- throttling --------------------------------------------------------- */

#define AUTH_TRACK_MAX 4096 /* addresses remembered at most */

struct fail {
	struct fail *next;
	struct netaddr key; /* netaddr_client */
	unsigned count;
	time_t since;
};

static struct fail *fails;
static size_t nfails;

/* Finds peer's entry, dropping expired ones on the way. */
static struct fail *fail_find(const struct netaddr *peer)
{
	struct netaddr key = netaddr_client(peer);
	struct fail **pp = &fails, *f;
	time_t now = time(NULL);

	while ((f = *pp) != NULL) {
		if (now - f->since >= AUTH_FAIL_WINDOW) {
			*pp = f->next;
			free(f);
			nfails--;
			continue;
		}
		if (netaddr_equal(&f->key, &key))
			return f;
		pp = &f->next;
	}
	return NULL;
}

bool auth_throttled(const struct netaddr *peer)
{
	struct fail *f = fail_find(peer);
	return f != NULL && f->count >= AUTH_FAIL_MAX;
}

void auth_failed(const struct netaddr *peer)
{
	struct fail *f = fail_find(peer);

	if (f == NULL) {
		if (nfails >= AUTH_TRACK_MAX)
			return; /* under a wide attack: the delay still holds */
		f = xcalloc(1, sizeof *f);
		f->key = netaddr_client(peer);
		f->since = time(NULL);
		f->next = fails;
		fails = f;
		nfails++;
	}
	f->count++;
}

void auth_cleanup(void)
{
	while (fails != NULL) {
		struct fail *f = fails;
		fails = f->next;
		free(f);
	}
	nfails = 0;
}
