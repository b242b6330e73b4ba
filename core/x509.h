/*
 * x509.h - the one X.509 certificate pillarbox writes: a self-signed one
 * for its host name, so that TLS works out of the box. BearSSL decodes and
 * verifies certificates but has no writer; this is the smallest correct
 * DER encoder for that one shape (RFC 5280).
 */
#ifndef PILLARBOX_X509_H
#define PILLARBOX_X509_H

#include <bearssl.h>
#include <stddef.h>
#include <stdint.h>

#define X509_SERIAL_LEN 16 /* octets: RFC 5280 4.1.2.2 allows up to 20 */
#define X509_NAME_MAX	64 /* ub-common-name (RFC 5280 A.1) */
#define X509_CERT_MAX                                                          \
	1024 /* DER octets: a 64-octet name three times,                       \
	      * a P-256 key and signature, with room */

/* Writes into out (X509_CERT_MAX octets) a v3 certificate in DER:
 *   serial      the X509_SERIAL_LEN octets given (made positive),
 *   issuer      = subject = CN=host,
 *   validity    not_before .. not_after (Unix seconds; UTCTime up to 2049,
 *               GeneralizedTime after, as 4.1.2.5 says),
 *   subjectPublicKeyInfo   pk, an EC P-256 point,
 *   extensions  basicConstraints cA=FALSE (critical): an end-entity
 *               certificate, not a CA; subjectAltName dNSName=host, which
 *               is what clients check (RFC 6125),
 * signed ECDSA-with-SHA256 by sk (deterministic, RFC 6979: no random
 * source needed). Returns its length, or 0 when host is empty or longer
 * than X509_NAME_MAX, or a key is not P-256. */
size_t x509_write_selfsigned(unsigned char *out, const char *host,
			     const unsigned char serial[X509_SERIAL_LEN],
			     int64_t not_before, int64_t not_after,
			     const br_ec_private_key *sk,
			     const br_ec_public_key *pk);

#endif
