/* auth.c - SMTP AUTH (RFC 4954): the PLAIN (RFC 4616) and LOGIN
 * mechanisms, each with or without an initial response, "*" cancelling.
 * see session.h
 *
 * The password is checked on the thread pool (core/auth.h) with input
 * held back, so a pipelined command waits for the answer. A failure is
 * answered after [pop3] login_delay seconds, on a timer, with the
 * connection still paused: the guesser waits, nobody else does. Failures
 * count per client in the same throttle as POP3's, so a guesser cannot
 * switch protocols to get more tries. Payloads are never logged: the log
 * says who tried, never with what. */
#include "smtp/session.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"
#include "core/auth.h"
#include "core/conn.h"
#include "core/event.h"
#include "core/sasl.h"

#define AUTH_PROMPT_USER "334 VXNlcm5hbWU6" /* base64 "Username:" */
#define AUTH_PROMPT_PASS "334 UGFzc3dvcmQ6" /* base64 "Password:" */

bool smtp_auth_allowed(struct smtp_session *s)
{
	/* No password crosses the network in clear text unless the config
	 * allows it; a tool on this host (its address is ours on this
	 * connection) sends nothing over a network. */
	return !s->srv->cfg->require_tls_for_auth || conn_peer_is_local(s->c);
}

/* Ends the exchange: nothing pending, no name kept. */
static void auth_reset(struct smtp_session *s)
{
	s->auth_step = AUTH_STEP_NONE;
	free(s->auth_name);
	s->auth_name = NULL;
}

static void auth_failed_reply(struct smtp_session *s)
{
	auth_reset(s);
	smtp_error(s, "535 5.7.8 Authentication credentials invalid");
	conn_resume(s->c);
}

static void auth_delay_done(void *arg)
{
	auth_failed_reply(arg);
}

/* The thread pool's answer, on the loop. */
static void auth_done(void *arg, enum auth_result r)
{
	struct smtp_session *s = arg;
	unsigned delay = s->srv->cfg->login_delay;
	struct event ev;

	if (r == AUTH_OK) {
		s->auth_user = s->auth_name;
		s->auth_name = NULL;
		log_msg(LOG_INFO, s->srv->name,
			"sid=%s event=auth ip=%s user=%s mech=%s",
			conn_sid(s->c), conn_peer(s->c), log_str(s->auth_user),
			s->auth_mech);
		/* Core's subscribers hear of it; relay makes no grant of an
		 * SMTP login (its rights are this session's alone). */
		ev = (struct event){EVENT_LOGIN, "smtp", s->auth_user,
				    conn_peer_net(s->c)};
		event_emit(&ev);
		smtp_reply(s, "235 2.7.0 Authentication successful");
		conn_resume(s->c);
		return;
	}
	if (r == AUTH_TEMP) {
		/* The store could not be read: not the client's fault. */
		auth_reset(s);
		smtp_reply(s, "454 4.7.0 Temporary authentication failure");
		conn_resume(s->c);
		return;
	}
	auth_failed(conn_peer_net(s->c));
	/* The line fail2ban's filter matches: the same shape as POP3's. */
	log_msg(LOG_WARN, s->srv->name,
		"sid=%s event=auth-failed ip=%s user=%s", conn_sid(s->c),
		conn_peer(s->c), log_str(s->auth_name));
	if (delay == 0) {
		auth_failed_reply(s);
		return;
	}
	if (s->auth_delay == NULL)
		s->auth_delay = timer_new(auth_delay_done, s);
	timer_start(s->auth_delay, delay * 1000ull);
}

/* Checks user's password off the loop; input waits for the answer. A
 * name that is not an account (or empty: a malformed response) fails the
 * same way, after the same time. */
static void auth_check_password(struct smtp_session *s, const char *user,
				const char *pass)
{
	char *name = xstrdup(user);

	for (char *p = name; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	free(s->auth_name);
	s->auth_name = name;
	s->auth_step = AUTH_STEP_NONE;
	if (auth_throttled(conn_peer_net(s->c))) {
		auth_reset(s);
		smtp_error(s, "454 4.7.0 Too many failed authentications, "
			      "try later");
		return;
	}
	conn_pause(s->c);
	auth_check(s->srv->st, name, pass, auth_done, s);
}

static void auth_bad_base64(struct smtp_session *s)
{
	/* RFC 4954 4: a response that is not base64 gets 501. */
	auth_reset(s);
	smtp_error(s, "501 5.5.2 Invalid base64 data");
}

/* PLAIN's one response: authzid NUL authcid NUL passwd. One naming
 * another user than it logs in as fails like a wrong password. */
static void auth_plain(struct smtp_session *s, const char *b64)
{
	char user[STORE_ADDR_MAX + 1], pass[AUTH_PASS_MAX + 1];
	int r = sasl_plain(b64, user, sizeof user, pass, sizeof pass);

	if (r == -1)
		auth_bad_base64(s);
	else
		auth_check_password(s, r == 0 ? user : "", r == 0 ? pass : "");
	explicit_bzero(pass, sizeof pass);
}

/* LOGIN's first response, the user name; then the password prompt. */
static void auth_login_user(struct smtp_session *s, const char *b64)
{
	char user[STORE_ADDR_MAX + 1];
	int r = sasl_field(b64, user, sizeof user);

	if (r == -1) {
		auth_bad_base64(s);
		return;
	}
	free(s->auth_name);
	s->auth_name = xstrdup(r == 0 ? user : "");
	s->auth_step = AUTH_STEP_LOGIN_PASS;
	smtp_reply(s, AUTH_PROMPT_PASS);
}

static void auth_login_pass(struct smtp_session *s, const char *b64)
{
	char pass[AUTH_PASS_MAX + 1];
	int r = sasl_field(b64, pass, sizeof pass);

	if (r == -1)
		auth_bad_base64(s);
	else
		auth_check_password(s, s->auth_name, r == 0 ? pass : "");
	explicit_bzero(pass, sizeof pass);
}

void smtp_auth_command(struct smtp_session *s, char *arg)
{
	char *ir = strchr(arg, ' ');

	if (s->auth_user != NULL) {
		smtp_error(s, "503 5.5.1 Error: already authenticated");
		return;
	}
	if (!s->esmtp) {
		/* AUTH is a service extension: EHLO says it is there. */
		smtp_error(s, "503 5.5.1 Error: send EHLO first");
		return;
	}
	if (!smtp_auth_allowed(s)) {
		smtp_error(s, "530 5.7.0 Must issue a STARTTLS command first");
		return;
	}
	if (ir != NULL) {
		*ir++ = '\0';
		if (*ir == '\0' || strchr(ir, ' ') != NULL) {
			smtp_error(s, "501 5.5.4 Syntax error: AUTH mechanism "
				      "[initial-response]");
			return;
		}
		/* RFC 4954 4: "=" is an initial response of no octets. */
		if (strcmp(ir, "=") == 0)
			ir[0] = '\0';
	}
	if (strcasecmp(arg, "PLAIN") == 0) {
		s->auth_mech = "PLAIN";
		if (ir != NULL) {
			auth_plain(s, ir);
			return;
		}
		s->auth_step = AUTH_STEP_PLAIN;
		smtp_reply(s, "334 ");
	} else if (strcasecmp(arg, "LOGIN") == 0) {
		s->auth_mech = "LOGIN";
		if (ir != NULL) {
			auth_login_user(s, ir);
			return;
		}
		s->auth_step = AUTH_STEP_LOGIN_USER;
		smtp_reply(s, AUTH_PROMPT_USER);
	} else {
		smtp_error(s, "504 5.5.4 Unrecognized authentication type");
	}
}

void smtp_auth_response(struct smtp_session *s, char *line)
{
	enum smtp_auth_step step = s->auth_step;

	s->auth_step = AUTH_STEP_NONE;
	if (strcmp(line, "*") == 0) {
		auth_reset(s);
		smtp_error(s, "501 5.7.0 Authentication cancelled");
		return;
	}
	switch (step) {
	case AUTH_STEP_PLAIN:
		auth_plain(s, line);
		break;
	case AUTH_STEP_LOGIN_USER:
		auth_login_user(s, line);
		break;
	case AUTH_STEP_LOGIN_PASS:
		auth_login_pass(s, line);
		break;
	case AUTH_STEP_NONE:
		fatal("event=auth-response-without-step");
	}
}

void smtp_auth_free(struct smtp_session *s)
{
	timer_free(s->auth_delay);
	free(s->auth_name);
	free(s->auth_user);
}
