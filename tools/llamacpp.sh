#!/usr/bin/env bash
# Builds llama.cpp beside specd, for side-by-side benchmarks only (nothing of it is linked into specd):
#   tools/llamacpp.sh SRC [native|avx2|avx]
# SRC is a llama.cpp source tree (the benchmarks in docs/benchmarks.md used commit c392e50 of
# github.com/ggerganov/llama.cpp, build 4748). The build goes to SRC/build (native) or SRC/build-avx2,
# SRC/build-avx, so each SIMD level can be compared with specd's SPECD_SIMD=avx2 / avx. Prints the line
# LLAMACPP_BIN=... that bench/vs_llamacpp.sh and the other comparison scripts read.
set -euo pipefail
src=${1:?usage: tools/llamacpp.sh SRC [native|avx2|avx]}
level=${2:-native}
command -v cmake >/dev/null || { echo "llamacpp: cmake is missing (Debian: cmake)" >&2; exit 1; }
case $level in
  native) dir=build; simd=(-DGGML_NATIVE=ON) ;;
  avx2) dir=build-avx2; simd=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON) ;;
  avx) dir=build-avx; simd=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF) ;;
  *) echo "llamacpp: unknown level '$level' (native, avx2 or avx)" >&2; exit 1 ;;
esac
cmake -S "$src" -B "$src/$dir" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF "${simd[@]}" >/dev/null
cmake --build "$src/$dir" -j"$(nproc)" --target llama-bench llama-server llama-quantize llama-cli >/dev/null
echo "LLAMACPP_BIN=$(cd "$src/$dir/bin" && pwd)"
