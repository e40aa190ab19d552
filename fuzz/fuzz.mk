# SPDX-License-Identifier: Apache-2.0
# Fuzzing rules, included by the top Makefile. See fuzz/README.md and docs/fuzzing.md.
#
# Every fuzz/fuzz_<name>.c defines LLVMFuzzerTestOneInput for target <name>
# over the pure layers (kumod/base, kumod/proto). Corpora: fuzz/corpus/<name>/;
# dictionaries: fuzz/dict/<name>.dict, else fuzz/dict/smtp.dict.
#   make fuzz                               build every libFuzzer target (clang) into build/fuzz/
#   make fuzz-run T=parser [SECONDS=60]     fuzz one target; new inputs go to build/fuzz-corpus/T,
#                                           crashes to build/fuzz-artifacts/T/
#   make fuzz-smoke [SMOKE_SECONDS=10]      every target for a short, bounded time
#   make fuzz-merge T=parser                minimise fuzz/corpus/T plus build/fuzz-corpus/T back
#                                           into fuzz/corpus/T (named seeds and crash-* kept)
#   make fuzz-replay                        every corpus file through a plain driver under
#                                           ASan+UBSan (gcc), part of `make test`
#
# The library objects go into an archive so a target links only the modules it
# calls: a parser under construction elsewhere in kumod/proto cannot break the
# link of the others.

FUZZ_TARGETS := $(patsubst fuzz/fuzz_%.c,%,$(sort $(wildcard fuzz/fuzz_*.c)))
FUZZ_LIB_SRCS := $(sort $(wildcard kumod/base/*.c kumod/proto/*.c))
FUZZ_CC := clang
FUZZ_CFLAGS := -std=gnu11 -g -O1 -D_GNU_SOURCE -Ikumod -Ikumod/base -I$(GEN) -DUSE_LTTNG=0 \
	-DUSE_USDT=0 -DKUMOD_VERSION='"fuzz"' -fno-omit-frame-pointer -Wall -Wextra \
	-Wno-unused-parameter
# UBSan findings must stop the run (and the replay), not just print.
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_OBJDIR := $(BUILD)/obj-fuzz
REPLAY_OBJDIR := $(BUILD)/obj-replay
FUZZ_LIB_OBJS := $(FUZZ_LIB_SRCS:%.c=$(FUZZ_OBJDIR)/%.o) $(FUZZ_OBJDIR)/gen/ktrace_defs.o
REPLAY_LIB_OBJS := $(FUZZ_LIB_SRCS:%.c=$(REPLAY_OBJDIR)/%.o) $(REPLAY_OBJDIR)/gen/ktrace_defs.o
FUZZ_LIB := $(FUZZ_OBJDIR)/libkumod-fuzz.a
REPLAY_LIB := $(REPLAY_OBJDIR)/libkumod-replay.a
REPLAY_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
SECONDS ?= 60
SMOKE_SECONDS ?= 10
# One input running longer than this (seconds) is a finding, like a crash.
FUZZ_TIMEOUT ?= 10
# fuzz-merge keeps inputs for new edges only (not new hit counts), so the
# checked-in corpora stay small; fuzz-run still keeps every feature in build/.
FUZZ_MERGE_ARGS ?= -use_counters=0
FUZZ_DICT = $(if $(wildcard fuzz/dict/$(1).dict),fuzz/dict/$(1).dict,fuzz/dict/smtp.dict)

$(FUZZ_OBJDIR)/%.o: %.c | $(GEN_HDRS)
	$(qecho) FUZZCC $<
	$(Q)mkdir -p $(@D) && $(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link $(FUZZ_SAN) -MMD -MP -c $< -o $@
$(FUZZ_OBJDIR)/gen/%.o: $(GEN)/%.c | $(GEN_HDRS)
	$(Q)mkdir -p $(@D) && $(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link $(FUZZ_SAN) -c $< -o $@
$(REPLAY_OBJDIR)/%.o: %.c | $(GEN_HDRS)
	$(qecho) REPLAYCC $<
	$(Q)mkdir -p $(@D) && $(CC) $(FUZZ_CFLAGS) $(REPLAY_SAN) -MMD -MP -c $< -o $@
$(REPLAY_OBJDIR)/gen/%.o: $(GEN)/%.c | $(GEN_HDRS)
	$(Q)mkdir -p $(@D) && $(CC) $(FUZZ_CFLAGS) $(REPLAY_SAN) -c $< -o $@

$(FUZZ_LIB): $(FUZZ_LIB_OBJS)
	$(Q)rm -f $@ && ar rcs $@ $^
$(REPLAY_LIB): $(REPLAY_LIB_OBJS)
	$(Q)rm -f $@ && ar rcs $@ $^

# Per-target link sets: the (pure, uninstrumented) system libraries a target's
# modules call beyond libc; see scripts/check-layers.sh for which are allowed.
FUZZ_LIBS_http_request := -lhttp_parser -lz -ljansson
FUZZ_LIBS_inject := -ljansson -lhttp_parser -lz
FUZZ_LIBS_bounce := -lpcre2-8 -ljansson
FUZZ_LIBS_arf := -ljansson
FUZZ_LIBS_dsn := -ljansson
FUZZ_LIBS_template := -ljansson
FUZZ_LIBS_sched_spec := -ljansson

$(BUILD)/fuzz/%: $(FUZZ_OBJDIR)/fuzz/fuzz_%.o $(FUZZ_LIB)
	$(qecho) FUZZLD $@
	$(Q)mkdir -p $(@D) && $(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $^ $(FUZZ_LIBS_$*) -lm

$(BUILD)/fuzz-replay/%: $(REPLAY_OBJDIR)/fuzz/fuzz_%.o $(REPLAY_OBJDIR)/fuzz/replay_main.o $(REPLAY_LIB)
	$(qecho) LD $@
	$(Q)mkdir -p $(@D) && $(CC) $(REPLAY_SAN) -o $@ $^ $(FUZZ_LIBS_$*) -lm

# Objects are reached through pattern-rule chains: keep them (no rebuild of
# everything on every run) and track their header dependencies.
.SECONDARY: $(FUZZ_LIB_OBJS) $(REPLAY_LIB_OBJS) $(FUZZ_TARGETS:%=$(FUZZ_OBJDIR)/fuzz/fuzz_%.o) \
	$(FUZZ_TARGETS:%=$(REPLAY_OBJDIR)/fuzz/fuzz_%.o) $(REPLAY_OBJDIR)/fuzz/replay_main.o
-include $(shell find $(FUZZ_OBJDIR) $(REPLAY_OBJDIR) -name '*.d' 2>/dev/null)

fuzz: $(FUZZ_TARGETS:%=$(BUILD)/fuzz/%) | deps-fuzz

fuzz-check-target:
	@test -n "$(T)" && test -f fuzz/fuzz_$(T).c || \
		{ echo "usage: make $(MAKECMDGOALS) T=<target>; targets: $(FUZZ_TARGETS)"; exit 2; }

# Reads the checked-in corpus, writes new inputs only to build/fuzz-corpus/T.
fuzz-run: fuzz-check-target | deps-fuzz
	@$(MAKE) --no-print-directory $(BUILD)/fuzz/$(T)
	@mkdir -p $(BUILD)/fuzz-corpus/$(T) $(BUILD)/fuzz-artifacts/$(T)
	$(BUILD)/fuzz/$(T) -max_total_time=$(SECONDS) -timeout=$(FUZZ_TIMEOUT) -dict=$(call FUZZ_DICT,$(T)) \
		-artifact_prefix=$(BUILD)/fuzz-artifacts/$(T)/ $(FUZZ_ARGS) \
		$(BUILD)/fuzz-corpus/$(T) fuzz/corpus/$(T)

# Each target from its corpus for SMOKE_SECONDS; new inputs go to a scratch dir.
fuzz-smoke: fuzz
	@for t in $(FUZZ_TARGETS); do echo "  FUZZ     $$t ($(SMOKE_SECONDS)s)"; \
		rm -rf $(BUILD)/fuzz-smoke/$$t && mkdir -p $(BUILD)/fuzz-smoke/$$t $(BUILD)/fuzz-artifacts/$$t && \
		$(BUILD)/fuzz/$$t -max_total_time=$(SMOKE_SECONDS) -timeout=$(FUZZ_TIMEOUT) -print_final_stats=0 \
			-dict=$$(test -f fuzz/dict/$$t.dict && echo fuzz/dict/$$t.dict || echo fuzz/dict/smtp.dict) \
			-artifact_prefix=$(BUILD)/fuzz-artifacts/$$t/ \
			$(BUILD)/fuzz-smoke/$$t fuzz/corpus/$$t >$(BUILD)/fuzz-$$t.log 2>&1 \
		|| { tail -40 $(BUILD)/fuzz-$$t.log; exit 1; }; done

# Named seeds and crash-* reproducers are kept as they are; fuzzer-found inputs
# (from the checked-in corpus and build/fuzz-corpus/T) are reduced to a set cover.
fuzz-merge: fuzz-check-target | deps-fuzz
	@$(MAKE) --no-print-directory $(BUILD)/fuzz/$(T)
	@rm -rf $(BUILD)/fuzz-merge/$(T) && mkdir -p $(BUILD)/fuzz-merge/$(T) $(BUILD)/fuzz-corpus/$(T)
	@find fuzz/corpus/$(T) -maxdepth 1 -type f ! -regex '.*/[0-9a-f]\{40\}' \
		-exec cp {} $(BUILD)/fuzz-merge/$(T)/ \;
	$(BUILD)/fuzz/$(T) -set_cover_merge=1 $(FUZZ_MERGE_ARGS) $(BUILD)/fuzz-merge/$(T) \
		fuzz/corpus/$(T) $(BUILD)/fuzz-corpus/$(T)
	@rm -f fuzz/corpus/$(T)/* && cp $(BUILD)/fuzz-merge/$(T)/* fuzz/corpus/$(T)/
	@echo "  MERGED   fuzz/corpus/$(T): $$(ls fuzz/corpus/$(T) | wc -l) files, $$(cat fuzz/corpus/$(T)/* | wc -c) bytes"

fuzz-replay: $(FUZZ_TARGETS:%=$(BUILD)/fuzz-replay/%)
	@for t in $(FUZZ_TARGETS); do \
		$(BUILD)/fuzz-replay/$$t fuzz/corpus/$$t || exit 1; done

.PHONY: fuzz fuzz-run fuzz-smoke fuzz-merge fuzz-replay fuzz-check-target
