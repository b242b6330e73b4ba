/*
 * tls.c - credentials, trust anchors and BearSSL engines set up with
 * pillarbox's policy. see tls.h
 *
 * BearSSL allocates nothing: every context, buffer, key and certificate
 * here is ours. Credentials are shared by reference: a server engine keeps
 * pointers to the chain and key it was reset with, so the credentials a
 * SIGHUP replaces stay until the last engine made with them is freed.
 */
#include "core/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "core/x509.h"

#define ERR_MAX	       1024 /* one error line: two paths and words */
#define RSA_MAX_OCTETS 512  /* BearSSL's RSA keys: up to 4096 bits */

struct tls_creds {
	unsigned refs; /* tls_setup/tls_reload's own, and one per engine */
	br_x509_certificate *chain;
	size_t chain_len;
	int key_type; /* BR_KEYTYPE_RSA or BR_KEYTYPE_EC */
	br_rsa_private_key rsa;
	br_ec_private_key ec;
	unsigned char *key_buf; /* the key's numbers, wiped when freed */
	size_t key_len;
};

struct tls {
	union {
		br_ssl_server_context server;
		br_ssl_client_context client;
	} u;
	br_ssl_engine_context *eng;
	struct tls_creds *creds; /* a server's */
	void *x509;		 /* a client's certificate checker */
	unsigned char ibuf[BR_SSL_BUFSIZE_INPUT];
	unsigned char obuf[TLS_OUT_BUF];
};

/* The files tls_setup() was given, for errors and tls_reload(). */
static struct {
	char cert[CONFIG_STR_MAX + 32], key[CONFIG_STR_MAX + 32];
	char conf[CONFIG_STR_MAX]; /* the config file, "" for none */
	unsigned cert_line, key_line;
} files;

static struct tls_creds *creds; /* what new server engines get */
/* Every server engine's session cache: static, TLS_SESSION_CACHE octets
 * whether used or not, nothing per connection. Only the loop thread makes
 * handshakes, so it needs no lock. */
static br_ssl_session_cache_lru session_cache;
static unsigned char session_store[TLS_SESSION_CACHE];
static char trust_file[CONFIG_STR_MAX] = TLS_TRUST_FILE;
static br_x509_trust_anchor *anchors;
static size_t nanchors;
static bool anchors_loaded;

/* --- the policy ---------------------------------------------------------- */

/* Server preference order. AES-128-GCM is fastest with AES-NI and PCLMUL;
 * without them BearSSL's constant-time AES is several times slower than
 * ChaCha20, which then goes first. The server policy (single EC or RSA
 * key) keeps the suites that match its key. */
static const uint16_t suites_aesni[] = {
    BR_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    BR_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    BR_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    BR_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    BR_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    BR_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
};
static const uint16_t suites_soft[] = {
    BR_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    BR_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    BR_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    BR_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    BR_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    BR_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
};

static const struct {
	uint16_t id;
	const char *name;
} suite_names[] = {
    {BR_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
     "TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256"},
    {BR_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
     "TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256"},
    {BR_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
     "TLSv1.2 ECDHE-ECDSA-AES256-GCM-SHA384"},
    {BR_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
     "TLSv1.2 ECDHE-RSA-AES256-GCM-SHA384"},
    {BR_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
     "TLSv1.2 ECDHE-ECDSA-CHACHA20-POLY1305"},
    {BR_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
     "TLSv1.2 ECDHE-RSA-CHACHA20-POLY1305"},
};

static bool cpu_has_aes(void)
{
	return br_aes_x86ni_ctr_get_vtable() != NULL &&
	       br_ghash_pclmul_get() != 0;
}

/* What every engine, server or client, gets. */
static void tls_policy(br_ssl_engine_context *eng)
{
	static const br_hash_class *hashes[] = {
	    &br_sha1_vtable, &br_sha224_vtable, &br_sha256_vtable,
	    &br_sha384_vtable, &br_sha512_vtable};
	bool aes = cpu_has_aes();

	br_ssl_engine_set_versions(eng, BR_TLS12, BR_TLS12);
	br_ssl_engine_set_suites(eng, aes ? suites_aesni : suites_soft,
				 sizeof suites_aesni / sizeof suites_aesni[0]);
	/* Our order, not the client's: a client listing a weaker suite
	 * first does not get it. No renegotiation: nothing here needs it,
	 * and an engine then never goes back to its credentials. */
	br_ssl_engine_add_flags(eng, BR_OPT_ENFORCE_SERVER_PREFERENCES |
					 BR_OPT_NO_RENEGOTIATION);
	br_ssl_engine_set_default_ec(eng);
	/* SHA-1 only for what a peer may still sign with (ServerKeyExchange
	 * signature hash); the PRFs are SHA-256 and SHA-384. */
	for (size_t i = 0; i < sizeof hashes / sizeof hashes[0]; i++)
		br_ssl_engine_set_hash(
		    eng,
		    (int)((hashes[i]->desc >> BR_HASHDESC_ID_OFF) &
			  BR_HASHDESC_ID_MASK),
		    hashes[i]);
	br_ssl_engine_set_prf_sha256(eng, &br_tls12_sha256_prf);
	br_ssl_engine_set_prf_sha384(eng, &br_tls12_sha384_prf);
	/* These pick AES-NI/PCLMUL (and SSE2 ChaCha20) when the CPU has
	 * them, else the constant-time portable code. */
	br_ssl_engine_set_default_aes_gcm(eng);
	br_ssl_engine_set_default_chapol(eng);
}

/* --- files and PEM ---------------------------------------------------------
 */

struct bytes {
	unsigned char *p;
	size_t len, cap;
};

static void bytes_add(void *ctx, const void *data, size_t n)
{
	struct bytes *b = ctx;

	if (b->len + n > b->cap) {
		b->cap = 2 * (b->len + n);
		b->p = xrealloc(b->p, b->cap);
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
}

/* The whole file, or NULL with err set. */
static unsigned char *read_file(const char *path, size_t *len, char *err,
				size_t n)
{
	struct bytes b = {0};
	unsigned char tmp[4096];
	FILE *f = fopen(path, "rb");
	size_t r;

	if (f == NULL) {
		snprintf(err, n, "cannot read %s: %s", path, strerror(errno));
		return NULL;
	}
	while ((r = fread(tmp, 1, sizeof tmp, f)) > 0 &&
	       b.len + r <= TLS_FILE_MAX)
		bytes_add(&b, tmp, r);
	if (ferror(f) || r > 0) {
		snprintf(err, n, "cannot read %s: %s", path,
			 r > 0 ? "file too large" : strerror(errno));
		fclose(f);
		free(b.p);
		return NULL;
	}
	fclose(f);
	bytes_add(&b, "\n", 1); /* a last line without its newline */
	*len = b.len;
	return b.p;
}

/* Calls fn(name, der, len, arg) for each PEM object of buf; stops at fn's
 * first non-zero answer and returns it. -1 when the PEM is malformed. */
static int pem_each(const unsigned char *buf, size_t len,
		    int (*fn)(const char *name, unsigned char *der, size_t n,
			      void *arg),
		    void *arg)
{
	br_pem_decoder_context pc;
	struct bytes obj = {0};
	char name[128] = "";
	bool inobj = false;
	int r = 0;

	br_pem_decoder_init(&pc);
	while (len > 0 && r == 0) {
		size_t k = br_pem_decoder_push(&pc, buf, len);

		buf += k;
		len -= k;
		switch (br_pem_decoder_event(&pc)) {
		case BR_PEM_BEGIN_OBJ:
			snprintf(name, sizeof name, "%s",
				 br_pem_decoder_name(&pc));
			obj.len = 0;
			br_pem_decoder_setdest(&pc, bytes_add, &obj);
			inobj = true;
			break;
		case BR_PEM_END_OBJ:
			if (inobj)
				r = fn(name, obj.p, obj.len, arg);
			inobj = false;
			break;
		case BR_PEM_ERROR:
			r = -1;
			break;
		}
	}
	if (r == 0 && inobj)
		r = -1; /* an object without its END line */
	if (obj.p != NULL)
		explicit_bzero(obj.p, obj.cap); /* it may have been a key */
	free(obj.p);
	return r;
}

/* Writes data to path through a temporary file and a rename, so that a
 * crash leaves the old file or the new one, never half of one. */
static int write_file(const char *path, const void *data, size_t len,
		      mode_t mode, char *err, size_t n)
{
	char tmp[sizeof files.cert + 8];
	int fd;

	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0 || write(fd, data, len) != (ssize_t)len || fsync(fd) < 0 ||
	    close(fd) < 0 || rename(tmp, path) < 0) {
		snprintf(err, n, "cannot write %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd), unlink(tmp);
		return -1;
	}
	return 0;
}

/* --- credentials ------------------------------------------------------------
 */

static void creds_unref(struct tls_creds *c)
{
	if (c == NULL || --c->refs > 0)
		return;
	for (size_t i = 0; i < c->chain_len; i++)
		free(c->chain[i].data);
	free(c->chain);
	if (c->key_buf != NULL)
		explicit_bzero(c->key_buf, c->key_len);
	free(c->key_buf);
	free(c);
}

static int add_cert(const char *name, unsigned char *der, size_t n, void *arg)
{
	struct tls_creds *c = arg;

	if (strcmp(name, "CERTIFICATE") != 0 &&
	    strcmp(name, "X509 CERTIFICATE") != 0)
		return 0;
	c->chain = xrealloc(c->chain, (c->chain_len + 1) * sizeof *c->chain);
	c->chain[c->chain_len].data = xmalloc(n);
	memcpy(c->chain[c->chain_len].data, der, n);
	c->chain[c->chain_len++].data_len = n;
	return 0;
}

/* Copies the decoded key into c's own buffer. */
static int add_key(const char *name, unsigned char *der, size_t n, void *arg)
{
	struct tls_creds *c = arg;
	br_skey_decoder_context dc;
	unsigned char *p;

	if (strcmp(name, "PRIVATE KEY") != 0 &&
	    strcmp(name, "RSA PRIVATE KEY") != 0 &&
	    strcmp(name, "EC PRIVATE KEY") != 0)
		return 0;
	br_skey_decoder_init(&dc);
	br_skey_decoder_push(&dc, der, n);
	if (br_skey_decoder_last_error(&dc) != 0)
		return -2;
	c->key_type = br_skey_decoder_key_type(&dc);
	if (c->key_type == BR_KEYTYPE_RSA) {
		const br_rsa_private_key *k = br_skey_decoder_get_rsa(&dc);
		c->key_len = k->plen + k->qlen + k->dplen + k->dqlen + k->iqlen;
		p = c->key_buf = xmalloc(c->key_len);
		c->rsa = *k;
		memcpy(c->rsa.p = p, k->p, k->plen), p += k->plen;
		memcpy(c->rsa.q = p, k->q, k->qlen), p += k->qlen;
		memcpy(c->rsa.dp = p, k->dp, k->dplen), p += k->dplen;
		memcpy(c->rsa.dq = p, k->dq, k->dqlen), p += k->dqlen;
		memcpy(c->rsa.iq = p, k->iq, k->iqlen);
	} else {
		const br_ec_private_key *k = br_skey_decoder_get_ec(&dc);
		c->key_len = k->xlen;
		c->key_buf = xmalloc(c->key_len);
		c->ec = *k;
		memcpy(c->ec.x = c->key_buf, k->x, k->xlen);
	}
	explicit_bzero(&dc, sizeof dc);
	return 1; /* the first key is the one */
}

/* An unsigned big-endian number without its leading zeros. */
static void strip_zeros(const unsigned char **p, size_t *n)
{
	while (*n > 0 && **p == 0)
		(*p)++, (*n)--;
}

/* Does the key belong to the certificate's public key? A wrong pair
 * would fail every handshake, so it is refused at start (or reload). */
static bool key_matches(const struct tls_creds *c, const br_x509_pkey *pk)
{
	if (c->key_type == BR_KEYTYPE_EC) {
		unsigned char q[BR_EC_KBUF_PUB_MAX_SIZE];
		br_ec_public_key pub;

		return pk->key_type == BR_KEYTYPE_EC &&
		       pk->key.ec.curve == c->ec.curve &&
		       br_ec_compute_pub(br_ec_get_default(), &pub, q,
					 &c->ec) != 0 &&
		       pub.qlen == pk->key.ec.qlen &&
		       memcmp(pub.q, pk->key.ec.q, pub.qlen) == 0;
	}
	if (pk->key_type != BR_KEYTYPE_RSA)
		return false;
	unsigned char mod[RSA_MAX_OCTETS];
	const unsigned char *a = mod, *b = pk->key.rsa.n;
	size_t na = br_rsa_compute_modulus_get_default()(NULL, &c->rsa),
	       nb = pk->key.rsa.nlen;

	if (na == 0 || na > sizeof mod ||
	    br_rsa_compute_modulus_get_default()(mod, &c->rsa) != na)
		return false;
	strip_zeros(&a, &na);
	strip_zeros(&b, &nb);
	return na == nb && memcmp(a, b, na) == 0;
}

/* Reads cert and key. On error sets err and *key_fault (whether the key
 * file is to blame, so the message points at its line). */
static struct tls_creds *creds_load(const char *cert, const char *key,
				    char *err, size_t n, bool *key_fault)
{
	struct tls_creds *c = xcalloc(1, sizeof *c);
	br_x509_decoder_context dc;
	const br_x509_pkey *pk;
	unsigned char *buf;
	size_t len;
	int r;

	c->refs = 1;
	*key_fault = false;
	buf = read_file(cert, &len, err, n);
	if (buf == NULL)
		goto fail;
	r = pem_each(buf, len, add_cert, c);
	free(buf);
	if (r < 0 || c->chain_len == 0) {
		snprintf(err, n, "%s: %s", cert,
			 r < 0 ? "malformed PEM" : "no CERTIFICATE in it");
		goto fail;
	}
	/* Each certificate must decode; the last decoded, into dc, is the
	 * end entity's (the first), whose key the private key must match. */
	for (size_t i = c->chain_len; i-- > 0;) {
		br_x509_decoder_init(&dc, NULL, NULL);
		br_x509_decoder_push(&dc, c->chain[i].data,
				     c->chain[i].data_len);
		if (br_x509_decoder_last_error(&dc) != 0) {
			snprintf(err, n,
				 "%s: certificate %zu cannot be decoded "
				 "(BearSSL error %d)",
				 cert, i + 1, br_x509_decoder_last_error(&dc));
			goto fail;
		}
	}

	*key_fault = true;
	buf = read_file(key, &len, err, n);
	if (buf == NULL)
		goto fail;
	r = pem_each(buf, len, add_key, c);
	explicit_bzero(buf, len);
	free(buf);
	if (r != 1) {
		snprintf(err, n, "%s: %s", key,
			 r == -1   ? "malformed PEM"
			 : r == -2 ? "the private key cannot be decoded"
				   : "no (unencrypted) PRIVATE KEY in it");
		goto fail;
	}
	pk = br_x509_decoder_get_pkey(&dc);
	if (pk == NULL || !key_matches(c, pk)) {
		snprintf(err, n, "key %s does not match certificate %s", key,
			 cert);
		goto fail;
	}
	return c;
fail:
	creds_unref(c);
	return NULL;
}

/* A random generator seeded by the system (getrandom, or RDRAND), with
 * getrandom's octets mixed in on top: the key must not be guessable. */
static int rng_init(br_hmac_drbg_context *rng)
{
	br_prng_seeder seeder = br_prng_seeder_system(NULL);
	unsigned char extra[32];

	br_hmac_drbg_init(rng, &br_sha256_vtable, NULL, 0);
	if (seeder == 0 || !seeder(&rng->vtable) ||
	    getrandom(extra, sizeof extra, 0) != sizeof extra)
		return -1;
	br_hmac_drbg_update(rng, extra, sizeof extra);
	explicit_bzero(extra, sizeof extra);
	return 0;
}

/* Makes an EC P-256 key and a self-signed certificate for host, and
 * writes them as PEM: the key first (mode 0600), so that a certificate
 * file never exists without its key. */
static int selfsigned_make(const char *host, const char *cert, const char *key,
			   char *err, size_t n)
{
	const br_ec_impl *ec = br_ec_get_default();
	unsigned char kbuf[BR_EC_KBUF_PRIV_MAX_SIZE];
	unsigned char pbuf[BR_EC_KBUF_PUB_MAX_SIZE];
	unsigned char serial[X509_SERIAL_LEN], der[X509_CERT_MAX];
	unsigned char kder[200];
	char pem[2 * X509_CERT_MAX];
	br_hmac_drbg_context rng;
	br_ec_private_key sk;
	br_ec_public_key pk;
	int64_t now = (int64_t)time(NULL);
	size_t len, plen;
	int r = -1;

	if (rng_init(&rng) < 0) {
		snprintf(err, n, "no system random source for a key");
		return -1;
	}
	br_hmac_drbg_generate(&rng, serial, sizeof serial);
	if (br_ec_keygen(&rng.vtable, ec, &sk, kbuf, BR_EC_secp256r1) == 0 ||
	    br_ec_compute_pub(ec, &pk, pbuf, &sk) == 0) {
		snprintf(err, n, "cannot make an EC P-256 key");
		goto done;
	}
	/* Valid from an hour ago: a client's clock may be behind. */
	len = x509_write_selfsigned(der, host, serial, now - 3600,
				    now + TLS_SELFSIGNED_DAYS * 86400LL, &sk,
				    &pk);
	if (len == 0) {
		snprintf(err, n,
			 "cannot make a certificate for hostname %s (at most "
			 "%d characters)",
			 host, X509_NAME_MAX);
		goto done;
	}
	plen = br_encode_ec_pkcs8_der(kder, &sk, &pk);
	plen = plen == 0 ? 0
			 : br_pem_encode(pem, kder, plen, BR_ENCODE_PEM_PKCS8,
					 BR_PEM_LINE64);
	if (plen == 0 || write_file(key, pem, plen, 0600, err, n) < 0)
		goto done;
	explicit_bzero(pem, sizeof pem);
	plen = br_pem_encode(pem, der, len, "CERTIFICATE", BR_PEM_LINE64);
	r = write_file(cert, pem, plen, 0644, err, n);
done:
	explicit_bzero(kbuf, sizeof kbuf);
	explicit_bzero(kder, sizeof kder);
	explicit_bzero(pem, sizeof pem);
	explicit_bzero(&rng, sizeof rng);
	return r;
}

static const char *key_type_name(const struct tls_creds *c)
{
	if (c->key_type == BR_KEYTYPE_RSA)
		return "rsa";
	switch (c->ec.curve) {
	case BR_EC_secp256r1:
		return "ec-p256";
	case BR_EC_secp384r1:
		return "ec-p384";
	case BR_EC_secp521r1:
		return "ec-p521";
	}
	return "ec";
}

/* Empties the session cache: the entries' master secrets wiped, the LRU
 * started over (it draws a new index key at its next use). */
static void sessions_forget(void)
{
	explicit_bzero(session_store, sizeof session_store);
	br_ssl_session_cache_lru_init(&session_cache, session_store,
				      sizeof session_store);
}

int tls_setup(const struct config *cfg)
{
	const struct config_path *cert = &cfg->tls.cert, *key = &cfg->tls.key;
	char err[ERR_MAX];
	bool key_fault = false;
	struct stat st;

	snprintf(files.conf, sizeof files.conf, "%s", cfg->file);
	if ((cert->path[0] == '\0') != (key->path[0] == '\0')) {
		const struct config_path *set = cert->path[0] ? cert : key;
		fprintf(stderr,
			"%s:%u: [tls] cert and key go together: set both, or "
			"neither for a self-signed pair\n",
			files.conf, set->line);
		return -1;
	}
	if (cert->path[0] != '\0') {
		snprintf(files.cert, sizeof files.cert, "%s", cert->path);
		snprintf(files.key, sizeof files.key, "%s", key->path);
		files.cert_line = cert->line;
		files.key_line = key->line;
	} else {
		snprintf(files.cert, sizeof files.cert, "%s/%s", cfg->data_dir,
			 TLS_SELFSIGNED_CERT);
		snprintf(files.key, sizeof files.key, "%s/%s", cfg->data_dir,
			 TLS_SELFSIGNED_KEY);
		files.cert_line = files.key_line = 0;
		if (stat(files.cert, &st) < 0 && errno == ENOENT &&
		    stat(files.key, &st) < 0 && errno == ENOENT) {
			if (selfsigned_make(cfg->hostname, files.cert,
					    files.key, err, sizeof err) < 0) {
				fprintf(stderr, "%s:0: %s\n", files.cert, err);
				return -1;
			}
			log_msg(LOG_INFO, "core",
				"event=tls-selfsigned cert=%s key=%s "
				"hostname=%s",
				files.cert, files.key, cfg->hostname);
		}
	}
	creds_unref(creds); /* a second setup replaces the first */
	creds = creds_load(files.cert, files.key, err, sizeof err, &key_fault);
	if (creds == NULL) {
		unsigned line = key_fault ? files.key_line : files.cert_line;
		/* The config's line when the file came from it, else the
		 * file itself. */
		fprintf(stderr, "%s:%u: %s\n",
			line > 0 && files.conf[0] ? files.conf
			: key_fault		  ? files.key
						  : files.cert,
			line > 0 && files.conf[0] ? line : 0, err);
		return -1;
	}
	sessions_forget();
	log_msg(LOG_INFO, "core",
		"event=tls-ready cert=%s key=%s key_type=%s chain=%zu aes=%s",
		files.cert, files.key, key_type_name(creds), creds->chain_len,
		cpu_has_aes() ? "aes-ni" : "portable");
	return 0;
}

int tls_reload(void)
{
	char err[ERR_MAX];
	bool key_fault;
	struct tls_creds *c;

	if (creds == NULL)
		return -1;
	c = creds_load(files.cert, files.key, err, sizeof err, &key_fault);
	if (c == NULL) {
		log_msg(LOG_WARN, "core",
			"event=tls-reload-failed error=%s kept=old",
			log_str(err));
		return -1;
	}
	creds_unref(creds);
	creds = c;
	sessions_forget(); /* a resumed session would skip the new pair */
	log_msg(LOG_INFO, "core", "event=tls-reload cert=%s key_type=%s",
		files.cert, key_type_name(c));
	return 0;
}

static void anchors_free(void)
{
	for (size_t i = 0; i < nanchors; i++) {
		br_x509_trust_anchor *ta = &anchors[i];
		free(ta->dn.data);
		if (ta->pkey.key_type == BR_KEYTYPE_RSA) {
			free(ta->pkey.key.rsa.n);
			free(ta->pkey.key.rsa.e);
		} else {
			free(ta->pkey.key.ec.q);
		}
	}
	free(anchors);
	anchors = NULL;
	nanchors = 0;
	anchors_loaded = false;
}

void tls_cleanup(void)
{
	creds_unref(creds);
	creds = NULL;
	anchors_free();
	sessions_forget();
}

void tls_set_trust_file(const char *path)
{
	anchors_free();
	snprintf(trust_file, sizeof trust_file, "%s", path);
}

/* --- trust anchors ----------------------------------------------------------
 */

static void *memdup(const void *p, size_t n)
{
	return memcpy(xmalloc(n ? n : 1), p, n);
}

/* One certificate of the trust store as an anchor (its subject and key);
 * one that cannot be decoded is skipped. */
static int add_anchor(const char *name, unsigned char *der, size_t n, void *arg)
{
	br_x509_decoder_context dc;
	struct bytes dn = {0};
	const br_x509_pkey *pk;
	br_x509_trust_anchor *ta;

	(void)arg;
	if (strcmp(name, "CERTIFICATE") != 0 &&
	    strcmp(name, "TRUSTED CERTIFICATE") != 0)
		return 0;
	br_x509_decoder_init(&dc, bytes_add, &dn);
	br_x509_decoder_push(&dc, der, n);
	pk = br_x509_decoder_get_pkey(&dc);
	if (pk == NULL ||
	    (pk->key_type != BR_KEYTYPE_RSA && pk->key_type != BR_KEYTYPE_EC)) {
		free(dn.p);
		return 0;
	}
	anchors = xrealloc(anchors, (nanchors + 1) * sizeof *anchors);
	ta = &anchors[nanchors++];
	memset(ta, 0, sizeof *ta);
	ta->dn.data = dn.p != NULL ? dn.p : xmalloc(1);
	ta->dn.len = dn.len;
	ta->flags = br_x509_decoder_isCA(&dc) ? BR_X509_TA_CA : 0;
	ta->pkey.key_type = pk->key_type;
	if (pk->key_type == BR_KEYTYPE_RSA) {
		ta->pkey.key.rsa.n = memdup(pk->key.rsa.n, pk->key.rsa.nlen);
		ta->pkey.key.rsa.nlen = pk->key.rsa.nlen;
		ta->pkey.key.rsa.e = memdup(pk->key.rsa.e, pk->key.rsa.elen);
		ta->pkey.key.rsa.elen = pk->key.rsa.elen;
	} else {
		ta->pkey.key.ec.curve = pk->key.ec.curve;
		ta->pkey.key.ec.q = memdup(pk->key.ec.q, pk->key.ec.qlen);
		ta->pkey.key.ec.qlen = pk->key.ec.qlen;
	}
	return 0;
}

/* Reads the trust store once, when the first verified connection starts
 * (a few milliseconds for Debian's ~140 roots). Without it nothing
 * verifies, which fails closed. */
static void anchors_load(void)
{
	char err[ERR_MAX];
	unsigned char *buf;
	size_t len;

	if (anchors_loaded)
		return;
	anchors_loaded = true;
	buf = read_file(trust_file, &len, err, sizeof err);
	if (buf != NULL && pem_each(buf, len, add_anchor, NULL) < 0)
		snprintf(err, sizeof err, "%s: malformed PEM", trust_file);
	if (buf == NULL || nanchors == 0)
		log_msg(LOG_WARN, "core", "event=tls-trust-error error=%s",
			buf == NULL ? log_str(err) : "no-anchors");
	else
		log_msg(LOG_INFO, "core", "event=tls-trust file=%s anchors=%zu",
			trust_file, nanchors);
	free(buf);
}

/* --- engines ----------------------------------------------------------------
 */

/* Opportunistic TLS's certificate "checker": it takes the end entity's
 * public key, whatever the chain, name or dates, since an unauthenticated
 * encrypted connection is still better than a plaintext one (RFC 7435). */
struct noverify {
	const br_x509_class *vtable;
	br_x509_decoder_context dc;
	unsigned ncerts;
};

static void nv_start_chain(const br_x509_class **ctx, const char *name)
{
	struct noverify *nv = (struct noverify *)ctx;

	(void)name;
	nv->ncerts = 0;
	br_x509_decoder_init(&nv->dc, NULL, NULL);
}

static void nv_start_cert(const br_x509_class **ctx, uint32_t length)
{
	(void)ctx, (void)length;
}

static void nv_append(const br_x509_class **ctx, const unsigned char *buf,
		      size_t len)
{
	struct noverify *nv = (struct noverify *)ctx;

	if (nv->ncerts == 0)
		br_x509_decoder_push(&nv->dc, buf, len);
}

static void nv_end_cert(const br_x509_class **ctx)
{
	((struct noverify *)ctx)->ncerts++;
}

static unsigned nv_end_chain(const br_x509_class **ctx)
{
	struct noverify *nv = (struct noverify *)ctx;

	if (nv->ncerts == 0)
		return BR_ERR_X509_EMPTY_CHAIN;
	return (unsigned)br_x509_decoder_last_error(&nv->dc);
}

static const br_x509_pkey *nv_get_pkey(const br_x509_class *const *ctx,
				       unsigned *usages)
{
	struct noverify *nv = (struct noverify *)ctx;

	if (usages != NULL)
		*usages = BR_KEYTYPE_KEYX | BR_KEYTYPE_SIGN;
	return br_x509_decoder_get_pkey(&nv->dc);
}

static const br_x509_class noverify_vtable = {
    sizeof(struct noverify),
    nv_start_chain,
    nv_start_cert,
    nv_append,
    nv_end_cert,
    nv_end_chain,
    nv_get_pkey,
};

struct tls *tls_server_new(void)
{
	struct tls *t;
	br_ssl_server_context *sc;

	if (creds == NULL)
		return NULL;
	t = xmalloc(sizeof *t);
	sc = &t->u.server;
	t->eng = &sc->eng;
	t->x509 = NULL;
	t->creds = creds;
	creds->refs++;
	br_ssl_server_zero(sc);
	tls_policy(&sc->eng);
	/* Signing only: every suite is ECDHE. */
	if (creds->key_type == BR_KEYTYPE_EC)
		br_ssl_server_set_single_ec(sc, creds->chain, creds->chain_len,
					    &creds->ec, BR_KEYTYPE_SIGN,
					    BR_KEYTYPE_EC, br_ec_get_default(),
					    br_ecdsa_sign_asn1_get_default());
	else
		br_ssl_server_set_single_rsa(sc, creds->chain, creds->chain_len,
					     &creds->rsa, BR_KEYTYPE_SIGN,
					     br_rsa_private_get_default(),
					     br_rsa_pkcs1_sign_get_default());
	br_ssl_server_set_cache(sc, &session_cache.vtable);
	br_ssl_engine_set_buffers_bidi(&sc->eng, t->ibuf, sizeof t->ibuf,
				       t->obuf, sizeof t->obuf);
	if (!br_ssl_server_reset(sc)) {
		tls_free(t);
		return NULL;
	}
	return t;
}

struct tls *tls_client_new(const char *server_name, bool verify)
{
	struct tls *t = xmalloc(sizeof *t);
	br_ssl_client_context *cc = &t->u.client;

	t->eng = &cc->eng;
	t->creds = NULL;
	br_ssl_client_zero(cc);
	tls_policy(&cc->eng);
	br_ssl_engine_set_default_rsavrfy(&cc->eng);
	br_ssl_engine_set_default_ecdsa(&cc->eng);
	if (verify) {
		br_x509_minimal_context *xc = xmalloc(sizeof *xc);

		anchors_load();
		br_x509_minimal_init(xc, &br_sha256_vtable, anchors, nanchors);
		br_x509_minimal_set_rsa(xc,
					br_ssl_engine_get_rsavrfy(&cc->eng));
		br_x509_minimal_set_ecdsa(xc, br_ssl_engine_get_ec(&cc->eng),
					  br_ssl_engine_get_ecdsa(&cc->eng));
		for (int id = br_sha1_ID; id <= br_sha512_ID; id++)
			br_x509_minimal_set_hash(
			    xc, id, br_ssl_engine_get_hash(&cc->eng, id));
		t->x509 = xc;
		br_ssl_engine_set_x509(&cc->eng, &xc->vtable);
	} else {
		struct noverify *nv = xcalloc(1, sizeof *nv);

		nv->vtable = &noverify_vtable;
		t->x509 = nv;
		br_ssl_engine_set_x509(&cc->eng, &nv->vtable);
	}
	br_ssl_engine_set_buffers_bidi(&cc->eng, t->ibuf, sizeof t->ibuf,
				       t->obuf, sizeof t->obuf);
	if (!br_ssl_client_reset(cc, server_name, 0)) {
		tls_free(t);
		return NULL;
	}
	return t;
}

void tls_free(struct tls *t)
{
	if (t == NULL)
		return;
	creds_unref(t->creds);
	free(t->x509);
	/* The engine holds session keys. */
	explicit_bzero(t, sizeof t->u);
	free(t);
}

br_ssl_engine_context *tls_engine(struct tls *t)
{
	return t->eng;
}

const char *tls_describe(struct tls *t)
{
	br_ssl_session_parameters sp;

	br_ssl_engine_get_session_parameters(t->eng, &sp);
	for (size_t i = 0; i < sizeof suite_names / sizeof suite_names[0]; i++)
		if (suite_names[i].id == sp.cipher_suite &&
		    sp.version == BR_TLS12)
			return suite_names[i].name;
	return "TLS";
}

const char *tls_error_name(int err, char *buf, size_t n)
{
	static const struct {
		int err;
		const char *name;
	} names[] = {
	    {BR_ERR_UNSUPPORTED_VERSION, "unsupported-version"},
	    {BR_ERR_BAD_VERSION, "bad-version"},
	    {BR_ERR_BAD_LENGTH, "bad-length"},
	    {BR_ERR_TOO_LARGE, "too-large"},
	    {BR_ERR_BAD_MAC, "bad-mac"},
	    {BR_ERR_UNEXPECTED, "unexpected"},
	    {BR_ERR_BAD_HANDSHAKE, "bad-handshake"},
	    {BR_ERR_BAD_CIPHER_SUITE, "bad-cipher-suite"},
	    {BR_ERR_BAD_SIGNATURE, "bad-signature"},
	    {BR_ERR_X509_NOT_TRUSTED, "x509-not-trusted"},
	    {BR_ERR_X509_BAD_SERVER_NAME, "x509-bad-server-name"},
	    {BR_ERR_X509_EXPIRED, "x509-expired"},
	};

	if (err >= BR_ERR_SEND_FATAL_ALERT)
		snprintf(buf, n, "alert-sent-%d",
			 err - BR_ERR_SEND_FATAL_ALERT);
	else if (err >= BR_ERR_RECV_FATAL_ALERT)
		snprintf(buf, n, "alert-received-%d",
			 err - BR_ERR_RECV_FATAL_ALERT);
	else
		snprintf(buf, n, "bearssl-%d", err);
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (names[i].err == err)
			snprintf(buf, n, "%s", names[i].name);
	return buf;
}
