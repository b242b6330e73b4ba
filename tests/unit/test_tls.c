/* test_tls.c - TLS: the self-signed certificate writer (core/x509), loading
 * certificates and keys (core/tls), and the connection layer's TLS pump
 * (core/conn) over real loopback sockets.
 *
 * Test keys and certificates are made with the openssl command at run time
 * in a temporary directory (a test CA, a server certificate for mx.test
 * signed by it, RSA and EC pairs); nothing secret is committed.
 *
 * The loop tests run a server and its clients on one libuv loop, both
 * through core/conn: the client side is conn_connect() plus
 * conn_starttls_client(), verified against the test CA. The server speaks
 * a small line protocol (see srv_event); every test ends with the loop
 * closing with no live handle, and (under ASan) no leak. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/conn.h"
#include "core/tls.h"
#include "core/x509.h"

#define LINE_MAX_TEST 2048		     /* octets per protocol line */
#define BIG_LINE      1000		     /* octets per streamed line */
#define BIG_BYTES     (4u << 20)	     /* each way in the loopback test */
#define BIG_LINES     (BIG_BYTES / BIG_LINE) /* 4194 lines */

static char dir[64]; /* the test's files */

/* --- helpers --------------------------------------------------------------
 */

static const char *path(const char *name)
{
	static char buf[4][128];
	static int i;

	i = (i + 1) % 4;
	snprintf(buf[i], sizeof buf[i], "%s/%s", dir, name);
	return buf[i];
}

/* Runs a shell command in dir; its output goes to dir/sh.log. */
static void sh(const char *fmt, ...)
{
	char cmd[2048], full[2300];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	snprintf(full, sizeof full, "cd %s && (%s) >>sh.log 2>&1", dir, cmd);
	if (system(full) != 0) {
		print_error("failed: %s\n", cmd);
		fail();
	}
}

static char *slurp(const char *file)
{
	FILE *f = fopen(file, "rb");
	static char buf[65536];
	size_t n;

	buf[0] = '\0';
	if (f == NULL)
		return buf;
	n = fread(buf, 1, sizeof buf - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* A config naming cert and key as lines 7 and 8 of test.conf. */
static struct config conf(const char *cert, const char *key)
{
	struct config c;

	config_defaults(&c);
	strcpy(c.hostname, "mx.test");
	strcpy(c.file, "test.conf");
	if (cert != NULL)
		snprintf(c.tls.cert.path, sizeof c.tls.cert.path, "%s",
			 path(cert));
	if (key != NULL)
		snprintf(c.tls.key.path, sizeof c.tls.key.path, "%s",
			 path(key));
	c.tls.cert.line = 7;
	c.tls.key.line = 8;
	return c;
}

/* tls_setup(), with what it prints on stderr kept in err. */
static int setup_capture(const struct config *c, char **err)
{
	int saved = dup(2), fd, r;

	fflush(stderr);
	fd = open(path("stderr.txt"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	dup2(fd, 2);
	close(fd);
	r = tls_setup(c);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	*err = slurp(path("stderr.txt"));
	return r;
}

static int group_setup(void **state)
{
	(void)state;
	strcpy(dir, "/tmp/pillarbox-tls-XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	/* A test CA, and a server certificate for mx.test it signs, sent
	 * with the CA as its chain. */
	sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
	   "-nodes -keyout ca.key -out ca.pem -subj /CN=pillarbox-test-CA "
	   "-days 2 -addext basicConstraints=critical,CA:TRUE "
	   "-addext keyUsage=critical,keyCertSign");
	sh("printf 'subjectAltName=DNS:mx.test\\n' > ext.cnf");
	sh("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
	   "-keyout srv.key -out srv.csr -subj /CN=mx.test");
	sh("openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key "
	   "-CAcreateserial -days 2 -extfile ext.cnf -out srv.pem");
	sh("cat srv.pem ca.pem > chain.pem");
	/* RSA and EC pairs, in PKCS#8 and in the older formats. */
	sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout rsa.key "
	   "-out rsa.pem -subj /CN=mx.test -days 2");
	sh("openssl rsa -in rsa.key -traditional -out rsa-trad.key");
	sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout rsa2.key "
	   "-out rsa2.pem -subj /CN=mx.test -days 2");
	sh("openssl ec -in srv.key -out srv-sec1.key");
	sh("printf 'not a certificate\\n' > junk.pem");
	tls_set_trust_file(path("ca.pem"));
	return 0;
}

static int group_teardown(void **state)
{
	char cmd[128];

	(void)state;
	tls_cleanup();
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* --- x509: the self-signed certificate ------------------------------------
 */

static void dn_add(void *ctx, const void *p, size_t n)
{
	struct {
		unsigned char b[256];
		size_t n;
	} *dn = ctx;

	assert_true(dn->n + n <= sizeof dn->b);
	memcpy(dn->b + dn->n, p, n);
	dn->n += n;
}

/* A P-256 key from a fixed seed: the test is reproducible. */
static void test_key(br_ec_private_key *sk, unsigned char *kbuf,
		     br_ec_public_key *pk, unsigned char *pbuf)
{
	br_hmac_drbg_context rng;

	br_hmac_drbg_init(&rng, &br_sha256_vtable, "seed", 4);
	assert_true(br_ec_keygen(&rng.vtable, br_ec_get_default(), sk, kbuf,
				 BR_EC_secp256r1) > 0);
	assert_true(br_ec_compute_pub(br_ec_get_default(), pk, pbuf, sk) > 0);
}

/* Runs br_x509_minimal over one certificate, trusting (dn, pk) as a CA:
 * that checks the signature, the dates and the name. */
static unsigned verify_one(const unsigned char *der, size_t len,
			   const unsigned char *dn, size_t dnlen,
			   const br_ec_public_key *pk, const char *name)
{
	br_x509_trust_anchor ta = {
	    .dn = {(unsigned char *)dn, dnlen},
	    .flags = BR_X509_TA_CA,
	    .pkey = {.key_type = BR_KEYTYPE_EC,
		     .key.ec = {pk->curve, pk->q, pk->qlen}}};
	br_x509_minimal_context xc;
	const br_x509_class **v = &xc.vtable;

	br_x509_minimal_init(&xc, &br_sha256_vtable, &ta, 1);
	br_x509_minimal_set_hash(&xc, br_sha256_ID, &br_sha256_vtable);
	br_x509_minimal_set_ecdsa(&xc, br_ec_get_default(),
				  br_ecdsa_vrfy_asn1_get_default());
	(*v)->start_chain(v, name);
	(*v)->start_cert(v, (uint32_t)len);
	(*v)->append(v, der, len);
	(*v)->end_cert(v);
	return (*v)->end_chain(v);
}

static void test_x509_selfsigned(void **state)
{
	unsigned char kbuf[BR_EC_KBUF_PRIV_MAX_SIZE],
	    pbuf[BR_EC_KBUF_PUB_MAX_SIZE], der[X509_CERT_MAX];
	unsigned char serial[X509_SERIAL_LEN];
	static const unsigned char want_dn[] = {
	    0x30, 0x12, 0x31, 0x10, 0x30, 0x0e, 0x06, 0x03, 0x55, 0x04,
	    0x03, 0x0c, 0x07, 'm',  'x',  '.',	't',  'e',  's',  't'};
	struct {
		unsigned char b[256];
		size_t n;
	} dn = {.n = 0};
	br_x509_decoder_context dc;
	const br_x509_pkey *got;
	br_ec_private_key sk;
	br_ec_public_key pk;
	int64_t now = (int64_t)time(NULL);
	size_t len;
	FILE *f;
	char pem[4096];

	(void)state;
	test_key(&sk, kbuf, &pk, pbuf);
	memset(serial, 0xff, sizeof serial); /* made positive by the writer */
	len = x509_write_selfsigned(der, "mx.test", serial, now - 60,
				    now + 86400, &sk, &pk);
	assert_true(len > 200 && len < 400);
	assert_int_equal(der[0], 0x30);

	/* BearSSL decodes it: the key, the subject, not a CA. */
	br_x509_decoder_init(&dc, dn_add, &dn);
	br_x509_decoder_push(&dc, der, len);
	assert_int_equal(br_x509_decoder_last_error(&dc), 0);
	got = br_x509_decoder_get_pkey(&dc);
	assert_non_null(got);
	assert_int_equal(got->key_type, BR_KEYTYPE_EC);
	assert_int_equal(got->key.ec.curve, BR_EC_secp256r1);
	assert_memory_equal(got->key.ec.q, pk.q, pk.qlen);
	assert_false(br_x509_decoder_isCA(&dc));
	assert_int_equal(br_x509_decoder_get_signer_key_type(&dc),
			 BR_KEYTYPE_EC);
	assert_int_equal(dn.n, sizeof want_dn);
	assert_memory_equal(dn.b, want_dn, sizeof want_dn);

	/* The signature verifies, the dates hold, the name matches the
	 * subjectAltName; another name does not. */
	assert_int_equal(verify_one(der, len, dn.b, dn.n, &pk, "mx.test"), 0);
	assert_int_equal(verify_one(der, len, dn.b, dn.n, &pk, "other.test"),
			 BR_ERR_X509_BAD_SERVER_NAME);
	/* One flipped bit in the signed part breaks the signature. */
	der[len / 2] ^= 1;
	assert_int_not_equal(verify_one(der, len, dn.b, dn.n, &pk, "mx.test"),
			     0);
	der[len / 2] ^= 1;

	/* Past 2049 the dates are GeneralizedTime: still valid. */
	len = x509_write_selfsigned(der, "mx.test", serial, now - 60,
				    2600000000LL, &sk, &pk);
	assert_true(len > 0);
	assert_int_equal(verify_one(der, len, dn.b, dn.n, &pk, "mx.test"), 0);

	/* openssl parses it, and shows what we meant. */
	f = fopen(path("ss.pem"), "w");
	assert_non_null(f);
	fwrite(pem, 1, br_pem_encode(pem, der, len, "CERTIFICATE", 0), f);
	fclose(f);
	sh("openssl x509 -in ss.pem -noout -text > ss.txt");
	assert_non_null(strstr(slurp(path("ss.txt")), "DNS:mx.test"));
	assert_non_null(strstr(slurp(path("ss.txt")), "CA:FALSE"));
	assert_non_null(strstr(slurp(path("ss.txt")), "ecdsa-with-SHA256"));
	assert_non_null(strstr(slurp(path("ss.txt")), "Subject: CN = mx.test"));

	/* No name, or one too long for a CN: nothing written. */
	assert_int_equal(x509_write_selfsigned(der, "", serial, 0, 1, &sk, &pk),
			 0);
	assert_int_equal(
	    x509_write_selfsigned(der,
				  "a123456789a123456789a123456789a123456789"
				  "a123456789a123456789.test",
				  serial, 0, 1, &sk, &pk),
	    0);
}

/* --- credentials ------------------------------------------------------------
 */

static void expect_ok(const char *cert, const char *key)
{
	struct config c = conf(cert, key);
	char *err;

	if (setup_capture(&c, &err) != 0)
		print_error("%s + %s: %s\n", cert, key, err);
	assert_non_null(strstr(err, "event=tls-ready"));
	tls_cleanup();
}

static void expect_error(const char *cert, const char *key, const char *want)
{
	struct config c = conf(cert, key);
	char *err;

	assert_int_equal(setup_capture(&c, &err), -1);
	if (strstr(err, want) == NULL)
		print_error("want \"%s\", got \"%s\"\n", want, err);
	assert_non_null(strstr(err, want));
	assert_int_equal(strchr(err, '\n') - err + 1, (long)strlen(err));
	tls_cleanup();
}

static void test_load_keys(void **state)
{
	char want[512];

	(void)state;
	expect_ok("chain.pem", "srv.key");    /* EC, PKCS#8, with chain */
	expect_ok("srv.pem", "srv-sec1.key"); /* "EC PRIVATE KEY" */
	expect_ok("rsa.pem", "rsa.key");      /* RSA, PKCS#8 */
	expect_ok("rsa.pem", "rsa-trad.key"); /* "RSA PRIVATE KEY" */

	/* A key that is not the certificate's: line 8, the key's. */
	snprintf(want, sizeof want,
		 "test.conf:8: key %s does not match certificate %s",
		 path("rsa2.key"), path("rsa.pem"));
	expect_error("rsa.pem", "rsa2.key", want);
	expect_error("chain.pem", "rsa.key", "test.conf:8: key ");
	expect_error("rsa.pem", "srv.key", "does not match");

	/* Missing or unreadable files, and files with nothing usable. */
	snprintf(want, sizeof want,
		 "test.conf:7: cannot read %s: No such file or directory",
		 path("nosuch.pem"));
	expect_error("nosuch.pem", "srv.key", want);
	expect_error("srv.pem", "nosuch.key", "test.conf:8: cannot read ");
	expect_error("junk.pem", "srv.key", "test.conf:7: ");
	expect_error("junk.pem", "srv.key", "no CERTIFICATE");
	expect_error("srv.pem", "srv.pem", "test.conf:8: ");
	expect_error("srv.pem", "srv.pem", "no (unencrypted) PRIVATE KEY");

	/* One without the other. */
	expect_error("srv.pem", NULL, "test.conf:7: [tls] cert and key go");
	expect_error(NULL, "srv.key", "test.conf:8: [tls] cert and key go");
}

static void test_selfsigned_made_once(void **state)
{
	struct config c = conf(NULL, NULL);
	struct stat st;
	char *err, first[2048];

	(void)state;
	snprintf(c.data_dir, sizeof c.data_dir, "%s", path("data"));
	mkdir(c.data_dir, 0700);
	assert_int_equal(setup_capture(&c, &err), 0);
	assert_non_null(strstr(err, "event=tls-selfsigned"));
	assert_int_equal(stat(path("data/" TLS_SELFSIGNED_KEY), &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	snprintf(first, sizeof first, "%s",
		 slurp(path("data/" TLS_SELFSIGNED_CERT)));
	assert_non_null(strstr(first, "-----BEGIN CERTIFICATE-----"));
	sh("openssl x509 -in data/%s -noout -text > ss2.txt",
	   TLS_SELFSIGNED_CERT);
	assert_non_null(strstr(slurp(path("ss2.txt")), "DNS:mx.test"));
	sh("openssl pkey -in data/%s -noout", TLS_SELFSIGNED_KEY);
	tls_cleanup();

	/* The next start reuses them. */
	assert_int_equal(setup_capture(&c, &err), 0);
	assert_null(strstr(err, "event=tls-selfsigned"));
	assert_string_equal(slurp(path("data/" TLS_SELFSIGNED_CERT)), first);
	tls_cleanup();

	/* A data_dir that cannot be written: FILE:0: naming the file. */
	snprintf(c.data_dir, sizeof c.data_dir, "%s", path("nosuchdir"));
	assert_int_equal(setup_capture(&c, &err), -1);
	assert_non_null(strstr(err, "nosuchdir/" TLS_SELFSIGNED_CERT ":0: "));
}

/* A server engine can be made (with whatever credentials are current). */
static struct tls *tls_server_new_check(void)
{
	struct tls *t = tls_server_new();

	assert_non_null(t);
	return t;
}

static void test_reload(void **state)
{
	struct config c = conf("cur.pem", "cur.key");
	struct tls *old;
	char *err;

	(void)state;
	sh("cp chain.pem cur.pem && cp srv.key cur.key");
	assert_int_equal(setup_capture(&c, &err), 0);
	old = tls_server_new(); /* an engine holding the first pair */
	assert_non_null(old);

	/* A broken pair on reload: logged, the old one kept. */
	sh("cp rsa.pem cur.pem");
	assert_int_equal(tls_reload(), -1);
	tls_free(tls_server_new_check());
	/* A good new pair: taken; the old engine still has its own. */
	sh("cp rsa.key cur.key");
	assert_int_equal(tls_reload(), 0);
	tls_free(old);
	old = tls_server_new();
	assert_non_null(old);
	tls_free(old);
	tls_cleanup();
	assert_null(tls_server_new());
}

/* --- the loop tests: a server and its clients on one loop ------------------
 */

static uv_loop_t loop;
static uv_timer_t stopper;
static int clients_left;

/* What the server saw, checked once the loop is closed. */
static struct {
	int opened, freed, tls_ready;
	char seen[4096]; /* the lines it took (not D lines), '|' between */
} S;

static void seen_add(char *buf, size_t cap, const char *line)
{
	size_t n = strlen(buf);

	snprintf(buf + n, cap - n, "%s%s", n > 0 ? "|" : "", line);
}

/* The server: greets "HI"; answers "LINE <text>"; takes "D..." lines
 * silently and says how many octets on "SUM"; streams BIG_LINES lines of
 * BIG_LINE octets and "END" on "BIG"; says what TLS it has on "INFO";
 * STARTTLS -> "220 go", then a handshake; QUIT -> "BYE" and closes. */
struct srv {
	struct conn *c;
	unsigned big_next;
	unsigned long long data;
};

static void *srv_open(struct conn *c, void *ctx)
{
	struct srv *s = calloc(1, sizeof *s);

	(void)ctx;
	assert_non_null(s);
	s->c = c;
	S.opened++;
	conn_puts(c, "HI\r\n");
	return s;
}

static bool srv_big(struct conn *c, void *arg)
{
	struct srv *s = arg;
	char line[BIG_LINE];

	memset(line, 'x', BIG_LINE - 2);
	memcpy(line + BIG_LINE - 2, "\r\n", 2);
	conn_write(c, line, BIG_LINE);
	if (++s->big_next < BIG_LINES)
		return false;
	conn_puts(c, "END\r\n");
	return true;
}

static void srv_event(struct conn *c, void *session, enum conn_event ev)
{
	struct srv *s = session;
	const char *info;
	char *line;
	size_t len;

	switch (ev) {
	case CONN_TLS_READY:
		S.tls_ready++;
		seen_add(S.seen, sizeof S.seen, "TLS");
		break; /* and read what came with it */
	case CONN_TIMEOUT:
	case CONN_LIFETIME:
		conn_close(c);
		return;
	case CONN_OPEN:
	case CONN_SHUTDOWN:
		return;
	case CONN_DATAIN:
		break;
	}
	for (;;) {
		switch (conn_getline(c, LINE_MAX_TEST, &line, &len)) {
		case CONN_AGAIN:
			return;
		case CONN_LINE_TOOLONG:
		case CONN_LINE_BARELF:
			conn_puts(c, "ERR\r\n");
			continue;
		case CONN_LINE:
			break;
		}
		if (line[0] == 'D') {
			s->data += len + 2;
			continue;
		}
		seen_add(S.seen, sizeof S.seen, line);
		if (strcmp(line, "STARTTLS") == 0) {
			conn_puts(c, "220 go\r\n");
			conn_starttls(c);
			return;
		} else if (strcmp(line, "BIG") == 0) {
			s->big_next = 0;
			conn_stream(c, srv_big, s);
		} else if (strcmp(line, "SUM") == 0) {
			conn_printf(c, "SUM %llu\r\n", s->data);
		} else if (strcmp(line, "INFO") == 0) {
			info = conn_tls_info(c);
			conn_printf(c, "INFO %s %s\r\n",
				    conn_tls(c) ? "tls" : "-",
				    info != NULL ? info : "plain");
		} else if (strcmp(line, "QUIT") == 0) {
			conn_puts(c, "BYE\r\n");
			conn_close(c);
			return;
		} else {
			conn_printf(c, "LINE %s\r\n", line);
		}
	}
}

static void srv_free(void *session)
{
	S.freed++;
	free(session);
}

static const struct conn_proto srv_proto = {"srv", srv_open, srv_event,
					    srv_free};

/* A client, on conn_connect():
 *   CL_IMPLICIT  TLS from the start (conn_starttls_client at CONN_OPEN);
 *                on "HI": "hello", "INFO", then (unless small) uploads
 *                BIG_LINES "D" lines through conn_stream and asks SUM and
 *                BIG; then QUIT;
 *   CL_STARTTLS  on "HI": "STARTTLS" with "EVIL" pipelined behind it; on
 *                "220 go" conn_starttls_client; once TLS is up: "WHO",
 *                "INFO", "QUIT";
 *   CL_RAW       sends raw octets at open and counts what comes back. */
enum cl_mode { CL_IMPLICIT, CL_STARTTLS, CL_RAW };

struct cl {
	enum cl_mode mode;
	const char *name; /* for the certificate check and SNI */
	bool verify, small;
	const char *raw;
	size_t raw_len;
	/* results */
	struct conn *c;
	bool tls_ready, freed;
	unsigned up_next;
	unsigned long long big_got;
	size_t raw_got;
	char got[1024]; /* lines received, but the BIG ones */
	double t_open, t_end;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static bool cl_upload(struct conn *c, void *arg)
{
	struct cl *s = arg;
	char line[BIG_LINE];

	line[0] = 'D';
	memset(line + 1, 'd', BIG_LINE - 3);
	memcpy(line + BIG_LINE - 2, "\r\n", 2);
	conn_write(c, line, BIG_LINE);
	if (++s->up_next < BIG_LINES)
		return false;
	conn_puts(c, "SUM\r\nBIG\r\nQUIT\r\n");
	return true;
}

static void cl_line(struct cl *s, struct conn *c, char *line, size_t len)
{
	if (len == BIG_LINE - 2 && line[0] == 'x') {
		s->big_got += len + 2;
		return;
	}
	seen_add(s->got, sizeof s->got, line);
	if (strcmp(line, "HI") == 0 && s->mode == CL_IMPLICIT) {
		conn_puts(c, "hello\r\nINFO\r\n");
		if (s->small)
			conn_puts(c, "QUIT\r\n");
		else
			conn_stream(c, cl_upload, s);
	} else if (strcmp(line, "HI") == 0) {
		/* One write: the server reads both lines at once. */
		conn_puts(c, "STARTTLS\r\nEVIL\r\n");
	} else if (strcmp(line, "220 go") == 0) {
		conn_starttls_client(c, s->name, s->verify);
	}
}

static void cl_event(struct conn *c, void *session, enum conn_event ev)
{
	struct cl *s = session;
	const char *p;
	char *line;
	size_t len;

	s->c = c;
	switch (ev) {
	case CONN_OPEN:
		s->t_open = now_s();
		if (s->mode == CL_IMPLICIT)
			conn_starttls_client(c, s->name, s->verify);
		else if (s->mode == CL_RAW)
			conn_write(c, s->raw, s->raw_len);
		return;
	case CONN_TLS_READY:
		s->tls_ready = true;
		if (s->mode == CL_STARTTLS)
			conn_puts(c, "WHO\r\nINFO\r\nQUIT\r\n");
		return;
	case CONN_TIMEOUT:
	case CONN_LIFETIME:
		seen_add(s->got, sizeof s->got, "CLIENT-TIMEOUT");
		conn_close(c);
		return;
	case CONN_SHUTDOWN:
		return;
	case CONN_DATAIN:
		break;
	}
	if (s->mode == CL_RAW) {
		while (conn_peek(c, &p, &len)) {
			s->raw_got += len;
			conn_consume(c, len);
		}
		return;
	}
	while (conn_getline(c, LINE_MAX_TEST, &line, &len) == CONN_LINE)
		cl_line(s, c, line, len);
}

static void noop_done(void *arg)
{
	(void)arg;
}

static void on_stop(uv_timer_t *t)
{
	(void)t;
	conn_shutdown(noop_done, NULL);
	uv_close((uv_handle_t *)&stopper, NULL);
}

static void cl_free(void *session)
{
	struct cl *s = session;

	s->freed = true;
	s->t_end = now_s();
	if (--clients_left == 0) /* then close the listener */
		uv_timer_start(&stopper, on_stop, 0, 0);
}

static const struct conn_proto cl_proto = {"cl", NULL, cl_event, cl_free};

static int free_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof sa;
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	assert_true(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	close(fd);
	assert_true(port > 0);
	return port;
}

/* Runs a listener (implicit TLS or not, idle timeout in seconds) and the
 * clients until every client is gone, then shuts down; the loop must
 * close clean. The server uses chain.pem/srv.key, clients trust ca.pem. */
static void run_loop(bool tls, unsigned timeout, struct cl *cls, int n)
{
	struct config c = conf("chain.pem", "srv.key");
	struct config_listener cfg = {.timeout = timeout};
	struct conn_listen_opts opts = {.proto = &srv_proto,
					.cfg = &cfg,
					.busy_reply = "BUSY\r\n",
					.full_reply = "FULL\r\n",
					.tls = tls};
	struct sockaddr_in sa = {.sin_family = AF_INET};
	char *err;
	int port = free_port();

	memset(&S, 0, sizeof S);
	assert_int_equal(setup_capture(&c, &err), 0);
	assert_int_equal(uv_loop_init(&loop), 0);
	snprintf(cfg.listen, sizeof cfg.listen, "127.0.0.1:%d", port);
	assert_int_equal(conn_listen(&loop, &opts), 0);
	uv_timer_init(&loop, &stopper);
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	clients_left = n;
	for (int i = 0; i < n; i++)
		conn_connect(&loop, (struct sockaddr *)&sa, &cl_proto, &cls[i],
			     5, 20);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(conn_count(), 0);
	assert_int_equal(uv_loop_close(&loop), 0);
	assert_int_equal(S.opened, S.freed);
	for (int i = 0; i < n; i++)
		assert_true(cls[i].freed);
	tls_cleanup();
	tls_set_trust_file(path("ca.pem"));
}

/* Lines in both directions over implicit TLS, verified against the test
 * CA, and 4 MiB each way: the engine's 2 KiB records, partial socket
 * writes and input held back behind a stream all take part. */
static void test_loopback(void **state)
{
	struct cl cls[2] = {
	    {.mode = CL_IMPLICIT, .name = "mx.test", .verify = true},
	    /* Opportunistic: no name, no verification. */
	    {.mode = CL_IMPLICIT, .name = NULL, .verify = false, .small = true},
	};

	(void)state;
	run_loop(true, 20, cls, 2);
	if (strncmp(cls[0].got, "HI|LINE hello|INFO tls TLSv1.2 ECDHE-ECDSA-",
		    41) != 0)
		print_error("got %s\n", cls[0].got);
	assert_true(cls[0].tls_ready && cls[1].tls_ready);
	if (strstr(cls[0].got, "|SUM 4194000|END|BYE") == NULL)
		print_error("got %s, %llu octets\n", cls[0].got,
			    cls[0].big_got);
	assert_non_null(strstr(cls[0].got, "|SUM 4194000|END|BYE"));
	assert_int_equal(cls[0].big_got,
			 (unsigned long long)BIG_LINES * BIG_LINE);
	assert_non_null(strstr(cls[1].got, "HI|LINE hello|INFO tls TLSv1.2"));
	assert_non_null(strstr(cls[1].got, "|BYE"));
	assert_int_equal(S.tls_ready, 2);
}

/* STARTTLS with a command pipelined behind it: the command is discarded,
 * never answered or taken after the handshake (CVE-2011-0411). */
static void test_starttls_discards_pipelined(void **state)
{
	struct cl cls[1] = {
	    {.mode = CL_STARTTLS, .name = "mx.test", .verify = true}};

	(void)state;
	run_loop(false, 20, cls, 1);
	assert_true(cls[0].tls_ready);
	if (strncmp(cls[0].got, "HI|220 go|LINE WHO|INFO tls TLSv1.2 ECDHE-",
		    40) != 0)
		print_error("client got %s\n", cls[0].got);
	assert_non_null(strstr(cls[0].got, "HI|220 go|LINE WHO|INFO tls "));
	assert_non_null(strstr(cls[0].got, "|BYE"));
	assert_null(strstr(cls[0].got, "EVIL"));
	assert_string_equal(S.seen, "STARTTLS|TLS|WHO|INFO|QUIT");
}

/* A wrong name with verification: the client refuses the handshake. */
static void test_verify_fails_on_wrong_name(void **state)
{
	struct cl cls[1] = {
	    {.mode = CL_IMPLICIT, .name = "other.test", .verify = true}};

	(void)state;
	run_loop(true, 20, cls, 1);
	assert_false(cls[0].tls_ready);
	assert_string_equal(cls[0].got, "");
	assert_int_equal(S.tls_ready, 0);
}

/* A client that stops in the middle of its handshake is closed after the
 * idle timeout (1 s here); one that sends plaintext at once. Neither
 * gets a byte. */
static void test_stalled_and_garbage_handshakes(void **state)
{
	static const char half[] = {0x16, 0x03, 0x01, 0x00}; /* a header */
	struct cl cls[2] = {
	    {.mode = CL_RAW, .raw = half, .raw_len = sizeof half},
	    {.mode = CL_RAW, .raw = "EHLO x\r\n", .raw_len = 8},
	};
	double stalled, garbage;

	(void)state;
	run_loop(true, 1, cls, 2);
	stalled = cls[0].t_end - cls[0].t_open;
	garbage = cls[1].t_end - cls[1].t_open;
	if (stalled < 0.9 || stalled > 5 || garbage > 0.5)
		print_error("stalled %.2f s, garbage %.2f s\n", stalled,
			    garbage);
	assert_true(stalled >= 0.9 && stalled < 5);
	assert_true(garbage < 0.5);
	assert_int_equal(cls[0].raw_got, 0);
	assert_int_equal(cls[1].raw_got, 0);
	assert_int_equal(S.tls_ready, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_x509_selfsigned),
	    cmocka_unit_test(test_load_keys),
	    cmocka_unit_test(test_selfsigned_made_once),
	    cmocka_unit_test(test_reload),
	    cmocka_unit_test(test_loopback),
	    cmocka_unit_test(test_starttls_discards_pipelined),
	    cmocka_unit_test(test_verify_fails_on_wrong_name),
	    cmocka_unit_test(test_stalled_and_garbage_handshakes),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
