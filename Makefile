# libmultiserver — make-based build of the same C sources SwiftPM compiles.
#   make                 build/libmultiserver.a, build/libmultiserver.so, build/multiserver
#   make test            C unit + socket tests, CLI tests (plain build)
#   make test-asan       the same under -fsanitize=address,undefined (build/asan)
#   make fuzz            libFuzzer targets (clang), FUZZ_SECONDS each (60, two at a time; soak: 300)
#   make fuzz-regress    every committed corpus and regression input, once each
#   make test-valgrind   the C tests under valgrind memcheck (no leaks, no invalid access)
#   make soak            long runs, not part of check (see "soak" below)
#   make install PREFIX=/usr/local
#   make examples        C example built against the *installed* header/pkg-config
#   make bench

CC      ?= cc
CFLAGS  ?= -O2 -g
LDFLAGS ?=
PREFIX  ?= /usr/local
BUILD   ?= build
FUZZCC  ?= clang
FUZZ_SECONDS ?= 60

# Required flags live in MS_* so that `make CFLAGS=...` cannot drop them.
# The C core is laid out by layer (docs/architecture.md): core/, wire/,
# transports/, transforms/. Private headers live beside their .c files.
MS_LAYERS  = core wire transports transforms
MS_PRIV_INC = $(MS_LAYERS:%=-ISources/CMultiServer/%)
MS_CFLAGS  = -std=c11 -D_GNU_SOURCE -fPIC -fvisibility=hidden -Wall -Wextra -Werror \
             -Iinclude $(MS_PRIV_INC) $(shell pkg-config --cflags libuv libsodium zlib openssl 2>/dev/null)
MS_LIBS    = $(shell pkg-config --libs libuv libsodium zlib openssl 2>/dev/null || echo -luv -lsodium -lz -lssl -lcrypto) -lpthread

SRCS       = $(sort $(foreach d,$(MS_LAYERS),$(wildcard Sources/CMultiServer/$(d)/*.c)))
OBJS       = $(SRCS:Sources/CMultiServer/%.c=$(BUILD)/obj/%.o)
CLI_SRCS   = $(sort $(wildcard Sources/MultiServerCLI/*.c))
CLI_OBJS   = $(CLI_SRCS:Sources/MultiServerCLI/%.c=$(BUILD)/cli/%.o)
TEST_SRCS  = $(sort $(wildcard Tests/c/test_*.c))
TEST_UTIL  = $(sort $(wildcard Tests/c/util_*.c))
TEST_BINS  = $(TEST_SRCS:Tests/c/%.c=$(BUILD)/tests/%)
FUZZ_SRCS  = $(sort $(wildcard Tests/fuzz/fuzz_*.c))
HEADERS    = $(wildcard include/*.h) $(foreach d,$(MS_LAYERS),$(wildcard Sources/CMultiServer/$(d)/*.h))
VERSION    = 0.1.0

.PHONY: all lib cli tests test test-c test-cli test-asan test-valgrind fuzz fuzz-regress fuzz-merge soak install uninstall examples bench bench-smoke clean \
        check demo swift-build swift-test docs

all: lib cli

lib: $(BUILD)/libmultiserver.a $(BUILD)/libmultiserver.so
cli: $(BUILD)/multiserver

$(BUILD)/obj/%.o: Sources/CMultiServer/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(MS_CFLAGS) $(CFLAGS) -c $< -o $@

# Protocols are written against the public headers (and the IO-free cores
# in wire/) only, as a user's plugin is: their objects get no core/ path.
$(BUILD)/obj/transports/%.o $(BUILD)/obj/transforms/%.o: MS_PRIV_INC = -ISources/CMultiServer/wire

$(BUILD)/cli/%.o: Sources/MultiServerCLI/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(MS_CFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/libmultiserver.a: $(OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libmultiserver.so: $(OBJS)
	$(CC) -shared -Wl,-soname,libmultiserver.so.0 $(CFLAGS) $(LDFLAGS) -o $@ $^ $(MS_LIBS)

$(BUILD)/multiserver: $(CLI_OBJS) $(BUILD)/libmultiserver.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(CLI_OBJS) $(BUILD)/libmultiserver.a $(MS_LIBS)

$(BUILD)/tests/%: Tests/c/%.c $(TEST_UTIL) $(BUILD)/libmultiserver.a $(wildcard Tests/c/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(MS_CFLAGS) $(CFLAGS) $(LDFLAGS) -ITests/c -o $@ $< $(TEST_UTIL) $(BUILD)/libmultiserver.a $(MS_LIBS)

tests: $(TEST_BINS)

test-c: all tests
	Tests/c/run.sh $(BUILD)

# Python from .ci/setup's venv when present (it has PyNaCl + secret-handshake).
PYTHON ?= $(shell [ -x build/venv/bin/python ] && echo build/venv/bin/python || echo python3)

test-cli: all
	MULTISERVER=$(BUILD)/multiserver PYTHON=$(PYTHON) Tests/cli/run.sh

test: test-c test-cli

test-asan:
	$(MAKE) BUILD=build/asan CC=$(CC) \
	  CFLAGS="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
	  LDFLAGS="-fsanitize=address,undefined" test

# Each target for FUZZ_SECONDS (CI: 60 s, the issue's minimum), FUZZ_JOBS at
# a time (libFuzzer is single-threaded: one per core).
FUZZ_JOBS ?= 2
fuzz: $(FUZZ_SRCS:Tests/fuzz/%.c=$(BUILD)/fuzz/%)
	@printf '%s\n' $^ | xargs -P $(FUZZ_JOBS) -I{} scripts/fuzz-run.sh {} $(BUILD) $(FUZZ_SECONDS)

# Each target once over its committed seed corpus and over
# Tests/fuzz/regress/<target>/ (inputs that once crashed it; none so far):
# fast, so check runs it.
fuzz-regress: $(FUZZ_SRCS:Tests/fuzz/%.c=$(BUILD)/fuzz/%)
	@for f in $^; do \
	  n=$$(basename $$f); \
	  ins=$$(ls -d Tests/fuzz/corpus/$$n/* Tests/fuzz/regress/$$n/* 2>/dev/null); \
	  [ -n "$$ins" ] || continue; \
	  $$f -runs=1 $$ins >$(BUILD)/fuzz/$$n.regress.log 2>&1 \
	    || { tail -30 $(BUILD)/fuzz/$$n.regress.log; exit 1; }; \
	  echo "fuzz-regress $$n: $$(echo $$ins | wc -w) inputs ok"; \
	done

# Fold what a fuzz run found back into the committed corpora, minimized
# (libFuzzer -merge keeps only inputs that add coverage).
fuzz-merge: $(FUZZ_SRCS:Tests/fuzz/%.c=$(BUILD)/fuzz/%)
	@for f in $^; do \
	  n=$$(basename $$f); [ -d $(BUILD)/fuzz/corpus-$$n ] || continue; \
	  rm -rf $(BUILD)/fuzz/merged-$$n; mkdir -p $(BUILD)/fuzz/merged-$$n Tests/fuzz/corpus/$$n; \
	  $$f -merge=1 $(BUILD)/fuzz/merged-$$n Tests/fuzz/corpus/$$n $(BUILD)/fuzz/corpus-$$n \
	    >$(BUILD)/fuzz/$$n.merge.log 2>&1 || { tail -20 $(BUILD)/fuzz/$$n.merge.log; exit 1; }; \
	  cp -n $(BUILD)/fuzz/merged-$$n/* Tests/fuzz/corpus/$$n/ 2>/dev/null; \
	  echo "fuzz-merge $$n: $$(ls Tests/fuzz/corpus/$$n | wc -l) inputs"; \
	done

# The library is compiled once for every fuzz target (-fsanitize=fuzzer-no-link
# instruments it without a main), then each target links against it.
FUZZ_CFLAGS = -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=address,undefined -Iinclude $(MS_PRIV_INC) \
              $(shell pkg-config --cflags libuv libsodium zlib openssl 2>/dev/null)
FUZZ_OBJS  = $(SRCS:Sources/CMultiServer/%.c=$(BUILD)/fuzz/obj/%.o)

$(BUILD)/fuzz/obj/%.o: Sources/CMultiServer/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(FUZZCC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(BUILD)/fuzz/libfuzzms.a: $(FUZZ_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/fuzz/%: Tests/fuzz/%.c $(BUILD)/fuzz/libfuzzms.a $(HEADERS)
	@mkdir -p $(dir $@)
	$(FUZZCC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(BUILD)/fuzz/libfuzzms.a $(MS_LIBS)

install: lib
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 include/multiserver.h include/multiserver_plugin.h include/multiserver_uv.h include/multiserver_ws.h include/multiserver_log.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(BUILD)/libmultiserver.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(BUILD)/libmultiserver.so $(DESTDIR)$(PREFIX)/lib/libmultiserver.so.$(VERSION)
	ln -sf libmultiserver.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libmultiserver.so.0
	ln -sf libmultiserver.so.0 $(DESTDIR)$(PREFIX)/lib/libmultiserver.so
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' multiserver.pc.in \
	  > $(DESTDIR)$(PREFIX)/lib/pkgconfig/multiserver.pc

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/include/multiserver*.h $(DESTDIR)$(PREFIX)/lib/libmultiserver.* \
	  $(DESTDIR)$(PREFIX)/lib/pkgconfig/multiserver.pc

# Builds examples/*.c against an installed copy (make install PREFIX=$(BUILD)/prefix first),
# through pkg-config only: proves the public header stands alone.
examples: all
	$(MAKE) install PREFIX=$(CURDIR)/$(BUILD)/prefix
	@mkdir -p $(BUILD)/examples
	for f in examples/*.c; do \
	  PKG_CONFIG_PATH=$(CURDIR)/$(BUILD)/prefix/lib/pkgconfig \
	  $(CC) -std=c11 -Wall -Wextra -Werror $(CFLAGS) -o $(BUILD)/examples/$$(basename $$f .c) $$f \
	    $$(PKG_CONFIG_PATH=$(CURDIR)/$(BUILD)/prefix/lib/pkgconfig pkg-config --cflags --libs multiserver) \
	    -Wl,-rpath,$(CURDIR)/$(BUILD)/prefix/lib || exit 1; \
	done
	MULTISERVER=$(BUILD)/multiserver scripts/example-smoke.sh $(BUILD)/examples/echo_server

# make bench: every figure of issue 11 (< 3 minutes); the bulk figures also
# go to $(BUILD)/bench/bulk.tsv (plot: Tests/bench/plot_bulk.py).
# make bench-smoke: the same, short (CI, < 60 s); fails only if a
# measurement cannot run, not on missed targets.
bench: all $(BUILD)/bench/ms_bench
	$(BUILD)/bench/ms_bench --data $(BUILD)/bench/bulk.tsv

bench-smoke: all $(BUILD)/bench/ms_bench
	timeout 120 $(BUILD)/bench/ms_bench --smoke

$(BUILD)/bench/%: Tests/bench/%.c $(BUILD)/libmultiserver.a
	@mkdir -p $(dir $@)
	$(CC) $(MS_CFLAGS) -O2 -g -o $@ $< $(BUILD)/libmultiserver.a $(MS_LIBS)

# The C tests under valgrind memcheck (plain build): any leak (definite,
# indirect, possible) or invalid access fails. Suppressions only in
# Tests/c/valgrind.supp, each with its reason. test_cycles runs
# MS_CYCLES=$(VALGRIND_CYCLES) there (valgrind is ~30x slower).
VALGRIND_CYCLES ?= 300
test-valgrind: all tests
	VALGRIND_CYCLES=$(VALGRIND_CYCLES) Tests/c/valgrind.sh $(BUILD)

# Long runs, not part of check: 100 000 connect/handshake/close cycles,
# 100 MB through the lossy network namespaces, 300 s per fuzz target (and the
# regression inputs), the C tests under ASan and under valgrind.
SOAK_CYCLES ?= 100000
SOAK_LOSSY_BYTES ?= 100000000
SOAK_FUZZ_SECONDS ?= 300
soak: all tests
	MS_CYCLES=$(SOAK_CYCLES) $(BUILD)/tests/test_cycles
	MS_LOSSY_BYTES=$(SOAK_LOSSY_BYTES) $(BUILD)/tests/test_lossy
	$(MAKE) fuzz FUZZ_SECONDS=$(SOAK_FUZZ_SECONDS)
	$(MAKE) fuzz-regress
	$(MAKE) test-valgrind
	@echo "soak: all passed"

.PRECIOUS: $(BUILD)/bench/%

# Everything CI runs (the README's test command, after .ci/setup).
check: all test test-asan fuzz fuzz-regress examples bench-smoke swift-test
	@echo "check: all suites passed"

demo: all
	scripts/demo.sh

swift-build:
	swift build

swift-test:
	swift build
	swift test
	swift test --sanitize=thread --disable-xctest
	Tests/consumer/run.sh

# DocC for the Swift module, warnings as errors (the plugin is resolved only
# with MULTISERVER_DOCS=1, so package users never fetch it).
docs:
	MULTISERVER_DOCS=1 swift package --scratch-path .build-docs generate-documentation \
	  --target MultiServer --warnings-as-errors

clean:
	rm -rf $(BUILD)
