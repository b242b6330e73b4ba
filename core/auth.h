/*
 * auth.h - password checks off the loop, and failed-login throttling.
 *
 * Hashes are crypt(3) strings; new ones are yescrypt ("$y$"), the scheme of
 * Debian's /etc/shadow, which Dovecot also reads. Hashing takes tens of
 * milliseconds on purpose, so it runs on the libuv thread pool.
 */
#ifndef PILLARBOX_AUTH_H
#define PILLARBOX_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include "core/netaddr.h"
#include "store/store.h"

#define AUTH_FAIL_MAX	 10  /* failed logins per IP ... */
#define AUTH_FAIL_WINDOW 300 /* ... within this many seconds */
#define AUTH_PASS_MAX	 256 /* longer passwords are refused */

/* Hashes pass with a fresh salt into out (size n). 0 or -1. */
int auth_hash(const char *pass, char *out, size_t n);

/* Prepares the dummy hash that unknown users are checked against, so a
 * wrong user costs the same time as a wrong password. Call once. */
int auth_init(void);

enum auth_result {
	AUTH_OK,
	AUTH_FAIL, /* wrong password or unknown user: the same to the client */
	AUTH_TEMP, /* the store could not be read now: try again later */
};

/* Checks user's password on the thread pool; cb(arg, result) runs on the
 * loop. The user's hash is read from st now; user and pass are copied (the
 * copy of pass is wiped after use). */
void auth_check(struct store *st, const char *user,
		const char *pass, void (*cb)(void *arg, enum auth_result r),
		void *arg);

/* Failed-login throttling per client (netaddr_client: IPv6 per /64). */
bool auth_throttled(const struct netaddr *peer);
void auth_failed(const struct netaddr *peer);

/* Frees the throttling table (at exit). */
void auth_cleanup(void);

#endif
