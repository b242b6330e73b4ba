# pillarbox - see build.sh for the entry points; `make help` lists targets.
CC      ?= cc
CFLAGS  ?= -O2 -g
WARN     = -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -I.
PKGS     = libuv lmdb inih libcrypt libcares libidn2 jansson
# http-parser ships no pkg-config file
LIBS     = $(shell pkg-config --libs $(PKGS)) -lbearssl -lhttp_parser -lresolv
SAN      = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

BASE  = base/log.c base/metrics.c
STORE = store/store.c store/commit.c store/map.c
CORE  = core/config.c core/loop.c core/netaddr.c core/conn.c core/auth.c \
	core/event.c core/cmd.c core/sasl.c core/relay.c core/control.c \
	core/dns.c core/tls.c core/x509.c core/logring.c
SMTP  = smtp/smtp.c smtp/relay.c smtp/auth.c smtp/sender.c smtp/addr.c smtp/data.c smtp/parse.c \
	smtp/from.c smtp/dsn.c smtp/client.c smtp/deliver.c
POP3  = pop3/pop3.c pop3/parse.c
WEB   = web/web.c web/http.c web/api.c web/dnscheck.c build/web_ui.c
UI    = $(sort $(wildcard web/ui/*.html web/ui/*.css web/ui/*.js web/ui/*.svg))
SRC   = $(BASE) $(STORE) $(CORE) $(SMTP) $(POP3) $(WEB)
MAIN  = app/main.c
HDRS  = $(wildcard base/*.h core/*.h store/*.h smtp/*.h pop3/*.h web/*.h)

UNIT  = test_addr test_cmd test_netaddr test_data test_conn test_event test_relay test_control test_store \
	test_smtp_parse test_pop3_parse test_transcripts test_from test_dns \
	test_dsn test_config test_tls test_web_http test_web_dns

all: build/pillarbox
asan: build/asan/pillarbox
unit: $(addprefix build/,$(UNIT))

build/pillarbox: $(SRC) $(MAIN) $(HDRS) | build
	$(CC) $(WARN) $(CFLAGS) -o $@ $(SRC) $(MAIN) $(LIBS) -lpthread

build/asan/pillarbox: $(SRC) $(MAIN) $(HDRS) | build
	@mkdir -p build/asan
	$(CC) $(WARN) -O1 -g $(SAN) -o $@ $(SRC) $(MAIN) $(LIBS) -lpthread

# Unit tests link the whole library under the sanitizers plus cmocka.
build/test_%: tests/unit/test_%.c $(SRC) $(HDRS) | build
	$(CC) $(WARN) -O1 -g $(SAN) -o $@ $< $(SRC) $(LIBS) -lcmocka -lpthread

# The console's pages, compiled in (web/ui.h).
build/web_ui.c: web/ui/embed.sh $(UI) | build
	sh web/ui/embed.sh $@ $(UI)

build/loadgen: tests/bench/loadgen.c | build
	$(CC) $(WARN) -O2 -o $@ $< $(shell pkg-config --libs libuv) -lbearssl

build/syncrate: tests/bench/syncrate.c | build
	$(CC) $(WARN) -O2 -o $@ $<

build:
	@mkdir -p build

clean:
	rm -rf build

.PHONY: all asan unit clean
