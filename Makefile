# gw — aggregation / BFF API gateway.
#
#   make            build build/gwc (the compiler) and build/gwd (the gateway)
#   make run        the demo: gwd serving endpoints/ on :8080, with mock backends
#   make test       build, then run every test (ends with "N passed, N failed")
#   make asan       the same tests under ASan+UBSan, built into build-asan/
#   make bench      compiler, JWT and gateway benchmarks (not tests)
#   make deps       install missing Debian packages (root) or print the apt-get line
#   make help       list the targets
#
# Generated sources (re2c, lemon) go to $(B)/gen/, never into the tree.

B        ?= build
GRAMMAR  ?= grammar/gw.y
CC       ?= cc
V        ?= 0
Q         = $(if $(filter 1,$(V)),,@)

WARN      = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wpointer-arith -Wformat=2 -Wno-unused-parameter
OPT      ?= -O2 -g
CFLAGS   += -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) -MMD -MP
CPPFLAGS += -Iruntime -Icompiler -I$(B)/gen
LDLIBS_C  = -lcrypto
# The runtime's libraries (libcurl with OpenSSL, libevent, yajl, OpenSSL).
LDLIBS_R  = -lcurl -levent_openssl -levent_pthreads -levent -lyajl -lhiredis -lssl -lcrypto -lpthread -lm

# Debian packages the build and the tests need.
DEB_PKGS  = re2c lemon libcurl4-openssl-dev libevent-dev libyajl-dev libjwt-dev \
            libssl-dev libhiredis-dev pkg-config python3 redis-server openssl

# Shared bytecode code (the runtime owns it; the compiler depends on it).
COMMON_SRC = runtime/gw_util.c runtime/gw_program.c
COMPILER_SRC = compiler/gwc_diag.c compiler/gwc_ast.c compiler/gwc_parse.c \
               compiler/gwc_sema.c compiler/gwc_graph.c compiler/gwc_codegen.c \
               compiler/gwc_dump.c compiler/gwc_fmt.c compiler/gwc_lib.c
GEN_SRC    = $(B)/gen/gw_lex.c $(B)/gen/gw_parse.c

LIB_OBJ  = $(patsubst %.c,$(B)/obj/%.o,$(COMMON_SRC) $(COMPILER_SRC)) \
           $(B)/obj/gen/gw_lex.o $(B)/obj/gen/gw_parse.o
# gwd: every runtime/gwr_*.c, plus the compiler (it compiles .gw in process).
RT_SRC   = $(wildcard runtime/gwr_*.c)
RT_OBJ   = $(patsubst %.c,$(B)/obj/%.o,$(RT_SRC))
GWD      = $(if $(wildcard runtime/gwd_main.c),$(B)/gwd)

.PHONY: all deps test test-update asan bench bench-compile bench-jwt bench-gateway run demo install clean help docs check-docs
all: deps $(B)/gwc $(GWD)

help:
	@echo "targets: all run demo test test-update asan bench bench-compile bench-jwt bench-gateway docs install clean deps"

deps:
	$(Q)sh tests/deps.sh $(DEB_PKGS)

$(B)/gwc: $(LIB_OBJ) $(B)/obj/compiler/gwc_main.o
	@echo "  LINK  $@"
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS_C)

$(B)/gwd: $(RT_OBJ) $(LIB_OBJ) $(B)/obj/runtime/gwd_main.o
	@echo "  LINK  $@"
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS_R)

$(B)/opdoc: $(B)/obj/compiler/gwc_opdoc.o $(B)/obj/runtime/gw_util.o $(B)/obj/runtime/gw_program.o
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS_C)

$(B)/obj/%.o: %.c | $(B)/gen/gw_parse.h
	@mkdir -p $(dir $@)
	@echo "  CC    $<"
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(B)/obj/gen/%.o: $(B)/gen/%.c
	@mkdir -p $(dir $@)
	@echo "  CC    $<"
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -Wno-unused-variable -Wno-missing-prototypes -c -o $@ $<

# lemon: the build fails on any parsing conflict. -c keeps every lookahead
# explicit in the tables: with %fallback, a compressed default reduction would
# let a keyword fall back to an identifier where it should end a list.
$(B)/gen/gw_parse.c $(B)/gen/gw_parse.h: $(GRAMMAR)
	@mkdir -p $(B)/gen
	@echo "  LEMON $<"
	$(Q)cp $(GRAMMAR) $(B)/gen/gw_parse.y
	$(Q)cd $(B)/gen && lemon -q -s -c gw_parse.y > lemon.out 2>&1; st=$$?; \
	  if grep -q "parsing conflict" lemon.out || [ $$st -ne 0 ]; then cat lemon.out; \
	    echo "error: the grammar has parsing conflicts (see $(B)/gen/gw_parse.out)"; rm -f gw_parse.c; exit 1; fi; \
	  touch gw_parse.c gw_parse.h

$(B)/gen/gw_lex.c: grammar/gw.re $(B)/gen/gw_parse.h
	@mkdir -p $(B)/gen
	@echo "  RE2C  $<"
	$(Q)re2c -W -Werror --no-generation-date -o $@ $<

# C test programs: tests/test_NAME.c links the compiler and runtime objects.
TEST_BINS = $(patsubst tests/%.c,$(B)/%,$(wildcard tests/test_*.c))
$(B)/test_%: $(B)/obj/tests/test_%.o $(LIB_OBJ) $(RT_OBJ)
	@echo "  LINK  $@"
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS_R)

test: all $(B)/opdoc $(TEST_BINS)
	$(Q)sh tests/run.sh $(B)

test-update: all $(B)/opdoc $(TEST_BINS)
	$(Q)GW_UPDATE=1 sh tests/run.sh $(B)

docs: $(B)/opdoc
	$(Q)$(B)/opdoc > docs/bytecode.md

asan:
	$(Q)$(MAKE) --no-print-directory B=build-asan \
	  OPT="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  LDFLAGS="-fsanitize=address,undefined" test

bench-compile: all
	$(Q)/usr/bin/python3 tests/bench_compile.py $(B)

$(B)/bench_jwt: $(B)/obj/tests/bench_jwt.o $(LIB_OBJ) $(RT_OBJ)
	@echo "  LINK  $@"
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS_R)

bench-jwt: all $(B)/bench_jwt
	$(Q)$(B)/bench_jwt

# The gateway against nginx and OpenResty (bench/, docs/performance.md); the
# peers and tools come from Debian packages, installed like the others.
BENCH_PKGS = nginx-light libnginx-mod-http-lua lua-cjson wrk gnuplot-nox valgrind python3-cryptography
bench-gateway: all
	$(Q)sh tests/deps.sh $(BENCH_PKGS)
	$(Q)sh bench/run.sh $(B)

bench: bench-compile bench-jwt bench-gateway

# The demo: mock backends (a second gwd serving examples/mock-backends on
# 127.0.0.1:9001-9004) and the gateway with endpoints/ on 127.0.0.1:8080.
run demo: all
	@echo "demo: the gateway on http://127.0.0.1:8080, admin on 127.0.0.1:9901, mock backends on 127.0.0.1:9001-9004 (Ctrl-C stops all)"
	$(Q)$(B)/gwd --workers 1 --access-log off examples/mock-backends & mock=$$!; \
	  trap 'kill $$mock 2>/dev/null' EXIT INT TERM; \
	  $(B)/gwd --listen 127.0.0.1:8080 --admin 127.0.0.1:9901 endpoints

install: all
	install -d $(DESTDIR)/usr/local/bin
	install -m 755 $(B)/gwc $(GWD) $(DESTDIR)/usr/local/bin/

clean:
	rm -rf build build-asan

.SECONDARY:
-include $(shell find $(B)/obj -name '*.d' 2>/dev/null)
