# sacmrun: plain make + pkg-config. `make`, `make test`, `make demo`, `make bench`, `make install`.
PREFIX   ?= /usr/local
DESTDIR  ?=
BINDIR    = $(PREFIX)/bin
LIBDIR    = $(PREFIX)/lib/sacmrun
SHAREDIR  = $(PREFIX)/share/sacmrun
MANDIR    = $(PREFIX)/share/man/man1

# The binary links only what every script needs. OpenSSL and libstrophe cost more at exec than
# the whole runtime (docs/performance.md), so the modules that use them (crypto.c, xmpp.c) are a
# shared object loaded on first require; so is sqlite.c (libsqlite3 added 11% to start-up).
CORE_PKGS = lua5.4 libuv expat
TLS_PKGS  = lua5.4 libuv openssl libstrophe
SQLITE_PKGS = lua5.4 sqlite3
PKGS      = $(CORE_PKGS) $(TLS_PKGS) $(SQLITE_PKGS)
CC      ?= cc
CFLAGS  ?= -O2 -g
WARNINGS = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
ifeq ($(WERROR),1)
WARNINGS += -Werror
endif
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
CORE_LIBS  := $(shell pkg-config --libs $(CORE_PKGS) 2>/dev/null) -ldl -lm
TLS_LIBS   := $(shell pkg-config --libs $(TLS_PKGS) 2>/dev/null) -lhttp_parser
SQLITE_LIBS := $(shell pkg-config --libs $(SQLITE_PKGS) 2>/dev/null)
# readline also costs every start (about 0.5 ms and 300 KB): the REPL is a module of its own too.
REPL_LIBS  := $(shell pkg-config --libs readline 2>/dev/null || echo -lreadline)
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -fPIC $(WARNINGS) $(CFLAGS) $(PKG_CFLAGS) \
             -DSACM_SHAREDIR='"$(SHAREDIR)"' -DSACM_LIBDIR='"$(LIBDIR)"'
# the runtime's sacm_* functions, for the TLS module
EXPORTS    = -Wl,--dynamic-list=runtime/exports.list

TLS_SRCS  = runtime/crypto.c runtime/x509.c runtime/xmpp.c runtime/http.c runtime/http_client.c runtime/http_common.c
SQLITE_SRCS = runtime/sqlite.c
REPL_SRCS = runtime/repl.c
SRCS      = $(filter-out $(TLS_SRCS) $(SQLITE_SRCS) $(REPL_SRCS),$(wildcard runtime/*.c))
OBJS      = $(SRCS:runtime/%.c=build/obj/%.o)
TLS_OBJS  = $(TLS_SRCS:runtime/%.c=build/obj/%.o)
ASAN_OBJS = $(SRCS:runtime/%.c=build/asan/%.o)
ASAN_TLS_OBJS = $(TLS_SRCS:runtime/%.c=build/asan/%.o)
SQLITE_OBJS = $(SQLITE_SRCS:runtime/%.c=build/obj/%.o)
ASAN_SQLITE_OBJS = $(SQLITE_SRCS:runtime/%.c=build/asan/%.o)
REPL_OBJS = $(REPL_SRCS:runtime/%.c=build/obj/%.o)
ASAN_REPL_OBJS = $(REPL_SRCS:runtime/%.c=build/asan/%.o)
SANITIZE  = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

.PHONY: all deps test test-unit test-asan check-install demo bench install uninstall clean FORCE

all: sacmrun sacmrun-tls.so sacmrun-sqlite.so sacmrun-repl.so

deps:
	@tools/install-deps.sh

sacmrun: $(OBJS) runtime/exports.list
	$(CC) $(CFLAGS) $(EXPORTS) -o $@ $(OBJS) $(CORE_LIBS)

# In the source tree the module sits next to the binary as <binary>-tls.so.
sacmrun-tls.so: $(TLS_OBJS)
	$(CC) $(CFLAGS) -shared -o $@ $(TLS_OBJS) $(TLS_LIBS)

sacmrun-sqlite.so: $(SQLITE_OBJS)
	$(CC) $(CFLAGS) -shared -o $@ $(SQLITE_OBJS) $(SQLITE_LIBS)
sacmrun-repl.so: $(REPL_OBJS)
	$(CC) $(CFLAGS) -shared -o $@ $(REPL_OBJS) $(REPL_LIBS)

# the HTTPS server and client share http_common.h
HTTP_OBJS = $(foreach d,obj asan,$(patsubst %,build/$(d)/%.o,http http_client http_common))
$(HTTP_OBJS): runtime/http_common.h

build/obj/%.o: runtime/%.c runtime/sacmrun.h | build/obj
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

# state.c has the install location compiled in: rebuild it when PREFIX changes.
build/sharedir: FORCE | build/obj
	@echo '$(SHAREDIR) $(LIBDIR)' | cmp -s - $@ || echo '$(SHAREDIR) $(LIBDIR)' > $@
build/obj/state.o build/asan/state.o: build/sharedir
FORCE:

# The same binary with AddressSanitizer and UBSan. It lives in the source tree's root as
# sacmrun-asan so it finds lua/ the same way ./sacmrun does.
sacmrun-asan: $(ASAN_OBJS) runtime/exports.list sacmrun-asan-tls.so sacmrun-asan-sqlite.so sacmrun-asan-repl.so
	$(CC) $(CFLAGS) $(SANITIZE) $(EXPORTS) -o $@ $(ASAN_OBJS) $(CORE_LIBS)

sacmrun-asan-tls.so: $(ASAN_TLS_OBJS)
	$(CC) $(CFLAGS) $(SANITIZE) -shared -o $@ $(ASAN_TLS_OBJS) $(TLS_LIBS)

sacmrun-asan-sqlite.so: $(ASAN_SQLITE_OBJS)
	$(CC) $(CFLAGS) $(SANITIZE) -shared -o $@ $(ASAN_SQLITE_OBJS) $(SQLITE_LIBS)
sacmrun-asan-repl.so: $(ASAN_REPL_OBJS)
	$(CC) $(CFLAGS) $(SANITIZE) -shared -o $@ $(ASAN_REPL_OBJS) $(REPL_LIBS)

build/asan/%.o: runtime/%.c runtime/sacmrun.h | build/asan
	$(CC) $(ALL_CFLAGS) -O1 $(SANITIZE) -c -o $@ $<

build/obj build/asan:
	mkdir -p $@

# The README's test command: installs what is missing, builds without warnings, runs the specs in
# the real binary, then again under AddressSanitizer + UBSan.
test: deps
	$(MAKE) WERROR=1 all sacmrun-asan
	$(MAKE) test-unit
	$(MAKE) test-asan
	$(MAKE) check-install

test-unit: all
	SACMRUN_STRICT_EXIT=1 ./sacmrun spec/run.lua $(SPEC)

test-asan: sacmrun-asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 LSAN_OPTIONS=suppressions=$(CURDIR)/spec/lsan.supp \
	UBSAN_OPTIONS=print_stacktrace=1 \
	SACMRUN_STRICT_EXIT=1 SACMRUN_BIN=./sacmrun-asan ./sacmrun-asan spec/run.lua $(SPEC)

# Installs a copy under a temporary prefix and checks that the installed binary finds its library
# from anywhere, without the source tree.
check-install:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	mkdir -p "$$tmp/src"; cp -R Makefile runtime lua docs "$$tmp/src/"; \
	if [ -d policies ]; then cp -R policies "$$tmp/src/"; fi; \
	$(MAKE) -s -C "$$tmp/src" install PREFIX="$$tmp/prefix" >/dev/null; \
	rm -rf "$$tmp/src"; \
	out=$$(cd / && "$$tmp/prefix/bin/sacmrun" -e 'print(require("sacm._build").share_dir, sacm.crypto.uuid() ~= nil and require("sacm._xmpp").new ~= nil and require("sacm._sqlite").open(":memory:") ~= nil)'); \
	test "$$out" = "$$tmp/prefix/share/sacmrun	true" || { echo "check-install: got '$$out'"; exit 1; }; \
	test -f "$$tmp/prefix/share/man/man1/sacmrun.1"; \
	echo "check-install: installed sacmrun runs from its prefix"

demo: deps
	$(MAKE) all
	./sacmrun examples/demo.lua

bench: deps
	$(MAKE) all
	bench/run.sh

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(SHAREDIR) $(DESTDIR)$(MANDIR)
	install -m 0755 sacmrun $(DESTDIR)$(BINDIR)/sacmrun
	install -m 0644 sacmrun-tls.so $(DESTDIR)$(LIBDIR)/sacmrun-tls.so
	install -m 0644 sacmrun-sqlite.so $(DESTDIR)$(LIBDIR)/sacmrun-sqlite.so
	install -m 0644 sacmrun-repl.so $(DESTDIR)$(LIBDIR)/sacmrun-repl.so
	cp -R lua $(DESTDIR)$(SHAREDIR)/
	if [ -d policies ]; then cp -R policies $(DESTDIR)$(SHAREDIR)/; fi
	# the grid's Prosody modules (ccm2 certificates, EXTERNAL against the ccm2 list): plugin_paths
	# in examples/servers/prosody.cfg.lua points here
	if [ -d examples/servers/prosody-modules ]; then \
		install -d $(DESTDIR)$(SHAREDIR)/prosody-modules && \
		install -m 0644 examples/servers/prosody-modules/*.lua $(DESTDIR)$(SHAREDIR)/prosody-modules/; fi
	install -m 0644 docs/sacmrun.1 $(DESTDIR)$(MANDIR)/sacmrun.1

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/sacmrun $(DESTDIR)$(MANDIR)/sacmrun.1
	rm -rf $(DESTDIR)$(SHAREDIR) $(DESTDIR)$(LIBDIR)

clean:
	rm -rf build sacmrun sacmrun-asan *.so
