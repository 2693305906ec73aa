# sacmrun: plain make + pkg-config. `make`, `make test`, `make demo`, `make bench`, `make install`.
PREFIX   ?= /usr/local
DESTDIR  ?=
BINDIR    = $(PREFIX)/bin
SHAREDIR  = $(PREFIX)/share/sacmrun
MANDIR    = $(PREFIX)/share/man/man1

PKGS     = lua5.4 libuv openssl expat libstrophe
CC      ?= cc
CFLAGS  ?= -O2 -g
WARNINGS = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
ifeq ($(WERROR),1)
WARNINGS += -Werror
endif
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARNINGS) $(CFLAGS) $(PKG_CFLAGS) -DSACM_SHAREDIR='"$(SHAREDIR)"'
LIBS       = $(PKG_LIBS) -lm

SRCS      = $(wildcard runtime/*.c)
OBJS      = $(SRCS:runtime/%.c=build/obj/%.o)
ASAN_OBJS = $(SRCS:runtime/%.c=build/asan/%.o)
SANITIZE  = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

.PHONY: all deps test test-unit test-asan check-install demo bench install uninstall clean FORCE

all: sacmrun

deps:
	@tools/install-deps.sh

sacmrun: $(OBJS)
	$(CC) $(CFLAGS) -o $@ $(OBJS) $(LIBS)

build/obj/%.o: runtime/%.c runtime/sacmrun.h | build/obj
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

# state.c has the install location compiled in: rebuild it when PREFIX changes.
build/sharedir: FORCE | build/obj
	@echo '$(SHAREDIR)' | cmp -s - $@ || echo '$(SHAREDIR)' > $@
build/obj/state.o build/asan/state.o: build/sharedir
FORCE:

# The same binary with AddressSanitizer and UBSan. It lives in the source tree's root as
# sacmrun-asan so it finds lua/ the same way ./sacmrun does.
sacmrun-asan: $(ASAN_OBJS)
	$(CC) $(CFLAGS) $(SANITIZE) -o $@ $(ASAN_OBJS) $(LIBS)

build/asan/%.o: runtime/%.c runtime/sacmrun.h | build/asan
	$(CC) $(ALL_CFLAGS) -O1 $(SANITIZE) -c -o $@ $<

build/obj build/asan:
	mkdir -p $@

# The README's test command: installs what is missing, builds without warnings, runs the specs in
# the real binary, then again under AddressSanitizer + UBSan.
test: deps
	$(MAKE) WERROR=1 sacmrun sacmrun-asan
	$(MAKE) test-unit
	$(MAKE) test-asan
	$(MAKE) check-install

test-unit: sacmrun
	SACMRUN_STRICT_EXIT=1 ./sacmrun spec/run.lua $(SPEC)

test-asan: sacmrun-asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	SACMRUN_STRICT_EXIT=1 SACMRUN_BIN=./sacmrun-asan ./sacmrun-asan spec/run.lua $(SPEC)

# Installs a copy under a temporary prefix and checks that the installed binary finds its library
# from anywhere, without the source tree.
check-install:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	mkdir -p "$$tmp/src"; cp -R Makefile runtime lua docs "$$tmp/src/"; \
	if [ -d policies ]; then cp -R policies "$$tmp/src/"; fi; \
	$(MAKE) -s -C "$$tmp/src" install PREFIX="$$tmp/prefix" >/dev/null; \
	rm -rf "$$tmp/src"; \
	out=$$(cd / && "$$tmp/prefix/bin/sacmrun" -e 'print(require("sacm._build").share_dir, sacm.crypto.uuid() ~= nil)'); \
	test "$$out" = "$$tmp/prefix/share/sacmrun	true" || { echo "check-install: got '$$out'"; exit 1; }; \
	test -f "$$tmp/prefix/share/man/man1/sacmrun.1"; \
	echo "check-install: installed sacmrun runs from its prefix"

demo: deps
	$(MAKE) sacmrun
	./sacmrun examples/demo.lua

bench: deps
	$(MAKE) sacmrun
	bench/run.sh

install: sacmrun
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SHAREDIR) $(DESTDIR)$(MANDIR)
	install -m 0755 sacmrun $(DESTDIR)$(BINDIR)/sacmrun
	cp -R lua $(DESTDIR)$(SHAREDIR)/
	if [ -d policies ]; then cp -R policies $(DESTDIR)$(SHAREDIR)/; fi
	install -m 0644 docs/sacmrun.1 $(DESTDIR)$(MANDIR)/sacmrun.1

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/sacmrun $(DESTDIR)$(MANDIR)/sacmrun.1
	rm -rf $(DESTDIR)$(SHAREDIR)

clean:
	rm -rf build sacmrun sacmrun-asan
