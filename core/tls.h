/*
 * tls.h - TLS engines for the connection layer (BearSSL): the server's
 * certificate chain and key (configured PEM files, or a self-signed pair
 * made at first start), reloading them, the trust store for verified
 * outbound connections, and one policy for every engine:
 *
 *   - TLS 1.2 only (BearSSL has no TLS 1.3);
 *   - ECDHE key exchange with an AEAD cipher: AES-GCM or
 *     ChaCha20-Poly1305 (forward secrecy, no CBC, no RSA key exchange);
 *     AES first where the CPU has AES-NI and PCLMUL, which BearSSL's
 *     default implementations then use, else ChaCha20 first;
 *   - the server's order of preference wins; no renegotiation.
 *
 * Only core/conn.c drives an engine (its pump); protocols never include
 * this header or bearssl.h. Everything here runs on the loop thread.
 */
#ifndef PILLARBOX_TLS_H
#define PILLARBOX_TLS_H

#include <bearssl.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"

/* A record's plaintext, outgoing: a power of two BearSSL accepts (512 to
 * 16384; 8192 counts as 4096). 2 KiB keeps an idle TLS connection under
 * 24 KiB all told (the 16 KiB input buffer is fixed by the protocol, the
 * server context is 4 KiB); the 29 octets an AES-GCM record adds cost
 * 1.4% at this size. */
#define TLS_RECORD_OUT	    2048
#define TLS_OUT_BUF	    (TLS_RECORD_OUT + 85) /* + BearSSL's MAX_OUT_OVERHEAD */
#define TLS_TRUST_FILE	    "/etc/ssl/certs/ca-certificates.crt"
#define TLS_SELFSIGNED_CERT "selfsigned-cert.pem" /* in data_dir */
#define TLS_SELFSIGNED_KEY  "selfsigned-key.pem"
#define TLS_SELFSIGNED_DAYS 3650
#define TLS_FILE_MAX	    (1u << 20) /* a PEM file larger is refused */
/* The server's session cache (RFC 5246 7.4.1.2 session IDs; BearSSL has
 * no tickets): one LRU for every listener, 100 octets an entry, so 32 KiB
 * keeps the last 327 sessions - an office's clients many times over. A
 * client that resumes skips the ECDHE and the signature. */
#define TLS_SESSION_CACHE (32u << 10)

/* One connection's engine and its buffers. */
struct tls;

/* Loads the server's credentials: cfg->tls.cert and key, or, when neither
 * is set, data_dir's self-signed pair, made (EC P-256, for cfg->hostname;
 * key file mode 0600) and logged as event=tls-selfsigned when missing.
 * On error prints one line "FILE:LINE: what" on stderr (the config file
 * and the line naming the bad file, else the bad file and 0) and returns
 * -1. Remembers the paths for tls_reload(). */
int tls_setup(const struct config *cfg);

/* Reads the same files again (SIGHUP): handshakes begun from now on use
 * them, and the session cache is emptied, so no session made with the old
 * pair resumes; connections already made keep what they began with. On
 * error logs event=tls-reload-failed, keeps the old credentials (and the
 * cache) and returns -1. */
int tls_reload(void);

/* Frees the credentials and the trust anchors and wipes the session cache
 * (it holds master secrets). Every engine must be freed first. */
void tls_cleanup(void);

/* The PEM bundle verified outbound connections trust (default
 * TLS_TRUST_FILE, read once, when the first one starts). For tests; no
 * verified connection may exist when it is called. */
void tls_set_trust_file(const char *path);

/* A server engine with the current credentials and the shared session
 * cache, reset and waiting for a ClientHello; NULL when tls_setup() has
 * not succeeded. */
struct tls *tls_server_new(void);

/* A client engine for server_name (sent as SNI; may be NULL when !verify)
 * that has its ClientHello ready. verify: the server's chain must lead to
 * the trust store and name server_name; else any certificate is taken
 * (opportunistic TLS, RFC 7435: encryption without authentication). */
struct tls *tls_client_new(const char *server_name, bool verify);

void tls_free(struct tls *t);

br_ssl_engine_context *tls_engine(struct tls *t);

/* "TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256": the version and the cipher
 * suite (OpenSSL's names, as Received: headers by Postfix show them) of a
 * finished handshake. Static storage. */
const char *tls_describe(struct tls *t);

/* A short name for a BearSSL error code, for logs: "bad-mac",
 * "alert-received-40", "x509-not-trusted", ... buf holds at least 32. */
const char *tls_error_name(int err, char *buf, size_t n);

#endif
