# SPDX-License-Identifier: Apache-2.0
# Fuzzing rules, included by the top Makefile.
#
# Every fuzz/fuzz_<name>.c defines LLVMFuzzerTestOneInput for target <name>
# over the pure layers (kumod/base, kumod/proto). Corpora: fuzz/corpus/<name>/.
#   make fuzz                       build every libFuzzer target (clang) into build/fuzz/
#   make fuzz-run T=parser [SECONDS=60]
#   make fuzz-smoke [SECONDS=10]    every target for a short, bounded time
#   make fuzz-replay                every corpus file through a plain driver under ASan+UBSan (gcc)

FUZZ_TARGETS := $(patsubst fuzz/fuzz_%.c,%,$(sort $(wildcard fuzz/fuzz_*.c)))
FUZZ_LIB_SRCS := $(sort $(wildcard kumod/base/*.c kumod/proto/*.c))
FUZZ_CC := clang
FUZZ_CFLAGS := -std=gnu11 -g -O1 -D_GNU_SOURCE -Ikumod -I$(GEN) -DUSE_LTTNG=0 -DUSE_USDT=0 \
	-DKUMOD_VERSION='"fuzz"' -fno-omit-frame-pointer -Wall -Wextra -Wno-unused-parameter
FUZZ_OBJDIR := $(BUILD)/obj-fuzz
REPLAY_OBJDIR := $(BUILD)/obj-replay
FUZZ_LIB_OBJS := $(FUZZ_LIB_SRCS:%.c=$(FUZZ_OBJDIR)/%.o) $(FUZZ_OBJDIR)/gen/ktrace_defs.o
REPLAY_LIB_OBJS := $(FUZZ_LIB_SRCS:%.c=$(REPLAY_OBJDIR)/%.o) $(REPLAY_OBJDIR)/gen/ktrace_defs.o
REPLAY_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
SECONDS ?= 60

$(FUZZ_OBJDIR)/%.o: %.c | $(GEN_HDRS)
	$(qecho) FUZZCC $<
	$(Q)mkdir -p $(@D) && $(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -MMD -MP -c $< -o $@
$(FUZZ_OBJDIR)/gen/%.o: $(GEN)/%.c | $(GEN_HDRS)
	$(Q)mkdir -p $(@D) && $(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -c $< -o $@
$(REPLAY_OBJDIR)/%.o: %.c | $(GEN_HDRS)
	$(qecho) REPLAYCC $<
	$(Q)mkdir -p $(@D) && $(CC) $(FUZZ_CFLAGS) $(REPLAY_SAN) -MMD -MP -c $< -o $@
$(REPLAY_OBJDIR)/gen/%.o: $(GEN)/%.c | $(GEN_HDRS)
	$(Q)mkdir -p $(@D) && $(CC) $(FUZZ_CFLAGS) $(REPLAY_SAN) -c $< -o $@

$(BUILD)/fuzz/%: $(FUZZ_OBJDIR)/fuzz/fuzz_%.o $(FUZZ_LIB_OBJS)
	$(qecho) FUZZLD $@
	$(Q)mkdir -p $(@D) && $(FUZZ_CC) -fsanitize=fuzzer,address,undefined -o $@ $^ -lm

$(BUILD)/fuzz-replay/%: $(REPLAY_OBJDIR)/fuzz/fuzz_%.o $(REPLAY_OBJDIR)/fuzz/replay_main.o $(REPLAY_LIB_OBJS)
	$(qecho) LD $@
	$(Q)mkdir -p $(@D) && $(CC) $(REPLAY_SAN) -o $@ $^ -lm

fuzz: $(FUZZ_TARGETS:%=$(BUILD)/fuzz/%)

fuzz-run: $(BUILD)/fuzz/$(T)
	@test -n "$(T)" || { echo "usage: make fuzz-run T=<target> [SECONDS=60]; targets: $(FUZZ_TARGETS)"; exit 2; }
	mkdir -p $(BUILD)/fuzz-corpus/$(T) && cp -n fuzz/corpus/$(T)/* $(BUILD)/fuzz-corpus/$(T)/ 2>/dev/null; \
	$(BUILD)/fuzz/$(T) -max_total_time=$(SECONDS) $(if $(wildcard fuzz/dict/$(T).dict),-dict=fuzz/dict/$(T).dict,-dict=fuzz/dict/smtp.dict) \
		$(BUILD)/fuzz-corpus/$(T) fuzz/corpus/$(T)

fuzz-smoke: fuzz
	@for t in $(FUZZ_TARGETS); do echo "  FUZZ $$t ($(or $(SMOKE_SECONDS),10)s)"; \
		$(BUILD)/fuzz/$$t -max_total_time=$(or $(SMOKE_SECONDS),10) -print_final_stats=0 fuzz/corpus/$$t >$(BUILD)/fuzz-$$t.log 2>&1 \
		|| { tail -40 $(BUILD)/fuzz-$$t.log; exit 1; }; done

fuzz-replay: $(FUZZ_TARGETS:%=$(BUILD)/fuzz-replay/%)
	@for t in $(FUZZ_TARGETS); do \
		$(BUILD)/fuzz-replay/$$t fuzz/corpus/$$t || exit 1; done

.PHONY: fuzz fuzz-run fuzz-smoke fuzz-replay
