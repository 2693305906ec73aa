# sacmrun: plain make + pkg-config. `make`, `make test`, `make demo`, `make bench`, `make install`.
PREFIX   ?= /usr/local
DESTDIR  ?=
BINDIR    = $(PREFIX)/bin
LIBDIR    = $(PREFIX)/lib/sacmrun
SHAREDIR  = $(PREFIX)/share/sacmrun
MANDIR    = $(PREFIX)/share/man/man1

# The binary links only what every script needs. OpenSSL and libstrophe cost more at exec than
# the whole runtime (docs/performance.md), so the modules that use them are shared objects loaded
# on first require, one per concern so a script maps only what it uses: crypto (digests, X.509:
# libcrypto), xmpp (libstrophe), http (server and client: libssl, http-parser). So is sqlite.c
# (libsqlite3 added 11% to start-up), and pg.c (libpq pulls in OpenSSL, Kerberos and LDAP: no
# plain script should map those). What they share lives in the binary (sacm_*, exports.list).
CORE_PKGS = lua5.4 libuv expat
CRYPTO_PKGS = lua5.4 libuv libcrypto
XMPP_PKGS = lua5.4 libuv libstrophe libssl libcrypto
HTTP_PKGS = lua5.4 libuv openssl
SQLITE_PKGS = lua5.4 sqlite3
PG_PKGS   = lua5.4 libpq
PKGS      = $(CORE_PKGS) $(HTTP_PKGS) $(XMPP_PKGS) $(SQLITE_PKGS) $(PG_PKGS)
CC      ?= cc
CFLAGS  ?= -O2 -g
WARNINGS = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
ifeq ($(WERROR),1)
WARNINGS += -Werror
endif
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
CORE_LIBS  := $(shell pkg-config --libs $(CORE_PKGS) 2>/dev/null) -ldl -lm
CRYPTO_LIBS := $(shell pkg-config --libs $(CRYPTO_PKGS) 2>/dev/null)
XMPP_LIBS  := $(shell pkg-config --libs $(XMPP_PKGS) 2>/dev/null)
HTTP_LIBS  := $(shell pkg-config --libs $(HTTP_PKGS) 2>/dev/null) -lhttp_parser
SQLITE_LIBS := $(shell pkg-config --libs $(SQLITE_PKGS) 2>/dev/null)
PG_LIBS    := $(shell pkg-config --libs $(PG_PKGS) 2>/dev/null || echo -lpq)
# readline also costs every start (about 0.5 ms and 300 KB): the REPL is a module of its own too.
REPL_LIBS  := $(shell pkg-config --libs readline 2>/dev/null || echo -lreadline)
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -fPIC $(WARNINGS) $(CFLAGS) $(PKG_CFLAGS) \
             -DSACM_SHAREDIR='"$(SHAREDIR)"' -DSACM_LIBDIR='"$(LIBDIR)"'
# the runtime's sacm_* functions, for the loadable modules
EXPORTS    = -Wl,--dynamic-list=runtime/exports.list

CRYPTO_SRCS = runtime/crypto.c runtime/x509.c
XMPP_SRCS = runtime/xmpp.c runtime/xmpp_error.c runtime/xmpp_stanza.c runtime/xmpp_trust.c runtime/xmpp_hooks.c
HTTP_SRCS = runtime/http.c runtime/http_conn.c runtime/http_tls.c runtime/http_client.c \
            runtime/http_client_tls.c runtime/http_common.c runtime/tls_stream.c
SQLITE_SRCS = runtime/sqlite.c runtime/sqlite_stmt.c
PG_SRCS   = runtime/pg.c
REPL_SRCS = runtime/repl.c
# The loadable modules, NAME:VARIABLE: <binary>-NAME.so in the tree (sacmrun-NAME.so installed under
# LIBDIR), built from VARIABLE_SRCS and linked with VARIABLE_LIBS only.
MODULES   = crypto:CRYPTO xmpp:XMPP http:HTTP sqlite:SQLITE pg:PG repl:REPL
module_name = $(firstword $(subst :, ,$(1)))
module_var  = $(lastword $(subst :, ,$(1)))
MODULE_SOS  = $(foreach m,$(MODULES),sacmrun-$(call module_name,$(m)).so)
ASAN_MODULE_SOS = $(foreach m,$(MODULES),sacmrun-asan-$(call module_name,$(m)).so)
SRCS      = $(filter-out $(foreach m,$(MODULES),$($(call module_var,$(m))_SRCS)),$(wildcard runtime/*.c))
OBJS      = $(SRCS:runtime/%.c=build/obj/%.o)
ASAN_OBJS = $(SRCS:runtime/%.c=build/asan/%.o)
SANITIZE  = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

# Installed commands: examples/SCRIPT.lua as PREFIX/bin/sacm-NAME (SCRIPT:NAME).
COMMANDS = grid/repository:repository grid/evaluator:evaluator grid/collector:collector \
           grid/orchestrator:orchestrator assess:assess policy:policy backup:backup enroll:enroll

.PHONY: all deps test test-fast test-unit test-asan test-c lint check-docs check-install demo bench install uninstall clean FORCE fuzz fuzz-build fuzz-smoke

all: sacmrun $(MODULE_SOS)

deps:
	@tools/install-deps.sh

sacmrun: $(OBJS) runtime/exports.list
	$(CC) $(CFLAGS) $(EXPORTS) -o $@ $(OBJS) $(CORE_LIBS)

# One rule pair per module: sacmrun-NAME.so and its instrumented twin sacmrun-asan-NAME.so
# (the ASan binary loads <binary>-NAME.so, so it gets its own copy).
define module_rules
sacmrun-$(1).so: $$($(2)_SRCS:runtime/%.c=build/obj/%.o)
	$$(CC) $$(CFLAGS) -shared -o $$@ $$^ $$($(2)_LIBS)
sacmrun-asan-$(1).so: $$($(2)_SRCS:runtime/%.c=build/asan/%.o)
	$$(CC) $$(CFLAGS) $$(SANITIZE) -shared -o $$@ $$^ $$($(2)_LIBS)
endef
$(foreach m,$(MODULES),$(eval $(call module_rules,$(call module_name,$(m)),$(call module_var,$(m)))))

# Header dependencies come from the compiler (-MMD writes build/*/NAME.d beside each object,
# -MP adds an empty rule per header so a deleted header does not stop the build).
DEPFLAGS = -MMD -MP
-include $(wildcard build/obj/*.d build/asan/*.d)
# an object built before this rule has no .d yet: build it again once so its headers are known
$(foreach o,$(wildcard build/obj/*.o build/asan/*.o),$(if $(wildcard $(o:.o=.d)),,$(eval $(o): FORCE)))

build/obj/%.o: runtime/%.c | build/obj
	$(CC) $(ALL_CFLAGS) $(DEPFLAGS) -c -o $@ $<

# state.c has the install location compiled in: rebuild it when PREFIX changes.
build/sharedir: FORCE | build/obj
	@echo '$(SHAREDIR) $(LIBDIR)' | cmp -s - $@ || echo '$(SHAREDIR) $(LIBDIR)' > $@
build/obj/state.o build/asan/state.o: build/sharedir
FORCE:

# The same binary with AddressSanitizer and UBSan. It lives in the source tree's root as
# sacmrun-asan so it finds lua/ the same way ./sacmrun does.
sacmrun-asan: $(ASAN_OBJS) runtime/exports.list $(ASAN_MODULE_SOS)
	$(CC) $(CFLAGS) $(SANITIZE) $(EXPORTS) -o $@ $(ASAN_OBJS) $(CORE_LIBS)

build/asan/%.o: runtime/%.c | build/asan
	$(CC) $(ALL_CFLAGS) $(DEPFLAGS) -O1 $(SANITIZE) -c -o $@ $<

build/obj build/asan:
	mkdir -p $@

# The README's test command: installs what is missing, builds without warnings, runs the specs in
# the real binary, then again under AddressSanitizer + UBSan.
test: deps
	$(MAKE) WERROR=1 all sacmrun-asan
	$(MAKE) lint
	$(MAKE) check-docs
	$(MAKE) test-c
	$(MAKE) test-unit
	$(MAKE) test-asan
	$(MAKE) fuzz-smoke
	$(MAKE) check-install

test-unit: all
	SACMRUN_STRICT_EXIT=1 ./sacmrun spec/run.lua $(SPEC)

# The fast layer: the specs that start no server (Prosody, ejabberd, PostgreSQL, nginx, a grid).
# End-to-end specs carry the busted tag #e2e in their describe (docs/testing.md).
test-fast: all
	SACMRUN_TEST_LAYER=fast SACMRUN_STRICT_EXIT=1 ./sacmrun spec/run.lua --exclude-tags=e2e $(SPEC)

test-asan: sacmrun-asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 LSAN_OPTIONS=suppressions=$(CURDIR)/spec/lsan.supp \
	UBSAN_OPTIONS=print_stacktrace=1 \
	SACMRUN_STRICT_EXIT=1 SACMRUN_BIN=./sacmrun-asan ./sacmrun-asan spec/run.lua $(SPEC)

# libFuzzer targets (fuzz/, docs/testing.md "Fuzzing"), built with clang under ASan and UBSan.
# The runtime's sources are compiled again with coverage instrumentation into build/fuzz/obj;
# every target links all of them but main.c (and the SQLite, PostgreSQL and REPL modules, which
# no target reaches). `make fuzz` runs each target FUZZ_SECONDS; `make fuzz-smoke` (part of
# `make test`) FUZZ_SMOKE_SECONDS each. Seeds: spec/fixtures/fuzz/TARGET/.
FUZZ_CC            ?= clang
FUZZ_SECONDS       ?= 600
FUZZ_SMOKE_SECONDS ?= 20
FUZZ_TARGETS        = xml_roundtrip http_request stanza_table forms payload
FUZZ_SANITIZE       = -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS         = -std=c11 -D_GNU_SOURCE -g -O1 $(WARNINGS) $(PKG_CFLAGS) $(FUZZ_SANITIZE)
FUZZ_RUNTIME_SRCS   = $(filter-out runtime/main.c $(SQLITE_SRCS) $(PG_SRCS) $(REPL_SRCS),$(wildcard runtime/*.c))
FUZZ_RUNTIME_OBJS   = $(FUZZ_RUNTIME_SRCS:runtime/%.c=build/fuzz/obj/%.o)

build/fuzz/obj/%.o: runtime/%.c $(wildcard runtime/*.h) | build/fuzz/obj
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<
build/fuzz/obj/harness.o: fuzz/harness.c fuzz/harness.h runtime/sacmrun.h | build/fuzz/obj
	$(FUZZ_CC) $(FUZZ_CFLAGS) -DFUZZ_DIR='"$(CURDIR)/fuzz"' -DFUZZ_LUA_DIR='"$(CURDIR)/lua"' -c -o $@ $<
build/fuzz/%: fuzz/%.c fuzz/harness.h build/fuzz/obj/harness.o $(FUZZ_RUNTIME_OBJS)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< build/fuzz/obj/harness.o $(FUZZ_RUNTIME_OBJS) \
	  $(CORE_LIBS) $(CRYPTO_LIBS) $(XMPP_LIBS) $(HTTP_LIBS)
build/fuzz/obj:
	mkdir -p $@

# kept: they are built by a pattern rule only for the targets, and would be deleted after
.SECONDARY: $(FUZZ_RUNTIME_OBJS) build/fuzz/obj/harness.o
fuzz-build: $(FUZZ_TARGETS:%=build/fuzz/%)
fuzz: deps fuzz-build
	fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)
fuzz-smoke: fuzz-build
	fuzz/run.sh $(FUZZ_SMOKE_SECONDS) $(FUZZ_TARGETS)

# C-level table-driven tests (spec/c/): helpers Lua cannot drive piece by piece (options, headers,
# the TLS stream of the HTTP server and client), under ASan+UBSan.
C_TEST_SRCS = spec/c/runtime_test.c runtime/options.c runtime/http_common.c
build/runtime_test: $(C_TEST_SRCS) spec/c/check.h runtime/options.h runtime/http_common.h | build/asan
	$(CC) $(ALL_CFLAGS) -O1 $(SANITIZE) -o $@ $(C_TEST_SRCS) $(HTTP_LIBS)
build/tls_stream_test: spec/c/tls_stream_test.c spec/c/check.h runtime/tls_stream.c runtime/tls_stream.h | build/asan
	$(CC) $(ALL_CFLAGS) -O1 $(SANITIZE) -o $@ spec/c/tls_stream_test.c runtime/tls_stream.c $(HTTP_LIBS)
test-c: build/runtime_test build/tls_stream_test
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ./build/runtime_test
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ./build/tls_stream_test

# Every public function of the main Lua modules has an entry in docs/api/ (tools/check-api-docs.lua)
# and LuaCATS annotations (tools/check-api-annotations.lua); tools/api-modules.lua lists them.
check-docs: sacmrun
	./sacmrun tools/check-api-docs.lua
	./sacmrun tools/check-api-annotations.lua

# luacheck (Debian's lua-check) over every Lua file of the tree; .luacheckrc names the globals
# the runtime, busted, the policy sandbox and Prosody define. Zero warnings is the bar.
LINT_DIRS = lua spec examples bench policies tools
lint:
	luacheck --quiet --formatter=plain $(LINT_DIRS)

# Installs a copy under a temporary prefix and checks that the installed binary finds its library
# from anywhere, without the source tree.
check-install:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	mkdir -p "$$tmp/src"; cp -R Makefile runtime lua docs examples "$$tmp/src/"; \
	if [ -d policies ]; then cp -R policies "$$tmp/src/"; fi; \
	$(MAKE) -s -C "$$tmp/src" install PREFIX="$$tmp/prefix" >/dev/null; \
	rm -rf "$$tmp/src"; \
	out=$$(cd / && "$$tmp/prefix/bin/sacmrun" -e 'print(require("sacm._build").share_dir, sacm.crypto.uuid() ~= nil and require("sacm._xmpp").new ~= nil and require("sacm._sqlite").open(":memory:") ~= nil and require("sacm._pg").connect ~= nil)'); \
	test "$$out" = "$$tmp/prefix/share/sacmrun	true" || { echo "check-install: got '$$out'"; exit 1; }; \
	for so in $(MODULE_SOS); do test -f "$$tmp/prefix/lib/sacmrun/$$so" || { echo "check-install: $$so not installed"; exit 1; }; done; \
	loaded=$$(cd / && "$$tmp/prefix/bin/sacmrun" -e 'for _, m in ipairs{"_crypto", "_x509", "_xmpp", "_http", "_http_client", "_sqlite", "_pg", "_repl"} do require("sacm." .. m) end; local seen = {}; for path in io.open("/proc/self/maps"):read("a"):gmatch("(/%S+/sacmrun%-[%w]+%.so)\n") do if not seen[path] then seen[path] = true; print(path) end end' | sort); \
	want=$$(for so in $(MODULE_SOS); do echo "$$tmp/prefix/lib/sacmrun/$$so"; done | sort); \
	test "$$loaded" = "$$want" || { echo "check-install: the modules mapped from the prefix were '$$loaded', wanted '$$want'"; exit 1; }; \
	test -f "$$tmp/prefix/share/man/man1/sacmrun.1"; \
	cd / && "$$tmp/prefix/bin/sacm-assess" --help | grep -q '^usage: sacm-assess' \
	  || { echo "check-install: sacm-assess --help does not run from the prefix"; exit 1; }; \
	"$$tmp/prefix/bin/sacm-enroll" --help | grep -q 'enroll.lua enroll --jid' \
	  || { echo "check-install: sacm-enroll --help does not run from the prefix"; exit 1; }; \
	"$$tmp/prefix/bin/sacm-policy" check "$$tmp/prefix/share/sacmrun/policies/"*.lua >/dev/null \
	  || { echo "check-install: sacm-policy does not check the installed policies"; exit 1; }; \
	if command -v systemd-analyze >/dev/null; then \
	  SYSTEMD_LOG_LEVEL=err systemd-analyze verify --man=no "$$tmp/prefix/share/sacmrun/systemd/"*.service "$$tmp/prefix/share/sacmrun/systemd/"*.timer \
	    || { echo "check-install: systemd-analyze verify refused the installed units"; exit 1; }; fi; \
	echo "check-install: installed sacmrun, its modules ($(MODULE_SOS)), commands and units run from the prefix"

demo: deps
	$(MAKE) all
	./sacmrun examples/demo.lua

bench: deps
	$(MAKE) all
	bench/run.sh

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(SHAREDIR) $(DESTDIR)$(MANDIR)
	install -m 0755 sacmrun $(DESTDIR)$(BINDIR)/sacmrun
	install -m 0644 $(MODULE_SOS) $(DESTDIR)$(LIBDIR)/
	cp -R lua $(DESTDIR)$(SHAREDIR)/
	if [ -d policies ]; then cp -R policies $(DESTDIR)$(SHAREDIR)/; fi
	# the grid's Prosody modules (ccm2 certificates, EXTERNAL against the ccm2 list): plugin_paths
	# in examples/servers/prosody.cfg.lua points here
	if [ -d examples/servers/prosody-modules ]; then \
		install -d $(DESTDIR)$(SHAREDIR)/prosody-modules && \
		install -m 0644 examples/servers/prosody-modules/*.lua $(DESTDIR)$(SHAREDIR)/prosody-modules/; fi
	install -m 0644 docs/sacmrun.1 $(DESTDIR)$(MANDIR)/sacmrun.1
	# what docs/deploy.md uses: the role scripts, commands, server configurations and docs
	cp -R examples docs $(DESTDIR)$(SHAREDIR)/
	install -d $(DESTDIR)$(SHAREDIR)/systemd
	for unit in examples/systemd/*.service examples/systemd/*.timer; do \
	  sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SHAREDIR@|$(SHAREDIR)|g' "$$unit" \
	    > $(DESTDIR)$(SHAREDIR)/systemd/$$(basename "$$unit"); done
	for cmd in $(COMMANDS); do \
	  printf '#!/bin/sh\n# sacm-%s: installed by sacmrun'"'"'s make install\nexec "%s/sacmrun" "%s/examples/%s.lua" "$$@"\n' \
	    "$${cmd##*:}" "$(BINDIR)" "$(SHAREDIR)" "$${cmd%%:*}" > $(DESTDIR)$(BINDIR)/sacm-$${cmd##*:}; \
	  chmod 0755 $(DESTDIR)$(BINDIR)/sacm-$${cmd##*:}; done

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/sacmrun $(DESTDIR)$(MANDIR)/sacmrun.1
	for cmd in $(COMMANDS); do rm -f $(DESTDIR)$(BINDIR)/sacm-$${cmd##*:}; done
	rm -rf $(DESTDIR)$(SHAREDIR) $(DESTDIR)$(LIBDIR)

clean:
	rm -rf build sacmrun sacmrun-asan *.so
