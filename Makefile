# userlist. make installs nothing: on Debian/Ubuntu run `sudo scripts/install-deps
# GROUP` first (build demo test mem fuzz rock docs bench: see that script).
#   make [build]     userlist.core for Lua 5.4 and LuaJIT, and the dev tree
#   make LUA=5.1     for one ABI (5.1 5.2 5.3 5.4 luajit); ABIS="5.1 5.4" for several
#   make demo        list users from the bundled emulator
#   make check       lint, the 5.4 and LuaJIT build, spec/unit, the emulator's specs on
#                    5.4 without Prism (under 2 min here)
#   make check-unit  the specs of spec/unit on ABIS: no network, no emulator
#   make test        all CI runs: lint, compile-check, every ABI, install-check, docs,
#                    every spec on 5.1-5.4 and LuaJIT against the emulator through Prism,
#                    check-asan, check-tsan, fuzz, check-valgrind
#   make spec        the specs on ABIS through the emulator and Prism (USERLIST_SPEC=file)
#   make lint | compile-check | install-check | rock | docs | bench | clean
#   make check-mem (check-valgrind + check-asan) | check-tsan | fuzz (FUZZ_SECONDS=60)
# Paths come from pkg-config, or from the command line: LUA_INCDIR_<abi>=DIR (lua.h),
# LUA_LIBS_5.4 (TSan's Lua, the fuzzers), CURL_CFLAGS, CURL_LIBS, CC, CFLAGS.
MAKEFLAGS += --no-print-directory
ALL_ABIS := 5.1 5.2 5.3 5.4 luajit
ABIS     ?= 5.4 luajit
ifneq ($(LUA),)
ABIS     := $(LUA)
endif
# The one version: the rockspec's (userlist-0.1.0-1.rockspec: version = "0.1.0-1").
ROCKSPEC := $(wildcard userlist-*.rockspec)
VERSION  := $(shell sed -n 's/^version = "\([^-"]*\).*/\1/p' $(ROCKSPEC))
$(if $(VERSION),,$(error no version = "..." line in userlist-*.rockspec))

CC          ?= cc
CFLAGS      ?= -O2 -g
SAN         ?=
CURL_CFLAGS ?= $(shell pkg-config --cflags libcurl 2>/dev/null)
CURL_LIBS   ?= $(or $(shell pkg-config --libs libcurl 2>/dev/null),-lcurl)
# A Lua ABI's pkg-config name, the first of the version: lua5.4 (Debian, Alpine),
# lua-5.4 (FreeBSD), lua54, lua (Fedora, Homebrew); luajit. macOS links with -bundle.
lua_pc      = $(shell for p in $(if $(filter luajit,$1),luajit,lua$1 lua-$1 lua$(subst .,,$1) lua); do \
                case $$(pkg-config --modversion $$p 2>/dev/null) in ($(if $(filter luajit,$1),2.*,$1|$1.*)) \
                echo $$p; exit;; esac; done)
lua_pcinc   = $(shell p='$(call lua_pc,$1)'; [ -n "$$p" ] && { pkg-config --cflags-only-I $$p | \
                sed -n 's/^ *-I *\([^ ]*\).*/\1/p' | grep . || pkg-config --variable=includedir $$p; })
lua_inc     = $(or $(LUA_INCDIR_$1),$(call lua_pcinc,$1),$(error no headers for Lua $1: pkg-config \
                knows no Lua $1 (Debian: scripts/install-deps build $1); set LUA_INCDIR_$1=DIR))
lua_libs    = $(or $(LUA_LIBS_$1),$(shell pkg-config --libs $(call lua_pc,$1) 2>/dev/null),-llua$1)
SHARED      := $(if $(filter Darwin,$(shell uname -s)),-bundle -undefined dynamic_lookup,-shared)

WARN := -std=c99 -Wall -Wextra -Werror -pedantic -Wshadow -Wmissing-prototypes \
        -Wstrict-prototypes -Wno-overlength-strings
DEFS := -D_POSIX_C_SOURCE=200809L -DUSERLIST_VERSION=$(VERSION)
SRCS := $(wildcard csrc/*.c)
HDRS := $(wildcard csrc/*.h)
LIBS  = $(CURL_LIBS) -lpthread
# $(call core,COMPILER,ABI,FLAGS,OUT): compiles the core for a Lua ABI
core  = $1 $3 $(WARN) -fPIC -fvisibility=hidden $(DEFS) $(CURL_CFLAGS) -I$(call lua_inc,$2) \
        $(SHARED) -o $4 $(SRCS) $(LIBS)

# The specs run against the emulator, every request checked by Prism (spec/20 and
# spec/providers/*/openapi_spec.lua need it); those of spec/unit need neither.
# EMU_SPECS: every other one, wherever, the providers' first (spec/run.sh says why).
RUN_SPECS := spec/emulator/run exec -- spec/prism/run exec -- spec/run.sh
EMU_SPECS  = $(filter-out spec/unit/% spec/20-openapi_spec.lua spec/providers/%/openapi_spec.lua,$(shell \
             find spec/providers -name '*_spec.lua' | sort) $(sort $(shell find spec -name '*_spec.lua' \
             -not -path '*/node_modules/*' -not -path 'spec/providers/*')))

.PHONY: build demo check check-unit test spec lint compile-check install-check rock docs bench \
        check-mem check-valgrind check-asan check-tsan fuzz clean

# A git-ignored dev tree, so that `lua5.4 -e 'require "userlist"'` (or luajit)
# works from the repo root: userlist.lua and userlist/* link into lua/, and
# userlist/core.lua (spec/support/devtree-core.lua) loads build/<abi>/'s core.
build: $(foreach a,$(ABIS),build/$a/userlist/core.so)
	@mkdir -p userlist
	@ln -sf lua/userlist/init.lua userlist.lua
	@ln -sf ../spec/support/devtree-core.lua userlist/core.lua
	@for f in lua/userlist/*; do n=$${f##*/}; [ $$n = init.lua ] || ln -sfn ../$$f userlist/$$n; done

$(ALL_ABIS:%=build/%/userlist/core.so): build/%/userlist/core.so: $(SRCS) $(HDRS) Makefile $(ROCKSPEC)
	@mkdir -p $(@D)
	$(call core,$(CC),$*,$(CFLAGS) $(SAN),$@)

demo:
	@$(MAKE) build ABIS=5.4
	@spec/emulator/run exec -- sh -c 'lua5.4 examples/demo.lua && USERLIST_LUA=lua5.4 examples/cli.sh'

lint:
	luacheck --quiet lua spec examples bench bin/userlist

# The quick tier. The LuaJIT core is built too: spec/60 runs it inside nginx.
check: lint
	@$(MAKE) build ABIS="5.4 luajit"
	@USERLIST_SPEC=spec/unit spec/run.sh 5.4
	@USERLIST_SPEC="$(EMU_SPECS)" spec/emulator/run exec -- spec/run.sh 5.4

check-unit: build
	@USERLIST_SPEC=spec/unit spec/run.sh $(ABIS)

# CI (.ci/run). `spec` holds spec/unit, so the unit specs run on every ABI too.
# About 25 min of it is valgrind (the million-user listings are slow under memcheck).
CI_FUZZ_SECONDS ?= 20
test: lint compile-check
	@$(MAKE) build ABIS="$(ALL_ABIS)"
	@$(MAKE) install-check
	@$(MAKE) docs
	@$(RUN_SPECS) $(ALL_ABIS)
	@$(MAKE) check-asan
	@$(MAKE) check-tsan
	@$(MAKE) fuzz FUZZ_SECONDS=$(CI_FUZZ_SECONDS)
	@$(MAKE) check-valgrind

spec:
	@$(RUN_SPECS) $(ABIS)

# Every ABI under gcc and clang; warnings are errors.
compile-check: $(foreach c,gcc clang,$(ALL_ABIS:%=build/check/core-$c-%.so))
	@echo "compile-check: gcc and clang, Lua $(ALL_ABIS): no warnings"
build/check/core-%.so: $(SRCS) $(HDRS) Makefile $(ROCKSPEC)
	@mkdir -p $(@D)
	$(call core,$(firstword $(subst -, ,$*)),$(lastword $(subst -, ,$*)),$(CFLAGS) $(SAN),$@)

# LuaRocks (spec/rock-check.sh): `rock` packs build/rock/userlist-<version>-1.src.rock,
# offline; `install-check` lints the rockspec, installs it for Lua 5.4, 5.1 and LuaJIT
# into temporary trees, runs them from /tmp against the emulator, builds the rock.
rock:
	@spec/rock-check.sh pack
install-check:
	@spec/emulator/run exec -- spec/rock-check.sh

# The LDoc API reference (config.ld) in build/docs/index.html.
docs:
	@ldoc -q . && echo "docs: build/docs/index.html"

# Not a test: userlist on Lua 5.4 and LuaJIT against the emulator beside luasocket +
# cjson, Python and curl (bench/run; BENCH_USERS, BENCH_PAGES, BENCH_DELAY_MS).
bench:
	@$(MAKE) build ABIS="5.4 luajit"
	@bench/run

# The suite on Lua 5.4 (Debian's LuaJIT is not built for valgrind; the C is the same)
# under valgrind memcheck, and with an ASan+UBSan core; each fails on the first report.
VALGRIND  := valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect \
             --show-leak-kinds=definite,indirect --error-exitcode=99
ASAN_LIBS  = $(shell gcc -print-file-name=libasan.so 2>/dev/null):$(shell gcc -print-file-name=libubsan.so 2>/dev/null)
SANITIZE_asan := -fsanitize=address,undefined -fno-sanitize-recover=undefined
SANITIZE_tsan := -fsanitize=thread
check-mem: check-valgrind check-asan

check-valgrind:
	@$(MAKE) build ABIS="5.4 luajit"
	@echo "== valgrind memcheck over the spec suite (Lua 5.4)"
	@USERLIST_WRAP="$(VALGRIND)" $(RUN_SPECS) 5.4

build/asan/5.4/userlist/core.so build/tsan/5.4/userlist/core.so: build/%/5.4/userlist/core.so: \
    $(SRCS) $(HDRS) Makefile $(ROCKSPEC)
	@mkdir -p $(@D)
	$(call core,gcc,5.4,-O1 -g -fno-omit-frame-pointer $(SANITIZE_$*) $(filter-out -O2,$(CFLAGS) $(SAN)),$@)

check-asan: build/asan/5.4/userlist/core.so
	@$(MAKE) build ABIS="5.4 luajit"
	@echo "== ASan + UBSan over the spec suite (Lua 5.4)"
	@USERLIST_BUILD=build/asan \
	 USERLIST_WRAP="env LD_PRELOAD=$(ASAN_LIBS) ASAN_OPTIONS=detect_leaks=1:exitcode=23 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1" \
	 $(RUN_SPECS) 5.4

# ThreadSanitizer over the specs that drive transfers (csrc/multi.c's thread against
# the Lua thread), in a TSan-built Lua (spec/support/tsan-lua.c): preloaded, TSan
# would reach the specs' child processes, and Debian's sh crashes under it. Left out:
# the decoder's (unit/07, 08, unit/16: no thread; errors raised through longjmp grow
# TSan's memory without bound), unit/09 (git), the command's, the examples' and
# nginx's (child processes, no thread of ours) and Prism's (20, providers' openapi).
TSAN_SPECS := $(foreach n,unit/01-core 02-request 03-errors 04-session 05-proxy 06-ratelimit \
              14-concurrency 15-loop 40-faults 41-reliability 42-security,spec/$n_spec.lua) \
              $(filter-out spec/providers/%/openapi_spec.lua,$(wildcard spec/providers/*/*_spec.lua))
build/tsan/lua: spec/support/tsan-lua.c Makefile
	@mkdir -p $(@D)
	gcc -O1 -g -fsanitize=thread $(WARN) -I$(call lua_inc,5.4) -o $@ $< $(call lua_libs,5.4)

check-tsan: build/tsan/5.4/userlist/core.so build/tsan/lua
	@$(MAKE) build ABIS="5.4 luajit"
	@echo "== ThreadSanitizer over the specs that drive transfers (Lua 5.4)"
	@USERLIST_BUILD=build/tsan USERLIST_SPEC="$(TSAN_SPECS)" \
	 USERLIST_WRAP="env TSAN_OPTIONS=halt_on_error=1:exitcode=66 build/tsan/lua" \
	 spec/emulator/run exec -- spec/run.sh 5.4

# libFuzzer on the core's header parsing (Retry-After, rate limits), body redaction,
# excerpts and decoding, and the JSON decoder against lua-cjson and an RFC 8259
# checker; seeds in fuzz/corpus/, what it learns in build/fuzz/; FUZZ_SECONDS each.
FUZZ_SECONDS ?= 60
FUZZ_CFLAGS   = -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
                $(DEFS) $(CURL_CFLAGS)
build/fuzz/fuzz_headers: fuzz/fuzz_headers.c csrc/headers.c $(HDRS)
	@mkdir -p $(@D)
	clang $(FUZZ_CFLAGS) -o $@ fuzz/fuzz_headers.c csrc/headers.c $(LIBS)

build/fuzz/fuzz_body build/fuzz/fuzz_json build/fuzz/fuzz_token: build/fuzz/%: fuzz/%.c $(SRCS) $(HDRS) $(ROCKSPEC)
	@mkdir -p $(@D)
	clang $(FUZZ_CFLAGS) -I$(call lua_inc,5.4) -o $@ $< $(SRCS) $(call lua_libs,5.4) $(LIBS) -lm

fuzz: build/fuzz/fuzz_headers build/fuzz/fuzz_body build/fuzz/fuzz_json build/fuzz/fuzz_token
	@for t in headers body json token; do \
	  mkdir -p build/fuzz/corpus-$$t; \
	  echo "== fuzz_$$t for $(FUZZ_SECONDS)s"; \
	  build/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	    -artifact_prefix=build/fuzz/ -print_final_stats=1 \
	    build/fuzz/corpus-$$t fuzz/corpus/$$t >build/fuzz/$$t.log 2>&1; rc=$$?; \
	  grep -E '^(Done|stat::number_of_executed_units|fuzz_json: [0-9]+ inputs)' build/fuzz/$$t.log; \
	  if [ $$rc -ne 0 ]; then tail -40 build/fuzz/$$t.log; echo "fuzz_$$t failed (log: build/fuzz/$$t.log)"; exit 1; fi; \
	done

clean:
	rm -rf build userlist userlist.lua
