#!/usr/bin/env bash
# `make bench`: every benchmark in one run, so ratios between them hold on a shared machine.
# Append further benchmarks as sections below (one `section` call each); keep each to a minute or so.
# THREADS (default: all online CPUs) is passed as -t to every benchmark.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
THREADS=${THREADS:-$(nproc)}
status=0
section() { echo; echo "=== $1"; shift; "$@" || { echo "(failed: $*)"; status=1; }; }

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs; threads: $THREADS"

# Memory read bandwidth, then F16 / Q8_0 matmul bandwidth as a fraction of it (n = 1 and n = 5).
make -s "$BUILD/bench_kernels" >/dev/null && section "kernels: matmul vs memory read bandwidth" "$BUILD/bench_kernels" -t "$THREADS"

# Byte-level BPE tokenizing speed (bench/tok_bench.c): 1 MB of mixed text, 100 KB and 1 MB of one letter.
V=../shared/vocab
if [ -f "$V/ggml-vocab-gpt-2.gguf" ]; then
  ${CC:-cc} -O2 -std=c11 -D_GNU_SOURCE -I. -DSD_BENCH_MAIN bench/tok_bench.c "$BUILD/libspecd.a" -lm -pthread -o "$BUILD/tok_bench" &&
    section "tokenizer: byte-level BPE encode speed" "$BUILD/tok_bench" "$V"/ggml-vocab-{gpt-2,deepseek-coder,deepseek-llm,falcon,mpt,starcoder}.gguf
else
  echo; echo "=== tokenizer: skipped ($V/ggml-vocab-gpt-2.gguf not found)"
fi

exit $status
