# specd — one Makefile, sources discovered per folder so adding a file needs no edit here.
#   make            build/specd and build/specd-cli (CUDA backend too when nvcc is found; CUDA=0 skips it)
#   make test       build and run every test (tests/run.sh prints "N passed, N failed" last)
#   make demo       install missing packages (as root), build, run the daemon and a client on the synthetic pair
#   make bench      bandwidth and decode benchmarks (see docs/benchmarks.md)
#   make SAN=1      build with ASan/UBSan into build/san/
#   make NPROC=N    jobs for the build (default: every core)
#   make fuzz       each fuzz target of tests/fuzz/ for FUZZ_SECONDS under libFuzzer (clang), see docs/fuzzing.md

# Parallel by default: CI and the README call plain `make test` on 2 cores. `make NPROC=1` builds serially.
NPROC   ?= $(shell nproc 2>/dev/null || echo 1)
MAKEFLAGS += -j$(NPROC)

CC      ?= cc
NVCC    ?= /usr/local/cuda/bin/nvcc
CUDA_HOME ?= /usr/local/cuda
BUILD   ?= build
ifeq ($(SAN),1)
BUILD   := build/san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
endif
FUZZ_SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
ifeq ($(FUZZ_BUILD),1) # the library as `make fuzz` links it (clang, build/fuzz/obj)
SANFLAGS := -fsanitize=fuzzer-no-link $(FUZZ_SAN)
# the SIMD kernels take many minutes to compile under ASan and are not what the targets aim at
$(BUILD)/kernels/cpu/kern_%.o: SANFLAGS := -fsanitize=fuzzer-no-link
endif

ifeq ($(origin CUDA),undefined)
CUDA := $(shell test -x $(NVCC) && echo 1 || echo 0)
endif
ifeq ($(SAN),1)
CUDA := 0
endif
# sm_80 code also runs on sm_86 and sm_89 (same major architecture); sm_90 (H100/H200) needs its own, and
# the compute_90 PTX lets newer GPUs compile it when loading. Two machine-code targets, not four, halve
# nvcc's share of a CI build.
CUDA_ARCH ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
             -gencode arch=compute_90,code=compute_90

OPT     ?= -O2
CFLAGS  += -std=c11 -D_GNU_SOURCE $(OPT) -g -Wall -Wextra -Wno-unused-parameter -pthread -I. $(SANFLAGS) -MMD -MP
HOST_LIBS := -lzmq -lmsgpackc -ljansson -lmicrohttpd -lm -pthread # everything but CUDA's
LDLIBS  += $(HOST_LIBS)
LDFLAGS += $(SANFLAGS)

# Library sources: every .c in the layers below (base/ is the layer every folder may use; cmd/ holds the
# subcommands, main.c is the entry point of build/specd). bench/ holds programs and is not in the library.
LIB_DIRS := base kernels kernels/cpu tokenizer model draft target ipc daemon tools cmd chat gateway
LIB_SRC  := $(filter-out cmd/main.c, $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c)))
CLIENT_SRC := $(filter-out clients/cli.c, $(wildcard clients/*.c))
CU_SRC   := $(wildcard kernels/cuda/*.cu)
CUC_SRC  := $(wildcard kernels/cuda/*.c)

ifeq ($(CUDA),1)
CFLAGS   += -DSD_HAVE_CUDA=1 -I$(CUDA_HOME)/include
LIB_SRC  += $(CUC_SRC)
CU_OBJ   := $(patsubst %.cu,$(BUILD)/%.o,$(CU_SRC))
LDLIBS   += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart_static -ldl -lrt -lstdc++
endif

LIB_OBJ    := $(patsubst %.c,$(BUILD)/%.o,$(LIB_SRC)) $(CU_OBJ)
CLIENT_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(CLIENT_SRC))
# Each bench/*.c but the shared bandwidth probe is one program, build/<name>.
BENCH_SHARED := bench/bandwidth.c
BENCH_BIN  := $(patsubst bench/%.c,$(BUILD)/%,$(filter-out $(BENCH_SHARED),$(wildcard bench/*.c)))
TEST_SRC   := $(wildcard tests/test_*.c)
TEST_BIN   := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))

.PHONY: all test demo bench clean deps san-test install fuzz soak
# Keep object files of test programs and the emulation's generated sources (make would delete them as
# intermediates and print the rm last, after the test summary that must close the run). Named, not a bare
# .SECONDARY: that makes every target secondary, and a missing secondary object (a new source file) is then
# not built when the library is newer than its source.
.SECONDARY: $(TEST_BIN:=.o) $(patsubst %.cu,$(BUILD)/emu/%.cc,$(wildcard kernels/cuda/*.cu tests/cuda_emu/*.cu))
all: deps $(BUILD)/specd $(BUILD)/specd-cli $(BENCH_BIN)

# Installs what the build needs when it is missing (root: apt-get; otherwise print the command and stop).
# Every compile rule waits for it (order-only), so a parallel build never compiles before the headers exist.
deps:
	@bash tools/deps.sh

$(BUILD)/libspecd.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	@rm -f $@  # rebuilt from scratch: a member whose source was removed must not linger
	ar rcs $@ $^

# The client archive: clients/, ipc/, base/ and the option table (data only: specd-cli's options).
$(BUILD)/libspecd-client.a: $(CLIENT_OBJ) $(patsubst %.c,$(BUILD)/%.o,$(wildcard ipc/*.c base/*.c) target/options.c)
	@mkdir -p $(dir $@)
	ar rcs $@ $^

# The shared client library: position-independent objects of the client and what it uses, exporting only
# specd_* (clients/libspecd-client.map).
SO_SRC := clients/specd_client.c $(wildcard ipc/*.c base/*.c)
$(BUILD)/libspecd-client.so: $(patsubst %.c,$(BUILD)/pic/%.o,$(SO_SRC)) clients/libspecd-client.map
	$(CC) $(LDFLAGS) -shared -Wl,-soname,libspecd-client.so.0 -Wl,--version-script=clients/libspecd-client.map \
	  -o $@ $(filter %.o,$^) -lzmq -lmsgpackc -lm -pthread
$(BUILD)/pic/%.o: %.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fPIC -c -o $@ $<

$(BUILD)/specd: $(BUILD)/cmd/main.o $(BUILD)/libspecd.a $(BUILD)/libspecd-client.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/specd-cli: $(BUILD)/clients/cli.o $(BUILD)/libspecd-client.a
	$(CC) $(LDFLAGS) -o $@ $^ -lzmq -lmsgpackc -lm -pthread

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(BUILD)/libspecd.a $(BUILD)/libspecd-client.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/%.o: %.cu | deps
	@mkdir -p $(dir $@)
	$(NVCC) -O3 -lineinfo -std=c++17 -I. $(CUDA_ARCH) -Xcompiler -fPIC,-Wall -MMD -MP -MF $(@:.o=.d) -c -o $@ $<

# Benchmark programs: build/<name> from bench/<name>.c (BENCH_BIN above).
$(BENCH_BIN): $(BUILD)/%: $(BUILD)/bench/%.o $(patsubst %.c,$(BUILD)/%.o,$(BENCH_SHARED)) $(BUILD)/libspecd.a $(BUILD)/libspecd-client.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# CUDA emulation (tests/cuda_emu/emu.h): tests/test_cuda.c against kernels/cuda/*.cu compiled by g++ after
# launch.sed rewrites their <<<>>> launches, GPU threads as fibers, always under ASan/UBSan; no GPU needed.
EMU          := $(BUILD)/emu
EMU_SAN      := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
EMU_CXXFLAGS := -std=c++17 $(OPT) -g -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas -Wno-sign-compare -fno-strict-aliasing \
                -pthread -I. -Itests/cuda_emu $(EMU_SAN) -MMD -MP
EMU_OBJ      := $(patsubst %.cu,$(EMU)/%.o,$(CU_SRC)) $(patsubst %.c,$(EMU)/%.o,$(CUC_SRC)) \
                $(patsubst %.cpp,$(EMU)/%.o,$(wildcard tests/cuda_emu/*.cpp)) $(EMU)/kernels/backend.o
EMU_TEST_BIN := $(BUILD)/tests/test_cuda_emu $(BUILD)/tests/test_cuda_emu_self

$(EMU)/%.cc: %.cu tests/cuda_emu/launch.sed
	@mkdir -p $(dir $@)
	{ printf '#line 1 "%s"\n' $<; sed -z -E -f tests/cuda_emu/launch.sed $<; } > $@
$(EMU)/%.o: $(EMU)/%.cc | deps
	$(CXX) $(EMU_CXXFLAGS) -c -o $@ $<
# The scheduler is the emulation's hot loop: not instrumented itself (the kernels it runs are).
$(EMU)/tests/cuda_emu/emu_sched.o: EMU_CXXFLAGS := $(filter-out $(EMU_SAN),$(EMU_CXXFLAGS)) -DEMU_ASAN=1
$(EMU)/%.o: %.cpp | deps
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_CXXFLAGS) -c -o $@ $<
# C files of the emulated build: the backend selector with CUDA present, test_cuda.c knowing it is emulated.
$(EMU)/%.o: %.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DSD_HAVE_CUDA=1 -DSD_CUDA_EMU=1 $(EMU_SAN) -c -o $@ $<
$(BUILD)/tests/test_cuda_emu: $(EMU)/tests/test_cuda.o $(EMU_OBJ) $(BUILD)/libspecd.a $(BUILD)/libspecd-client.a
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_SAN) -o $@ $^ $(HOST_LIBS)
$(BUILD)/tests/test_cuda_emu_self: $(EMU)/tests/cuda_emu/selftest.o $(EMU_OBJ) $(BUILD)/libspecd.a
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_SAN) -o $@ $^ $(HOST_LIBS)

test: all $(TEST_BIN) $(EMU_TEST_BIN)
	@BUILD=$(BUILD) bash tests/run.sh $(TEST_BIN) $(EMU_TEST_BIN)

san-test:
	$(MAKE) SAN=1 test

# make fuzz [FUZZ_SECONDS=60]: each target of tests/fuzz/ for FUZZ_SECONDS under libFuzzer with ASan and
# UBSan (Debian's clang; the library is rebuilt with it into build/fuzz/obj). Starts from the kept corpus
# (tests/fuzz/corpus/<t>/) and the seeds test_fuzz generates (build/fuzz/seeds/<t>/); new inputs collect in
# build/fuzz/corpus/<t>/, a crash is written to build/fuzz/crash-<t>-* and stops the run: keep it in
# tests/fuzz/corpus/<t>/ with the fix. See docs/fuzzing.md.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
fuzz: $(BUILD)/tests/test_fuzz
	@bash tools/deps.sh fuzz
	$(MAKE) CC=clang CUDA=0 BUILD=build/fuzz/obj FUZZ_BUILD=1 build/fuzz/obj/libspecd.a build/fuzz/obj/libspecd-client.a
	for t in $(FUZZ_TARGETS); do \
	  clang -std=c11 -D_GNU_SOURCE -O1 -g -I. -fsanitize=fuzzer $(FUZZ_SAN) -o build/fuzz/fuzz_$$t tests/fuzz/fuzz_$$t.c \
	    build/fuzz/obj/libspecd.a build/fuzz/obj/libspecd-client.a $(LDLIBS) || exit 1; done
	BUILD=$(BUILD) $(BUILD)/tests/test_fuzz >/dev/null
	for t in $(FUZZ_TARGETS); do mkdir -p build/fuzz/corpus/$$t; \
	  build/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
	    -artifact_prefix=build/fuzz/crash-$$t- build/fuzz/corpus/$$t build/fuzz/seeds/$$t tests/fuzz/corpus/$$t \
	    2>build/fuzz/$$t.log || { tail -60 build/fuzz/$$t.log; exit 1; }; \
	  grep -h "stat::number_of_executed_units\|Done [0-9]* runs" build/fuzz/$$t.log | sed "s/^/$$t: /"; done

demo: all
	@bash tools/demo.sh

bench: all
	@bash bench/run.sh

# A bounded soak of the daemon on a loopback Unix socket (docs/benchmarks.md "Soak"): SOAK_SECONDS of mixed
# streaming / cancel / disconnect load from 8 clients plus one that never reads; fails on a lost or
# duplicated reply or growing RSS.
SOAK_SECONDS ?= 120
soak: $(BUILD)/specd $(BUILD)/ipc_bench
	BUILD=$(BUILD) $(BUILD)/ipc_bench --soak $(SOAK_SECONDS) --clients 8

# make install [PREFIX=/usr/local] [DESTDIR=...] [PYTHONDIR=...]: the binaries, the C client (header,
# static and shared library, pkg-config file), the Python client and the systemd unit.
PREFIX    ?= /usr/local
PYTHONDIR ?= $(PREFIX)/lib/python3/dist-packages
VERSION   := $(shell sed -n 's/^\#define SD_VERSION "\(.*\)"/\1/p' base/version.h)
install: $(BUILD)/specd $(BUILD)/specd-cli $(BUILD)/libspecd-client.a $(BUILD)/libspecd-client.so
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include \
	  $(DESTDIR)$(PYTHONDIR) $(DESTDIR)$(PREFIX)/lib/systemd/system
	install -m 755 $(BUILD)/specd $(BUILD)/specd-cli $(DESTDIR)$(PREFIX)/bin/
	install -m 644 clients/specd_client.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(BUILD)/libspecd-client.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(BUILD)/libspecd-client.so $(DESTDIR)$(PREFIX)/lib/libspecd-client.so.$(VERSION)
	ln -sf libspecd-client.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libspecd-client.so.0
	ln -sf libspecd-client.so.0 $(DESTDIR)$(PREFIX)/lib/libspecd-client.so
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' clients/specd-client.pc.in \
	  > $(DESTDIR)$(PREFIX)/lib/pkgconfig/specd-client.pc
	install -m 644 clients/python/specd_client.py $(DESTDIR)$(PYTHONDIR)/
	sed -e 's|@PREFIX@|$(PREFIX)|g' tools/specd.service.in > $(DESTDIR)$(PREFIX)/lib/systemd/system/specd.service

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
