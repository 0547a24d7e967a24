# aesalign - build, test, bench.  CC, CFLAGS, LDFLAGS can be overridden:
#   make CC=clang CFLAGS="-O2 -fsanitize=address,undefined"
# Extra defines (AES_NO_SIMD, AES_NO_THREADS) go in DEFS:  make test DEFS=-DAES_NO_SIMD

CC      ?= cc
CFLAGS  ?= -O2 -g
WARN    ?= -Wall -Wextra
STD     ?= -std=c99
DEFS    ?=
LDFLAGS ?=
BUILD   ?= build
PYTHON  ?= python3

ifneq (,$(findstring AES_NO_THREADS,$(DEFS)))
THREADLIB :=
else
THREADLIB := -lpthread
endif
LIBS := -lm $(THREADLIB)

# POSIX is needed by the tools and tests (directories, mmap, fork); the
# library itself guards what it uses.
# 64-bit file offsets and inode numbers on 32-bit systems too (readdir and
# stat fail with EOVERFLOW without it on large file systems).
ALLCFLAGS = $(STD) $(WARN) $(CFLAGS) $(DEFS) -D_POSIX_C_SOURCE=200809L -D_FILE_OFFSET_BITS=64 -I.

# JPEG/PNG decoding in the CLI and examples comes from Debian's libstb-dev
# when it is installed; without it they read PPM/PGM only and say so.
HAVE_STB ?= $(shell test -f /usr/include/stb/stb_image.h && printf 'int main(void){return 0;}' | \
              $(CC) -x c - -lstb -o /dev/null 2>/dev/null && echo 1)
ifeq ($(HAVE_STB),1)
STB_CFLAGS := -DAES_HAVE_STB -I/usr/include/stb
STB_LIBS   := -lstb
endif

# WebP decoding in the CLI comes from Debian's libwebp-dev when installed.
HAVE_WEBP ?= $(shell test -f /usr/include/webp/decode.h && printf 'int main(void){return 0;}' | \
               $(CC) -x c - -lwebp -o /dev/null 2>/dev/null && echo 1)
ifeq ($(HAVE_WEBP),1)
STB_CFLAGS += -DAES_HAVE_WEBP
STB_LIBS   += -lwebp
endif

# OpenBLAS is only an anchor for `make bench`.
HAVE_OPENBLAS ?= $(shell printf 'int main(void){return 0;}' | $(CC) -x c - -lopenblas -o /dev/null 2>/dev/null && \
                   (test -f /usr/include/x86_64-linux-gnu/cblas.h -o -f /usr/include/cblas.h -o \
                    -f /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h) && echo 1)
ifeq ($(HAVE_OPENBLAS),1)
BLAS_CFLAGS := -DAES_HAVE_OPENBLAS -I/usr/include/x86_64-linux-gnu/openblas-pthread
BLAS_LIBS   := -lopenblas
endif

TEST_SRCS  := $(sort $(wildcard tests/test_*.c))
TEST_BINS  := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRCS))
# TEST_ONLY="core gemm" builds and runs only tests/test_core.c and
# tests/test_gemm.c (CI uses it for the slow runners: valgrind, qemu).
# Every libFuzzer harness also runs as a test over its seed corpus
# (tests/fuzz/replay.c), so an API change that breaks a harness fails here.
FUZZ_SRCS  := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS  := $(patsubst tests/fuzz/%.c,$(BUILD)/tests/fuzz/%,$(FUZZ_SRCS))
TEST_BINS  += $(FUZZ_BINS)
ifneq ($(strip $(TEST_ONLY)),)
TEST_BINS  := $(patsubst %,$(BUILD)/tests/test_%,$(TEST_ONLY))
endif
CMD_SRCS   := $(sort $(wildcard tools/cmd_*.c))
EX_SRCS    := $(sort $(wildcard examples/*.c))
EX_BINS    := $(patsubst examples/%.c,$(BUILD)/examples/%,$(EX_SRCS))
BENCH_SRCS := $(sort $(wildcard tools/bench_*.c))
BENCH_BINS := $(patsubst tools/%.c,$(BUILD)/%,$(BENCH_SRCS))
HDRS       := aesalign.h
# The synthetic world and the eval format: a companion header of the CLI,
# the tests and the demo (tools/aesalign.c compiles its implementation).
WORLD_HDR  := tools/world.h
# Test programs that include it rebuild when it changes.
WORLD_TEST_BINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(shell grep -l 'world\.h"' $(TEST_SRCS) /dev/null))

.PHONY: all test bench demo clean cli examples
all: cli examples

cli: $(BUILD)/aesalign

# Every tools/cmd_*.c file declares its subcommands with
#   CLI_COMMAND(name, "one-line summary") { ... }
# and this rule collects them into the dispatch table of tools/aesalign.c.
$(BUILD)/cli_commands.h: $(CMD_SRCS) | $(BUILD)
	@grep -h '^CLI_COMMAND(' $(CMD_SRCS) /dev/null | sed -e 's/^CLI_COMMAND(\([A-Za-z_0-9]*\), *\("[^"]*"\)).*$$/CLI_X(\1, \2)/' > $@.tmp
	@cmp -s $@.tmp $@ || mv $@.tmp $@; rm -f $@.tmp

$(BUILD)/aesalign: tools/aesalign.c tools/cli.h tools/http.h tools/serve_page.h $(WORLD_HDR) $(CMD_SRCS) $(BUILD)/cli_commands.h $(HDRS) | $(BUILD)
	$(CC) $(ALLCFLAGS) $(STB_CFLAGS) -I$(BUILD) -o $@ tools/aesalign.c $(CMD_SRCS) $(LDFLAGS) $(STB_LIBS) $(LIBS)

examples: $(EX_BINS)
$(BUILD)/examples/%: examples/%.c $(HDRS) | $(BUILD)
	@mkdir -p $(dir $@)
	$(CC) $(ALLCFLAGS) $(STB_CFLAGS) -o $@ $< $(LDFLAGS) $(STB_LIBS) $(LIBS)

$(BUILD)/tests/%: tests/%.c tests/testlib.h $(HDRS) | $(BUILD)
	@mkdir -p $(dir $@)
	$(CC) $(ALLCFLAGS) -o $@ $< $(LDFLAGS) $(LIBS)
# The seed replays: the library is compiled once; a harness that calls
# internal aes__ functions compiles the implementation itself.
$(BUILD)/tests/fuzz/aesalign_lib.o: $(HDRS) | $(BUILD)
	@mkdir -p $(dir $@)
	@echo "$(CC) ... -c -o $@ aesalign.h"
	@printf '#define AESALIGN_IMPLEMENTATION\n#include "aesalign.h"\n' | $(CC) $(ALLCFLAGS) -x c -c -o $@ -
$(BUILD)/tests/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c tests/fuzz/fuzz_common.h $(wildcard tests/fuzz/*.h) \
                            $(BUILD)/tests/fuzz/aesalign_lib.o $(HDRS)
	@echo "$(CC) ... -o $@ $< tests/fuzz/replay.c"
	@if grep -q 'aes__' $<; then \
	    $(CC) $(ALLCFLAGS) -DFUZZ_NAME='"$*"' -o $@ $< tests/fuzz/replay.c $(LDFLAGS) $(LIBS); \
	else \
	    $(CC) $(ALLCFLAGS) -DAES_FUZZ_SEPARATE_LIB -DFUZZ_NAME='"$*"' -o $@ $< tests/fuzz/replay.c \
	        $(BUILD)/tests/fuzz/aesalign_lib.o $(LDFLAGS) $(LIBS); \
	fi
# The photo-library tests write JPEG / WebP files when the libraries are there.
$(BUILD)/tests/test_photo: tests/test_photo.c tests/testlib.h $(HDRS) | $(BUILD)
	@mkdir -p $(dir $@)
	$(CC) $(ALLCFLAGS) $(STB_CFLAGS) -o $@ $< $(LDFLAGS) $(STB_LIBS) $(LIBS)
$(WORLD_TEST_BINS) $(BUILD)/bench_inputs $(BUILD)/bench_augment: $(WORLD_HDR)
# The synthetic long-tailed benchmark (`aesalign elta-bench`), likewise a
# companion header: the CLI, test_elta and the ELTA example include it.
$(BUILD)/aesalign $(BUILD)/tests/test_elta $(BUILD)/examples/train_iaa_elta: tools/elta_synth.h

# The tests run from the repository root (fixtures are found as tests/...).
# AES_TEST_RUNNER goes before each test program (valgrind, qemu) and
# AES_CLI_RUNNER before each CLI run the tests make (qemu for cross builds).
test: $(TEST_BINS) $(BUILD)/aesalign
	@AES_CLI=$(BUILD)/aesalign AES_CLI_RUNNER="$(AES_CLI_RUNNER)" AES_TEST_RUNNER="$(AES_TEST_RUNNER)" \
	    sh tests/run_tests.sh $(TEST_BINS)

$(BUILD)/bench_%: tools/bench_%.c tools/bench.h $(HDRS) | $(BUILD)
	$(CC) $(ALLCFLAGS) -O3 $(BLAS_CFLAGS) -o $@ $< $(LDFLAGS) $(BLAS_LIBS) $(LIBS)

# Benchmarks: OpenBLAS is told to use its own best kernels here (this
# machine's environment may pin an older core type).  Then the anchors:
# the same ViT-B/32 image tower in PyTorch and ONNX Runtime, each skipped
# when not installed (tools/bench_anchors.sh).
# bench_gemm runs a second time with our AVX2 path forced next to OpenBLAS's
# Haswell (AVX2) kernels, which OpenBLAS only picks at load time from
# OPENBLAS_CORETYPE (on a CPU without AVX2 that run says so and skips).
bench: $(BENCH_BINS)
	@for b in $(BENCH_BINS); do env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $$b || exit 1; done
	@env -u OPENBLAS_L2_SIZE OPENBLAS_CORETYPE=Haswell $(BUILD)/bench_gemm --isa avx2
	@env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHON=$(PYTHON) sh tools/bench_anchors.sh $(BUILD)

# The whole pipeline offline on generated data (tools/demo.sh says what it does).
demo: $(BUILD)/aesalign
	@AES_CLI=$(BUILD)/aesalign sh tools/demo.sh demo

$(BUILD):
	@mkdir -p $(BUILD)

clean:
	rm -rf $(BUILD)
