/* x509.c - a self-signed certificate in DER. see x509.h */
#include "core/x509.h"

#include <assert.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#define DER_DEPTH 8 /* nesting of the certificate: 6 at most */

/* DER tags used here (X.690 8.x). */
enum {
	TAG_BOOLEAN = 0x01,
	TAG_INTEGER = 0x02,
	TAG_BIT_STRING = 0x03,
	TAG_OCTET_STRING = 0x04,
	TAG_OID = 0x06,
	TAG_UTF8 = 0x0c,
	TAG_UTCTIME = 0x17,
	TAG_GENTIME = 0x18,
	TAG_SEQUENCE = 0x30,
	TAG_SET = 0x31,
	TAG_VERSION = 0xa0,    /* [0] EXPLICIT, in TBSCertificate */
	TAG_EXTENSIONS = 0xa3, /* [3] EXPLICIT, in TBSCertificate */
	TAG_DNSNAME = 0x82,    /* [2] IMPLICIT IA5String, in GeneralName */
};

/* Object identifiers, content octets only. */
static const unsigned char OID_ECDSA_SHA256[] = {0x2a, 0x86, 0x48, 0xce,
						 0x3d, 0x04, 0x03, 0x02};
static const unsigned char OID_EC_PUBKEY[] = {0x2a, 0x86, 0x48, 0xce,
					      0x3d, 0x02, 0x01};
static const unsigned char OID_P256[] = {0x2a, 0x86, 0x48, 0xce,
					 0x3d, 0x03, 0x01, 0x07};
static const unsigned char OID_CN[] = {0x55, 0x04, 0x03};
static const unsigned char OID_SAN[] = {0x55, 0x1d, 0x11};
static const unsigned char OID_BASIC[] = {0x55, 0x1d, 0x13};

/* A DER writer: values are written in order; a constructed value is
 * opened (its tag written), filled, and closed, which inserts its length
 * before its contents once that is known. */
struct der {
	unsigned char *p;
	size_t len, cap;
	size_t open[DER_DEPTH]; /* where each open value's contents start */
	int depth;
	bool full; /* out of room: the result is void */
};

static void der_bytes(struct der *d, const void *v, size_t n)
{
	if (d->full || n > d->cap - d->len) {
		d->full = true;
		return;
	}
	memcpy(d->p + d->len, v, n);
	d->len += n;
}

static void der_open(struct der *d, unsigned char tag)
{
	assert(d->depth < DER_DEPTH);
	der_bytes(d, &tag, 1);
	d->open[d->depth++] = d->len;
}

static void der_close(struct der *d)
{
	size_t start, n;
	unsigned char hdr[3];
	size_t k;

	assert(d->depth > 0);
	start = d->open[--d->depth];
	if (d->full)
		return;
	n = d->len - start;
	/* Definite length, shortest form (X.690 10.1). */
	if (n < 0x80) {
		hdr[0] = (unsigned char)n, k = 1;
	} else if (n < 0x100) {
		hdr[0] = 0x81, hdr[1] = (unsigned char)n, k = 2;
	} else {
		assert(n < 0x10000);
		hdr[0] = 0x82, hdr[1] = (unsigned char)(n >> 8);
		hdr[2] = (unsigned char)n, k = 3;
	}
	if (k > d->cap - d->len) {
		d->full = true;
		return;
	}
	memmove(d->p + start + k, d->p + start, n);
	memcpy(d->p + start, hdr, k);
	d->len += k;
}

/* A primitive value. */
static void der_put(struct der *d, unsigned char tag, const void *v, size_t n)
{
	der_open(d, tag);
	der_bytes(d, v, n);
	der_close(d);
}

/* AlgorithmIdentifier for ecdsa-with-SHA256: no parameters (RFC 5758
 * 3.2). */
static void der_sigalg(struct der *d)
{
	der_open(d, TAG_SEQUENCE);
	der_put(d, TAG_OID, OID_ECDSA_SHA256, sizeof OID_ECDSA_SHA256);
	der_close(d);
}

/* Name: one RDN, CN=host as a UTF8String. */
static void der_name(struct der *d, const char *host)
{
	der_open(d, TAG_SEQUENCE);
	der_open(d, TAG_SET);
	der_open(d, TAG_SEQUENCE);
	der_put(d, TAG_OID, OID_CN, sizeof OID_CN);
	der_put(d, TAG_UTF8, host, strlen(host));
	der_close(d);
	der_close(d);
	der_close(d);
}

/* Time: UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280
 * 4.1.2.5), both in UTC with seconds. */
static void der_time(struct der *d, int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;
	char buf[20];
	int y;

	gmtime_r(&tt, &tm);
	y = tm.tm_year + 1900;
	strftime(buf, sizeof buf, y < 2050 ? "%y%m%d%H%M%SZ" : "%Y%m%d%H%M%SZ",
		 &tm);
	der_put(d, y < 2050 ? TAG_UTCTIME : TAG_GENTIME, buf, strlen(buf));
}

static void der_tbs(struct der *d, const char *host,
		    const unsigned char serial[X509_SERIAL_LEN],
		    int64_t not_before, int64_t not_after,
		    const br_ec_public_key *pk)
{
	static const unsigned char v3 = 2, critical = 0xff, zero = 0;
	unsigned char sn[X509_SERIAL_LEN];

	/* A positive INTEGER of fixed length: clear the sign bit and keep
	 * the first octet non-zero, so the encoding is minimal (X.690
	 * 8.3.2) and always X509_SERIAL_LEN octets. */
	memcpy(sn, serial, sizeof sn);
	sn[0] = (unsigned char)((sn[0] & 0x7f) | 0x40);

	der_open(d, TAG_SEQUENCE);
	der_open(d, TAG_VERSION);
	der_put(d, TAG_INTEGER, &v3, 1);
	der_close(d);
	der_put(d, TAG_INTEGER, sn, sizeof sn);
	der_sigalg(d);
	der_name(d, host); /* issuer */
	der_open(d, TAG_SEQUENCE);
	der_time(d, not_before);
	der_time(d, not_after);
	der_close(d);
	der_name(d, host); /* subject */

	/* SubjectPublicKeyInfo (RFC 5480 2): the uncompressed point. */
	der_open(d, TAG_SEQUENCE);
	der_open(d, TAG_SEQUENCE);
	der_put(d, TAG_OID, OID_EC_PUBKEY, sizeof OID_EC_PUBKEY);
	der_put(d, TAG_OID, OID_P256, sizeof OID_P256);
	der_close(d);
	der_open(d, TAG_BIT_STRING);
	der_bytes(d, &zero, 1); /* no unused bits */
	der_bytes(d, pk->q, pk->qlen);
	der_close(d);
	der_close(d);

	der_open(d, TAG_EXTENSIONS);
	der_open(d, TAG_SEQUENCE);
	/* basicConstraints, critical, cA FALSE: the empty SEQUENCE (DER
	 * omits a DEFAULT value). */
	der_open(d, TAG_SEQUENCE);
	der_put(d, TAG_OID, OID_BASIC, sizeof OID_BASIC);
	der_put(d, TAG_BOOLEAN, &critical, 1);
	der_open(d, TAG_OCTET_STRING);
	der_open(d, TAG_SEQUENCE);
	der_close(d);
	der_close(d);
	der_close(d);
	/* subjectAltName: dNSName=host. */
	der_open(d, TAG_SEQUENCE);
	der_put(d, TAG_OID, OID_SAN, sizeof OID_SAN);
	der_open(d, TAG_OCTET_STRING);
	der_open(d, TAG_SEQUENCE);
	der_put(d, TAG_DNSNAME, host, strlen(host));
	der_close(d);
	der_close(d);
	der_close(d);
	der_close(d);
	der_close(d);

	der_close(d);
}

size_t x509_write_selfsigned(unsigned char *out, const char *host,
			     const unsigned char serial[X509_SERIAL_LEN],
			     int64_t not_before, int64_t not_after,
			     const br_ec_private_key *sk,
			     const br_ec_public_key *pk)
{
	struct der d = {.p = out, .cap = X509_CERT_MAX};
	unsigned char hash[br_sha256_SIZE], sig[80];
	br_sha256_context sha;
	size_t tbs_len, sig_len;
	static const unsigned char zero = 0;

	if (host[0] == '\0' || strlen(host) > X509_NAME_MAX ||
	    sk->curve != BR_EC_secp256r1 || pk->curve != BR_EC_secp256r1)
		return 0;
	/* The TBSCertificate is written where the Certificate's contents
	 * begin, so that it is hashed in place; the outer SEQUENCE's
	 * header is inserted by its close. */
	der_open(&d, TAG_SEQUENCE);
	der_tbs(&d, host, serial, not_before, not_after, pk);
	if (d.full)
		return 0;
	tbs_len = d.len - d.open[0];
	br_sha256_init(&sha);
	br_sha256_update(&sha, out + d.open[0], tbs_len);
	br_sha256_out(&sha, hash);
	sig_len = br_ecdsa_sign_asn1_get_default()(
	    br_ec_get_default(), &br_sha256_vtable, hash, sk, sig);
	if (sig_len == 0 || sig_len > sizeof sig)
		return 0;
	der_sigalg(&d);
	der_open(&d, TAG_BIT_STRING);
	der_bytes(&d, &zero, 1);
	der_bytes(&d, sig, sig_len);
	der_close(&d);
	der_close(&d);
	return d.full ? 0 : d.len;
}
