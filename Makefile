# SPDX-License-Identifier: Apache-2.0
# kumod toolkit: one non-recursive GNU Makefile.
#
# Switches (make VAR=value):
#   V=1                    print full command lines
#   SANITIZER=address      ASan+UBSan build (objects in build/obj-address)
#   SANITIZER=undefined    UBSan build
#   USE_LTTNG=0|1          LTTng-UST tracepoints (default: 1 when lttng-ust is found)
#   USE_USDT=0|1           USDT probes via sys/sdt.h (default: 1 when the header exists)
#   OPT=-O2                optimisation flags
#
# Targets: all run sink test unit integration fmt fmt-check check-layers
#          tracepoints-check metrics-doc metrics-doc-check api-doc api-doc-check
#          fuzz fuzz-run fuzz-smoke fuzz-replay bench clean
#          deps (every group) deps-test deps-fmt deps-fuzz
#          image image-test (the container image, docs/container.md)
#          install (PREFIX=/usr/local DESTDIR=: kumod, tools, share/kumod/{policy-extras,bounce_classifier})

.DEFAULT_GOAL := all
SHELL := /bin/bash
BUILD := build
GEN := $(BUILD)/gen
NOBUILD_GOALS := clean fmt deps deps-test deps-fmt deps-fuzz
PYTHON ?= /usr/bin/python3

ifeq ($(filter-out $(NOBUILD_GOALS),$(MAKECMDGOALS))$(if $(MAKECMDGOALS),,all),)
else
# Runs the deps step for building and running (group `run`) before anything
# is built (GNU make remakes included makefiles first); it re-runs when the
# script changes. Goals that need more add their group: test, fmt, fuzz
# (deps-test, deps-fmt, deps-fuzz below); `make deps` installs every group.
-include $(BUILD)/deps.mk
endif
$(BUILD)/deps.mk: scripts/deps.sh
	@scripts/deps.sh --for run --mk $@

USE_LTTNG ?= $(or $(DETECTED_LTTNG),1)
USE_USDT ?= $(or $(DETECTED_USDT),1)
SANITIZER ?=
OPT ?= -O2

ifeq ($(V),1)
Q :=
qecho = @true
else
Q := @
qecho = @printf '  %-8s %s\n'
endif

OBJDIR := $(BUILD)/obj$(if $(SANITIZER),-$(SANITIZER))
# Sanitizer builds keep their binaries apart: build/address/kumod ...
BIN := $(BUILD)$(if $(SANITIZER),/$(SANITIZER))
PKGS := libuv lua5.4 openssl jansson libcares libzstd zlib libpcre2-8 rocksdb libpsl libcurl hiredis yaml-0.1
ifeq ($(USE_LTTNG),1)
PKGS += lttng-ust
endif

CC ?= gcc
VERSION := $(shell cat VERSION 2>/dev/null || echo 0.1.0)
WARN := -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wstrict-prototypes -Wformat=2 -Wno-format-nonliteral
CFLAGS_BASE := -std=gnu11 -g $(OPT) $(WARN) -D_GNU_SOURCE -fno-strict-aliasing \
	-Ikumod -Ikumod/base -I$(GEN) -DUSE_LTTNG=$(USE_LTTNG) -DUSE_USDT=$(USE_USDT) \
	-DKUMOD_VERSION='"$(VERSION)"'
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
ifeq ($(SANITIZER),address)
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else ifeq ($(SANITIZER),undefined)
SAN_FLAGS := -fsanitize=undefined -fno-sanitize-recover=undefined
else ifneq ($(SANITIZER),)
$(error SANITIZER must be address or undefined, not '$(SANITIZER)')
endif
ALL_CFLAGS = $(CFLAGS_BASE) $(PKG_CFLAGS) $(SAN_FLAGS) $(CFLAGS)
LIBS = $(PKG_LIBS) -lhttp_parser $(if $(filter 1,$(USE_LTTNG)),-ldl) -lm -lpthread
ALL_LDFLAGS = $(SAN_FLAGS) $(LDFLAGS)

# --- sources -------------------------------------------------------------
TRACE_DEFS := $(sort $(wildcard traces/*.tp))
GEN_HDRS := $(GEN)/ktrace.h $(GEN)/ktrace_lttng.h
GEN_SRCS := $(GEN)/ktrace_defs.c
LIB_SRCS := $(sort $(wildcard kumod/base/*.c kumod/proto/*.c kumod/io/*.c kumod/dns/*.c \
	kumod/spool/*.c kumod/smtp/*.c kumod/queue/*.c kumod/dispatch/*.c kumod/ctl/*.c \
	kumod/lua/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(OBJDIR)/%.o) $(OBJDIR)/gen/ktrace_defs.o
KUMOD_OBJS := $(LIB_OBJS) $(OBJDIR)/kumod/main.o
UNIT_SRCS := $(sort $(wildcard tests/unit/*.c))
UNIT_OBJS := $(UNIT_SRCS:%.c=$(OBJDIR)/%.o)
TOOLS := $(notdir $(wildcard tools/*))
TOOL_BINS := $(TOOLS:%=$(BIN)/%)

BINS := $(BIN)/kumod $(BIN)/unit-tests $(TOOL_BINS)
all: $(BINS) docs/tracepoints.md

# Relink when the flag set changes (e.g. SANITIZER on/off).
FLAGS_STAMP := $(BUILD)/flags$(if $(SANITIZER),-$(SANITIZER)).txt
FLAGS_NOW = $(ALL_CFLAGS) | $(ALL_LDFLAGS) | $(LIBS)
$(FLAGS_STAMP): FORCE
	@mkdir -p $(BUILD); if [ "$$(cat $@ 2>/dev/null)" != "$(FLAGS_NOW)" ]; then echo "$(FLAGS_NOW)" >$@; fi

$(GEN_HDRS) $(GEN_SRCS) docs/tracepoints.md &: scripts/gen_traces.py $(TRACE_DEFS)
	$(qecho) GEN "$(GEN)/ktrace.h docs/tracepoints.md"
	$(Q)mkdir -p $(GEN) && $(PYTHON) scripts/gen_traces.py --out-dir $(GEN) --doc docs/tracepoints.md $(TRACE_DEFS)

$(OBJDIR)/%.o: %.c $(FLAGS_STAMP) | $(GEN_HDRS)
	$(qecho) CC $<
	$(Q)mkdir -p $(@D) && $(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(OBJDIR)/gen/%.o: $(GEN)/%.c $(FLAGS_STAMP) | $(GEN_HDRS)
	$(qecho) CC $<
	$(Q)mkdir -p $(@D) && $(CC) $(ALL_CFLAGS) -Wno-missing-field-initializers -Wno-redundant-decls -MMD -MP -c $< -o $@

$(BIN)/kumod: $(KUMOD_OBJS) $(FLAGS_STAMP)
	$(qecho) LD $@
	$(Q)mkdir -p $(@D) && $(CC) $(ALL_LDFLAGS) -o $@ $(KUMOD_OBJS) $(LIBS)

$(BIN)/unit-tests: $(UNIT_OBJS) $(LIB_OBJS) $(FLAGS_STAMP)
	$(qecho) LD $@
	$(Q)mkdir -p $(@D) && $(CC) $(ALL_LDFLAGS) -o $@ $(UNIT_OBJS) $(LIB_OBJS) $(LIBS)

# The kumod library objects as an archive, for the tools: the linker takes
# only the objects a tool references, and --as-needed only the shared
# libraries those use (kumo-toml maps a handful instead of ~50 libraries,
# which was most of its start-up time).
LIB_ARCHIVE := $(OBJDIR)/libkumod.a
$(LIB_ARCHIVE): $(LIB_OBJS)
	$(qecho) AR $@
	$(Q)rm -f $@ && $(AR) rcs $@ $(LIB_OBJS)

# Each tools/<name>/ directory builds build/<name> from its own sources
# plus the kumod library objects it uses.
define TOOL_RULE
$(1)_OBJS := $$(patsubst %.c,$$(OBJDIR)/%.o,$$(sort $$(wildcard tools/$(1)/*.c)))
$$(BIN)/$(1): $$($(1)_OBJS) $$(LIB_ARCHIVE) $$(FLAGS_STAMP)
	$$(qecho) LD $$@
	$$(Q)mkdir -p $$(@D) && $$(CC) $$(ALL_LDFLAGS) -o $$@ $$($(1)_OBJS) $$(LIB_ARCHIVE) -Wl,--as-needed $$(LIBS) $$(TOOL_LIBS_$(1)) -Wl,--no-as-needed
endef
TOOL_LIBS_kumo-console := -lncursesw
TOOL_LIBS_kcli := -lcurl
$(foreach t,$(TOOLS),$(eval $(call TOOL_RULE,$(t))))

-include $(shell find $(OBJDIR) -name '*.d' 2>/dev/null)

# --- running -------------------------------------------------------------
run: $(BIN)/kumod
	@scripts/run.sh $(BIN)

sink: $(BIN)/kumod
	KUMOD_LOG=$${KUMOD_LOG-kumod=info,lua=info} KUMOD_LOG_ROLE=$${KUMOD_LOG_ROLE-sink} $(BIN)/kumod --policy sink/sink.lua

# --- tests ---------------------------------------------------------------
PYTEST = KUMOD_BIN=$(abspath $(BIN)/kumod) TOOLS_BIN=$(abspath $(BIN)) $(PYTHON) -m pytest -q -p no:cacheprovider
# The integration tests run on PYTEST_JOBS pytest-xdist workers (a file's
# tests stay together on one worker; each worker takes its own class of free
# ports: tests/integration/conftest.py), then the timing-sensitive `nosan`
# tests (rates, reply timings, kill -9 under load) alone, one at a time.
# PYTEST_JOBS: nproc, at least 2 and at most 4 (PYTEST_JOBS=1: no workers).
PYTEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; [ $$n -lt 2 ] && n=2; echo $$n)
PYTEST_PAR = $(if $(filter 1,$(PYTEST_JOBS)),,-n $(PYTEST_JOBS) --dist loadfile)
# pytest's exit status 5 is "no test selected" (PYTEST_ARGS chose none of them)
PYTEST_SERIAL_NOSAN = $(PYTEST) tests/integration -m nosan --durations=5 $(PYTEST_ARGS) || [ $$? -eq 5 ]
unit: $(BIN)/unit-tests
	$(BIN)/unit-tests

integration: all | deps-test
	$(PYTEST) tests/integration -m "not nosan" $(PYTEST_PAR) --durations=15 $(PYTEST_ARGS)
	$(PYTEST_SERIAL_NOSAN)

# The whole suite; without SANITIZER it then re-runs the unit and
# integration tests against an ASan+UBSan build (LeakSanitizer on: a leak
# at kumod's exit makes its exit status non-zero and the test fail).
# The builds use every core (NPROC jobs) whatever -j was given; the deps
# step runs first, alone (two apt-get runs cannot share dpkg's lock).
NPROC := $(shell nproc 2>/dev/null || echo 1)
test: | deps-test
	$(MAKE) --no-print-directory -j$(NPROC) all
	$(MAKE) --no-print-directory check-layers fmt-check tracepoints-check metrics-doc-check api-doc-check
	$(BIN)/unit-tests
	$(MAKE) --no-print-directory -j$(NPROC) fuzz-replay
	$(PYTEST) tests/integration -m "not nosan" $(PYTEST_PAR) --durations=15 $(PYTEST_ARGS)
	$(PYTEST_SERIAL_NOSAN)
ifeq ($(SANITIZER),)
	$(MAKE) --no-print-directory SANITIZER=address test-sanitized
endif

test-sanitized: | deps-test
	$(MAKE) --no-print-directory -j$(NPROC) all
	ASAN_OPTIONS=detect_leaks=1 $(BIN)/unit-tests
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 $(PYTEST) tests/integration -m "not nosan" $(PYTEST_PAR) --durations=15 $(PYTEST_ARGS)

# The generated catalogue is checked in; fail when it is stale.
tracepoints-check: docs/tracepoints.md
	@git diff --exit-code --stat -- docs/tracepoints.md >/dev/null 2>&1 || \
		{ echo "docs/tracepoints.md is out of date with traces/: commit the regenerated file"; exit 1; }

# docs/metrics.md's table is generated from the metrics registry's
# declarations (kumod --list-metrics=markdown); the check fails when the
# committed file is stale.
metrics-doc: $(BIN)/kumod
	$(qecho) GEN docs/metrics.md
	$(Q)$(PYTHON) scripts/gen_metrics_doc.py $(BIN)/kumod docs/metrics.md

metrics-doc-check: $(BIN)/kumod
	@$(PYTHON) scripts/gen_metrics_doc.py --check $(BIN)/kumod docs/metrics.md

# docs/policy-api.md's status table of KumoMTA's Lua API is generated the
# same way (kumod --list-api=markdown, from kumod/lua/lua_api.c).
api-doc: $(BIN)/kumod
	$(qecho) GEN docs/policy-api.md
	$(Q)$(PYTHON) scripts/gen_metrics_doc.py --flag=--list-api=markdown $(BIN)/kumod docs/policy-api.md

api-doc-check: $(BIN)/kumod
	@$(PYTHON) scripts/gen_metrics_doc.py --check --flag=--list-api=markdown $(BIN)/kumod docs/policy-api.md

check-layers:
	@scripts/check-layers.sh

# --- formatting ----------------------------------------------------------
C_FMT_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
LUA_FMT_FILES = $(shell git ls-files '*.lua' 2>/dev/null)
STYLUA := node_modules/.bin/stylua
fmt: | deps-fmt
	clang-format -i $(C_FMT_FILES)
	$(if $(LUA_FMT_FILES),$(STYLUA) $(LUA_FMT_FILES))

fmt-check: | deps-fmt
	@clang-format --dry-run --Werror $(C_FMT_FILES)
	@$(if $(LUA_FMT_FILES),$(STYLUA) --check $(LUA_FMT_FILES))
	@echo "  FMT-OK"

deps:
	scripts/deps.sh --for all --mk $(BUILD)/deps.mk

# The test goals' peers and tracers (and the formatters `make test` checks
# with), the formatters alone, and clang with libFuzzer.
deps-test:
	@scripts/deps.sh --for test --for fmt
deps-fmt:
	@scripts/deps.sh --for fmt
deps-fuzz:
	@scripts/deps.sh --for fuzz

# kumod finds its policy-extras helpers in ../share/kumod next to its binary.
PREFIX ?= /usr/local
install: $(BINS)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/kumod/policy-extras \
		$(DESTDIR)$(PREFIX)/share/kumod/bounce_classifier $(DESTDIR)$(PREFIX)/share/kumod/catcher
	install -m 755 $(BIN)/kumod $(TOOL_BINS) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 share/policy-extras/* $(DESTDIR)$(PREFIX)/share/kumod/policy-extras/
	install -m 644 share/bounce_classifier/* $(DESTDIR)$(PREFIX)/share/kumod/bounce_classifier/
	install -m 644 share/catcher/* $(DESTDIR)$(PREFIX)/share/kumod/catcher/

# --- container image (docs/container.md); kept out of `make test` -------
image: | deps-image
	docker/kumod/build-docker-image.sh
image-test: image
	docker/kumod/image-test.sh
deps-image:
	@scripts/deps.sh --for image

clean:
	rm -rf $(BUILD)

include fuzz/fuzz.mk

.PHONY: all run sink unit integration test test-sanitized tracepoints-check metrics-doc metrics-doc-check api-doc api-doc-check check-layers fmt fmt-check deps deps-test deps-fmt deps-fuzz install clean image image-test deps-image FORCE
FORCE:
