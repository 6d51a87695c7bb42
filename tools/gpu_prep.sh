#!/usr/bin/env bash
# Builds the CUDA binaries for Hopper (sm_90) here and packs what tools/gpu_check.sh needs into .gpu/, so a
# GPU machine that has only the CUDA runtime and driver (no libzmq, msgpack or project headers) can run them:
#   .gpu/bin/     specd, test_cuda, bench_cuda
#   .gpu/lib/     the shared libraries they link that are not glibc or CUDA (libzmq and its dependencies)
#   .gpu/shared/  ../shared/models (tiny real models for the tests and the sanitizer run) and the quantized
#                 files of ../shared/quant
# Then carry `.gpu.tgz` to the machine, unpack it and run `tools/gpu_check.sh` there (docs/benchmarks.md, "CUDA backend").
set -euo pipefail
cd "$(dirname "$0")/.."
B=build/gpu
ARCH="-gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90"
make -j"$(nproc)" CUDA=1 BUILD=$B CUDA_ARCH="$ARCH" $B/specd $B/tests/test_cuda $B/bench_cuda >/dev/null
rm -rf .gpu && mkdir -p .gpu/bin .gpu/lib .gpu/shared
cp $B/specd $B/tests/test_cuda $B/bench_cuda .gpu/bin/
strip --strip-debug .gpu/bin/* # host debug info only; the device code (and its line info) stays
# Every library the binaries resolve here except glibc's own, the C++ runtime and CUDA's (the GPU machine
# has newer ones of those, and its CUDA libraries must match its driver).
ldd $B/specd | awk '$3 ~ /^\// {print $3}' | grep -Ev '/(libc|libm|libdl|librt|libpthread|libresolv|libstdc\+\+|libgcc_s|ld-linux[^/]*)\.so|/usr/local/cuda' \
  | while read -r lib; do cp -L "$lib" .gpu/lib/; done
if [ -d ../shared/models ]; then cp -r ../shared/models .gpu/shared/; else echo "gpu_prep: no ../shared/models"; fi
# llama.cpp's quantized files of the shared base model (test_cuda's quantized-type test), not the F32/F16 ones
if [ -d ../shared/quant ]; then mkdir -p .gpu/shared/quant && cp ../shared/quant/base-[qi]*.gguf .gpu/shared/quant/; fi
# The device tool carries at most 64 MiB; the folder is over that, so it travels as one gzip archive
# (carry .gpu.tgz, then on the device: tar xzf .gpu.tgz && bash .gpu/gpu_check.sh).
# The check script travels too (.gpu/gpu_check.sh cds to the folder above .gpu/), so a run can use this
# checkout's version of it from any other checkout it is unpacked in (`bash .gpu/gpu_check.sh`).
cp tools/gpu_check.sh .gpu/
tar czf .gpu.tgz .gpu
# .git is a file in a worktree: ask git where the exclude list is
EX=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$EX")"
for p in /.gpu/ /.gpu.tgz; do grep -qx "$p" "$EX" 2>/dev/null || echo "$p" >>"$EX"; done
du -sh .gpu .gpu.tgz
