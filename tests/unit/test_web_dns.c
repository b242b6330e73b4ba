/* test_web_dns.c - the console's DNS page (web/dnscheck.c): the records a
 * domain needs, and the verdict on each given what a resolver returned
 * (as core/dns hands it over: canonical text, sorted). Each verdict is
 * compared as the exact JSON the check sends. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "web/dnscheck.h"

static struct web_dns_rec recs[WEB_DNS_RECORDS];

static void setup_records(const char *host)
{
	assert_int_equal(web_dns_records("example.org", host, 587, 110, recs),
			 WEB_DNS_RECORDS);
}

static void test_records(void **state)
{
	static const char *const want[WEB_DNS_RECORDS][3] = {
	    {"MX", "example.org.", "10 mx.test."},
	    {"TXT", "example.org.", "v=spf1 mx -all"},
	    {"TXT", "_dmarc.example.org.",
	     "v=DMARC1; p=quarantine; rua=mailto:postmaster@example.org"},
	    {"CNAME", "autoconfig.example.org.", "mx.test."},
	    {"CNAME", "autodiscover.example.org.", "mx.test."},
	    {"SRV", "_submission._tcp.example.org.", "0 1 587 mx.test."},
	    {"SRV", "_pop3._tcp.example.org.", "0 1 110 mx.test."},
	    {"SRV", "_imap._tcp.example.org.", "0 0 0 ."},
	};

	(void)state;
	setup_records("mx.test");
	for (size_t i = 0; i < WEB_DNS_RECORDS; i++) {
		assert_string_equal(dns_rr_name(recs[i].type), want[i][0]);
		assert_string_equal(recs[i].name, want[i][1]);
		assert_string_equal(recs[i].value, want[i][2]);
		assert_non_null(recs[i].why);
	}
	assert_string_equal(recs[1].tag, "v=spf1");
	assert_string_equal(recs[2].tag, "v=DMARC1");
	assert_null(recs[0].tag);
}

/* The verdict on want given an answer of status with the records rr
 * (NULL-terminated), as compact JSON. */
static char *verdict(const struct web_dns_rec *want, enum dns_answer status,
		     const char *error, bool cut, const char *const *rr)
{
	static struct dns_records got;
	static char out[2048];
	json_t *j;
	char *s;

	memset(&got, 0, sizeof got);
	got.status = status;
	got.error = error;
	got.cut = cut;
	for (; rr != NULL && *rr != NULL; rr++)
		got.rr[got.n++] = *rr;
	j = web_dns_verdict(want, &got);
	assert_non_null(j);
	s = json_dumps(j, JSON_COMPACT);
	snprintf(out, sizeof out, "%s", s);
	free(s);
	json_decref(j);
	return out;
}

#define MX_JSON                                                                \
	"{\"type\":\"MX\",\"name\":\"example.org.\",\"value\":\"10 mx.test.\""
#define SPF_JSON                                                               \
	"{\"type\":\"TXT\",\"name\":\"example.org.\",\"value\":\"v=spf1 mx "   \
	"-all\""

/* Exactly the one record: ok. Names compare in any case, both ways. */
static void test_verdict_exact(void **state)
{
	const char *one[] = {"10 mx.test.", NULL};
	const char *two[] = {"10 mx.test.", "20 backup.example.org.", NULL};
	const char *other[] = {"10 mx.example.net.", NULL};

	(void)state;
	setup_records("mx.test");
	assert_string_equal(verdict(&recs[0], DNS_ANSWER_OK, NULL, false, one),
			    MX_JSON ",\"status\":\"ok\",\"found\":[\"10 "
				    "mx.test.\"],\"error\":null}");
	assert_string_equal(
	    verdict(&recs[0], DNS_ANSWER_OK, NULL, false, two),
	    MX_JSON ",\"status\":\"differs\",\"found\":[\"10 mx.test.\","
		    "\"20 backup.example.org.\"],\"error\":null}");
	assert_string_equal(
	    verdict(&recs[0], DNS_ANSWER_OK, NULL, false, other),
	    MX_JSON ",\"status\":\"differs\",\"found\":[\"10 "
		    "mx.example.net.\"],\"error\":null}");
	/* Left out of a long answer: not "ok", whatever was kept. */
	assert_string_equal(
	    verdict(&recs[0], DNS_ANSWER_OK, NULL, true, one),
	    MX_JSON ",\"status\":\"differs\",\"found\":[\"10 mx.test.\"],"
		    "\"error\":\"records were left out of a long answer\"}");

	setup_records("MX.Test");
	assert_string_equal(
	    verdict(&recs[3], DNS_ANSWER_OK, NULL, false,
		    (const char *[]){"mx.test.", NULL}),
	    "{\"type\":\"CNAME\",\"name\":\"autoconfig.example.org.\","
	    "\"value\":\"MX.Test.\",\"status\":\"ok\",\"found\":[\"mx.test."
	    "\"],\"error\":null}");
}

/* No name, no record, no answer. */
static void test_verdict_missing_unknown(void **state)
{
	(void)state;
	setup_records("mx.test");
	assert_string_equal(verdict(&recs[0], DNS_ANSWER_NXDOMAIN,
				    "NXDOMAIN (no such name)", false, NULL),
			    MX_JSON
			    ",\"status\":\"missing\",\"found\":[],\"error\":"
			    "\"NXDOMAIN (no such name)\"}");
	assert_string_equal(
	    verdict(&recs[0], DNS_ANSWER_NODATA, "no such record", false, NULL),
	    MX_JSON ",\"status\":\"missing\",\"found\":[],\"error\":\"no such "
		    "record\"}");
	assert_string_equal(
	    verdict(&recs[0], DNS_ANSWER_TEMP, "SERVFAIL", false, NULL),
	    MX_JSON ",\"status\":\"unknown\",\"found\":[],\"error\":"
		    "\"SERVFAIL\"}");
	assert_string_equal(
	    verdict(&recs[7], DNS_ANSWER_TEMP, "DNS timeout", false, NULL),
	    "{\"type\":\"SRV\",\"name\":\"_imap._tcp.example.org.\",\"value\":"
	    "\"0 0 0 .\",\"status\":\"unknown\",\"found\":[],\"error\":\"DNS "
	    "timeout\"}");
}

/* SPF and DMARC: only the name's records of that kind count; one an admin
 * changed "differs", with what it says; two are "differs" (RFC 7208 4.5:
 * a permerror), even with ours among them. */
static void test_verdict_tagged(void **state)
{
	const char *ours[] = {"google-site-verification=abc", "v=spf1 mx -all",
			      NULL};
	const char *custom[] = {"MS=ms123",
				"v=spf1 mx include:_spf.example.net "
				"-all",
				NULL};
	const char *two[] = {"v=spf1 -all", "v=spf1 mx -all", NULL};
	const char *none[] = {"google-site-verification=abc", "v=spf10 x",
			      "spf1 mx -all", NULL};
	const char *dmarc[] = {"v=DMARC1;p=none", NULL};
	const char *dmarc_upper[] = {"V=DMARC1; p=reject", NULL};

	(void)state;
	setup_records("mx.test");
	assert_string_equal(verdict(&recs[1], DNS_ANSWER_OK, NULL, false, ours),
			    SPF_JSON
			    ",\"status\":\"ok\",\"found\":[\"v=spf1 mx "
			    "-all\"],\"error\":null}");
	assert_string_equal(
	    verdict(&recs[1], DNS_ANSWER_OK, NULL, false, custom),
	    SPF_JSON ",\"status\":\"differs\",\"found\":[\"v=spf1 mx "
		     "include:_spf.example.net -all\"],\"error\":null}");
	assert_string_equal(
	    verdict(&recs[1], DNS_ANSWER_OK, NULL, false, two),
	    SPF_JSON ",\"status\":\"differs\",\"found\":[\"v=spf1 -all\","
		     "\"v=spf1 mx -all\"],\"error\":null}");
	assert_string_equal(verdict(&recs[1], DNS_ANSWER_OK, NULL, false, none),
			    SPF_JSON ",\"status\":\"missing\",\"found\":[],"
				     "\"error\":\"no v=spf1 record\"}");
	assert_string_equal(verdict(&recs[1], DNS_ANSWER_OK, NULL, true, none),
			    SPF_JSON ",\"status\":\"missing\",\"found\":[],"
				     "\"error\":\"records were left out of a "
				     "long answer\"}");
	assert_string_equal(
	    verdict(&recs[2], DNS_ANSWER_OK, NULL, false, dmarc),
	    "{\"type\":\"TXT\",\"name\":\"_dmarc.example.org.\",\"value\":"
	    "\"v=DMARC1; p=quarantine; rua=mailto:postmaster@example.org\","
	    "\"status\":\"differs\",\"found\":[\"v=DMARC1;p=none\"],"
	    "\"error\":null}");
	assert_string_equal(
	    verdict(&recs[2], DNS_ANSWER_OK, NULL, false, dmarc_upper),
	    "{\"type\":\"TXT\",\"name\":\"_dmarc.example.org.\",\"value\":"
	    "\"v=DMARC1; p=quarantine; rua=mailto:postmaster@example.org\","
	    "\"status\":\"differs\",\"found\":[\"V=DMARC1; p=reject\"],"
	    "\"error\":null}");
	/* The SPF verdict ignores the DMARC tag and back. */
	assert_string_equal(verdict(&recs[2], DNS_ANSWER_OK, NULL, false, ours),
			    "{\"type\":\"TXT\",\"name\":\"_dmarc.example.org."
			    "\",\"value\":\"v=DMARC1; p=quarantine; "
			    "rua=mailto:postmaster@example.org\",\"status\":"
			    "\"missing\",\"found\":[],\"error\":\"no v=DMARC1 "
			    "record\"}");
}

static void test_unknown(void **state)
{
	json_t *j;
	char *s;

	(void)state;
	setup_records("mx.test");
	j = web_dns_unknown(&recs[5], "no answer within 5 s");
	s = json_dumps(j, JSON_COMPACT);
	assert_string_equal(
	    s, "{\"type\":\"SRV\",\"name\":\"_submission._tcp.example.org.\","
	       "\"value\":\"0 1 587 mx.test.\",\"status\":\"unknown\","
	       "\"found\":[],\"error\":\"no answer within 5 s\"}");
	free(s);
	json_decref(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_records),
	    cmocka_unit_test(test_verdict_exact),
	    cmocka_unit_test(test_verdict_missing_unknown),
	    cmocka_unit_test(test_verdict_tagged),
	    cmocka_unit_test(test_unknown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
