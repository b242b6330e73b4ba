/*
 * dnscheck.c - the console's DNS page: the records each domain needs, and
 * the live check of what the resolver returns for them. see dnscheck.h
 *
 * A check is one request's lookups (one per record, at once, through
 * core/dns) and a deadline. The connection waits for it like it waits for
 * a commit (web_wait); the answer goes out when every lookup has called
 * back or at the deadline, whichever comes first, with what is known
 * then. A check outlives its answer until its last lookup has called
 * back (c-ares ends each by itself, 14 s at most with one server), and
 * counts against WEB_DNS_CHECKS_MAX until then: so checks asked again and
 * again of a resolver that never answers still hold at most
 * WEB_DNS_CHECKS_MAX * WEB_DNS_RECORDS queries open.
 */
#include "web/dnscheck.h"

#include <assert.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"
#include "core/loop.h"
#include "web/web_priv.h"

/* Checks at once, all clients together (the page checks one domain at a
 * time): their lookups are all this server's console asks of the
 * resolver. */
#define WEB_DNS_CHECKS_MAX 4
/* The answer comes within this, lookups finished or not: a record still
 * waiting is "unknown". A resolver that answers at all does in well under
 * a second; this leaves room for one retry after a lost packet (c-ares
 * sends it after 2 s). */
#define WEB_DNS_CHECK_SECONDS 5
#define WEB_DNS_STR(x)	      #x
#define WEB_DNS_XSTR(x)	      WEB_DNS_STR(x)
#define WEB_DNS_NO_ANSWER                                                      \
	"no answer within " WEB_DNS_XSTR(WEB_DNS_CHECK_SECONDS) " s"

/* --- what to publish ---------------------------------------------------- */

size_t web_dns_records(const char *domain, const char *host,
		       unsigned submission, unsigned pop3,
		       struct web_dns_rec *out)
{
	size_t n = 0;

#define REC(t, tg, w, ...)                                                     \
	do {                                                                   \
		assert(n < WEB_DNS_RECORDS);                                   \
		out[n].type = DNS_RR_##t;                                      \
		out[n].tag = tg;                                               \
		out[n].why = w;                                                \
		n++;                                                           \
	} while (0)
#define NAME(...)  snprintf(out[n].name, sizeof out[n].name, __VA_ARGS__)
#define VALUE(...) snprintf(out[n].value, sizeof out[n].value, __VA_ARGS__)
	NAME("%s.", domain);
	VALUE("10 %s.", host);
	REC(MX, NULL, "mail for the domain comes to this server");
	NAME("%s.", domain);
	VALUE("v=spf1 mx -all");
	REC(TXT, "v=spf1", "SPF: only the domain's MX may send its mail");
	NAME("_dmarc.%s.", domain);
	VALUE("v=DMARC1; p=quarantine; rua=mailto:postmaster@%s", domain);
	REC(TXT, "v=DMARC1", "DMARC: what receivers do with forged mail");
	NAME("autoconfig.%s.", domain);
	VALUE("%s.", host);
	REC(CNAME, NULL, "Thunderbird and others fetch their settings here");
	NAME("autodiscover.%s.", domain);
	VALUE("%s.", host);
	REC(CNAME, NULL, "Outlook looks for its settings here");
	NAME("_submission._tcp.%s.", domain);
	VALUE("0 1 %u %s.", submission, host);
	REC(SRV, NULL, "RFC 6186: where clients send mail");
	NAME("_pop3._tcp.%s.", domain);
	VALUE("0 1 %u %s.", pop3, host);
	REC(SRV, NULL, "RFC 6186: where clients fetch mail");
	NAME("_imap._tcp.%s.", domain);
	VALUE("0 0 0 .");
	REC(SRV, NULL, "RFC 6186: no IMAP here");
#undef NAME
#undef VALUE
#undef REC
	return n;
}

/* --- what the resolver returns ------------------------------------------ */

/* Does a TXT record carry tag ("v=spf1"), as its first term? The tag's
 * case does not matter (RFC 7208 4.5, RFC 7489 6.4 write it either way);
 * a space, a ';' or the end closes it, so "v=spf10" is not one. */
static bool web_dns_tagged(const char *rr, const char *tag)
{
	size_t n = strlen(tag);

	return strncasecmp(rr, tag, n) == 0 &&
	       (rr[n] == '\0' || rr[n] == ' ' || rr[n] == ';' || rr[n] == '\t');
}

static json_t *web_dns_json(const struct web_dns_rec *want, const char *status,
			    json_t *found, const char *error)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:o, s:s?}", "type",
			 dns_rr_name(want->type), "name", want->name, "value",
			 want->value, "status", status, "found", found, "error",
			 error);
}

json_t *web_dns_unknown(const struct web_dns_rec *want, const char *error)
{
	return web_dns_json(want, "unknown", json_array(), error);
}

json_t *web_dns_verdict(const struct web_dns_rec *want,
			const struct dns_records *got)
{
	json_t *found;
	size_t n = 0;
	bool same = false;
	char error[80];

	switch (got->status) {
	case DNS_ANSWER_OK:
		break;
	case DNS_ANSWER_NODATA:
	case DNS_ANSWER_NXDOMAIN:
		return web_dns_json(want, "missing", json_array(), got->error);
	case DNS_ANSWER_TEMP:
		return web_dns_unknown(want, got->error);
	}
	found = json_array();
	for (size_t i = 0; i < got->n; i++) {
		const char *rr = got->rr[i];
		if (want->tag != NULL && !web_dns_tagged(rr, want->tag))
			continue;
		json_array_append_new(found, json_string(rr));
		n++;
		/* TXT text is compared as it is; names in any case. */
		same = want->type == DNS_RR_TXT
			   ? strcmp(rr, want->value) == 0
			   : strcasecmp(rr, want->value) == 0;
	}
	if (n == 0 && got->cut)
		return web_dns_json(want, "missing", found,
				    "records were left out of a long answer");
	if (n == 0) {
		snprintf(error, sizeof error, "no %s record", want->tag);
		return web_dns_json(want, "missing", found, error);
	}
	if (n == 1 && same && !got->cut)
		return web_dns_json(want, "ok", found, NULL);
	return web_dns_json(want, "differs", found,
			    got->cut ? "records were left out of a long answer"
				     : NULL);
}

/* --- the check ------------------------------------------------------------ */

struct web_dns_check;

/* One record and its lookup. */
struct web_dns_item {
	struct web_dns_check *chk;
	struct web_dns_rec rec;
	json_t *verdict; /* once its lookup has called back in time */
};

struct web_dns_check {
	struct web_dns_check *next; /* on srv->dns_checks */
	struct web_server *srv;
	struct web_conn *w; /* waiting for the answer; NULL once it has it */
	struct timer *deadline;
	char domain[DNS_NAME_MAX + 1];
	size_t n, running; /* records; lookups that have not called back */
	struct web_dns_item item[WEB_DNS_RECORDS];
};

static void web_dns_check_free(struct web_dns_check *chk)
{
	struct web_dns_check **pp = &chk->srv->dns_checks;

	assert(chk->w == NULL && chk->running == 0);
	while (*pp != chk)
		pp = &(*pp)->next;
	*pp = chk->next;
	chk->srv->ndns_checks--;
	free(chk);
}

/* Answers the waiting request with every verdict in, the others
 * "unknown". */
static void web_dns_answer(struct web_dns_check *chk)
{
	struct web_conn *w = chk->w;
	const char *resolver = chk->srv->cfg->delivery.resolver;
	json_t *arr = json_array();

	assert(w != NULL);
	for (size_t i = 0; i < chk->n; i++) {
		struct web_dns_item *it = &chk->item[i];
		json_array_append_new(
		    arr, it->verdict != NULL
			     ? it->verdict
			     : web_dns_unknown(&it->rec, WEB_DNS_NO_ANSWER));
		it->verdict = NULL;
	}
	timer_free(chk->deadline);
	chk->deadline = NULL;
	chk->w = NULL;
	web_json(w, 200,
		 json_pack("{s:s, s:s, s:o}", "domain", chk->domain, "resolver",
			   resolver[0] ? resolver : "system", "records", arr));
	web_resume(w);
}

static void on_dns_record(const struct dns_records *r, void *arg)
{
	struct web_dns_item *it = arg;
	struct web_dns_check *chk = it->chk;

	if (chk->w != NULL)
		it->verdict = web_dns_verdict(&it->rec, r);
	if (--chk->running > 0)
		return;
	if (chk->w != NULL)
		web_dns_answer(chk);
	web_dns_check_free(chk);
}

static void on_dns_deadline(void *arg)
{
	struct web_dns_check *chk = arg;

	log_msg(LOG_INFO, "web",
		"sid=%s event=dns-check-late domain=%s waiting=%zu",
		conn_sid(chk->w->c), log_str(chk->domain), chk->running);
	web_dns_answer(chk);
}

struct api_dns_domain {
	const char *name;
	bool exists;
};

static int api_dns_exists(struct store_txn *txn, void *arg)
{
	struct api_dns_domain *d = arg;
	int r = store_domain_exists(txn, d->name);

	d->exists = r > 0;
	return r;
}

/* GET /api/dns/check?domain=D: the records D needs, each with what the
 * resolver returns now. */
void api_dns_check(struct web_conn *w)
{
	struct web_server *srv = w->srv;
	struct api_ports ports = {NULL, 0, 0, 0, 0};
	struct web_dns_rec recs[WEB_DNS_RECORDS];
	char domain[DNS_NAME_MAX + 1];
	struct web_dns_check *chk;
	struct api_dns_domain d = {domain, false};

	if (!web_query(w, "domain", domain, sizeof domain) ||
	    domain[0] == '\0') {
		web_error(w, 400, "which domain? (domain=...)");
		return;
	}
	for (char *p = domain; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	if (api_read(w, api_dns_exists, &d) < 0)
		return;
	if (!d.exists) {
		web_error(w, 404, "no such domain here");
		return;
	}
	if (srv->stopping) {
		web_error(w, 503, "the server is stopping");
		return;
	}
	if (srv->ndns_checks >= WEB_DNS_CHECKS_MAX) {
		web_json_h(w, 503,
			   json_pack("{s:s}", "error",
				     "too many DNS checks under way, try "
				     "again in a few seconds"),
			   "Retry-After: 15\r\nCache-Control: no-store\r\n");
		return;
	}
	conn_listeners_each(api_listener_each, &ports);
	chk = xcalloc(1, sizeof *chk);
	chk->srv = srv;
	chk->w = w;
	strcpy(chk->domain, domain);
	chk->n = web_dns_records(
	    domain, srv->cfg->hostname,
	    ports.submission ? ports.submission : ports.smtp, ports.pop3, recs);
	chk->next = srv->dns_checks;
	srv->dns_checks = chk;
	srv->ndns_checks++;
	chk->deadline = timer_new(on_dns_deadline, chk);
	timer_start(chk->deadline, WEB_DNS_CHECK_SECONDS * 1000);
	web_wait(w);
	/* Every callback comes later, from the loop: none runs in here. */
	chk->running = chk->n;
	for (size_t i = 0; i < chk->n; i++) {
		chk->item[i].chk = chk;
		chk->item[i].rec = recs[i];
		dns_lookup(recs[i].name, recs[i].type, on_dns_record,
			   &chk->item[i]);
	}
}

void api_dns_stop(struct web_server *srv)
{
	for (struct web_dns_check *chk = srv->dns_checks; chk != NULL;
	     chk = chk->next) {
		struct web_conn *w = chk->w;
		if (w == NULL)
			continue;
		for (size_t i = 0; i < chk->n; i++) {
			json_decref(chk->item[i].verdict);
			chk->item[i].verdict = NULL;
		}
		timer_free(chk->deadline);
		chk->deadline = NULL;
		chk->w = NULL;
		web_error(w, 503, "the server is stopping");
		web_resume(w);
	}
}

/* --- the records to publish --------------------------------------------- */

struct api_dns {
	const char *host;
	unsigned submission, pop3;
	json_t *arr;
};

static int api_dns_each(const char *name, void *arg)
{
	struct api_dns *d = arg;
	struct web_dns_rec recs[WEB_DNS_RECORDS];
	size_t n = web_dns_records(name, d->host, d->submission, d->pop3, recs);
	json_t *arr = json_array();

	for (size_t i = 0; i < n; i++)
		json_array_append_new(
		    arr,
		    json_pack("{s:s, s:s, s:s, s:s}", "type",
			      dns_rr_name(recs[i].type), "name", recs[i].name,
			      "value", recs[i].value, "why", recs[i].why));
	json_array_append_new(
	    d->arr, json_pack("{s:s, s:o}", "domain", name, "records", arr));
	return 0;
}

static int api_dns_fill(struct store_txn *txn, void *d)
{
	return store_domain_list(txn, api_dns_each, d);
}

/* GET /api/dns: every domain's records, at once (the check of each comes
 * from its own request). */
void api_dns(struct web_conn *w)
{
	struct api_ports ports = {NULL, 0, 0, 0, 0};
	struct api_dns d = {w->srv->cfg->hostname, 0, 0, json_array()};

	conn_listeners_each(api_listener_each, &ports);
	d.submission = ports.submission ? ports.submission : ports.smtp;
	d.pop3 = ports.pop3;
	if (api_read(w, api_dns_fill, &d) < 0) {
		json_decref(d.arr);
		return;
	}
	web_json(w, 200,
		 json_pack("{s:s, s:o}", "hostname", d.host, "domains", d.arr));
}
