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

exit $status
