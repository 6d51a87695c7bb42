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
  make -s "$BUILD/tok_bench" >/dev/null &&
    section "tokenizer: byte-level BPE encode speed" "$BUILD/tok_bench" "$V"/ggml-vocab-{gpt-2,deepseek-coder,deepseek-llm,falcon,mpt,starcoder}.gguf
else
  echo; echo "=== tokenizer: skipped ($V/ggml-vocab-gpt-2.gguf not found)"
fi

# Speculative decoding (cmd/bench.c): mkmodel's bench-shape pair (target ~337M params, F16, far larger
# than L3; draft 1/4 width, 1/6 depth), plain and speculative interleaved on the same prompts, k swept;
# prints ms/token, acceptance, speedup vs plain, Leviathan's prediction and the verify cost T(k+1)/T(1).
SPEC_DIR=$BUILD/bench/spec
if [ ! -s "$SPEC_DIR/target.gguf" ] || [ ! -s "$SPEC_DIR/draft.gguf" ]; then
  mkdir -p "$SPEC_DIR" && "$BUILD/specd" mkmodel --preset bench --agreement ${SPEC_AGREEMENT:-0.6} \
    -o "$SPEC_DIR/target.gguf" --pair "$SPEC_DIR/draft.gguf" >/dev/null
fi
section "speculation: plain vs draft model, k = 1, 2, 4, 6 (speedup and Leviathan's prediction)" \
  "$BUILD/specd" bench -m "$SPEC_DIR/target.gguf" -md "$SPEC_DIR/draft.gguf" -n 48 --sweep 1,2,4,6 \
  -t "$THREADS" --plot "$SPEC_DIR/speedup.svg"

# Plain greedy decode through the engine (the loop `specd generate` runs) on ~337M-parameter synthetic
# models far larger than L3, F16 and Q8_0, as a fraction of the read bandwidth measured alongside.
# Targets: F16 >= 85%, Q8_0 >= 75%. The models are written once into $BUILD (about 0.7 + 0.4 GB).
decode_models=()
for t in f16 q8_0; do
  m="$BUILD/bench-$t.gguf"
  [ -s "$m" ] || "$BUILD/specd" mkmodel --preset bench --type "$t" -o "$m" >/dev/null || { rm -f "$m"; status=1; }
  [ -s "$m" ] && decode_models+=("$m")
done
make -s "$BUILD/bench_decode" >/dev/null && section "decode: plain greedy decode vs memory read bandwidth" \
  "$BUILD/bench_decode" -t "$THREADS" -n 48 "${decode_models[@]}"

# specd beside llama.cpp (bench/vs_llamacpp.sh: decode, prefill 128/512, same files and threads), and decode
# beside a one-core hog (bench/contention.sh); the first prints why it skips when LLAMACPP_BIN is unset.
section "llama.cpp: side by side on the same files" env THREADS="$THREADS" BUILD="$BUILD" bash bench/vs_llamacpp.sh
section "contention: decode beside a one-core hog" env THREADS="$THREADS" BUILD="$BUILD" bash bench/contention.sh

# Daemon IPC path (bench/ipc_bench.c): ping round trip over the Unix socket, cost and latency of each
# streamed token, 32 concurrent streaming clients.
M=../shared/models
if [ -f "$M/aidreams260K.bin" ] && [ -f "$M/tok512.bin" ]; then
  make -s "$BUILD/specd" "$BUILD/ipc_bench" >/dev/null &&
    section "daemon: IPC path (ping, per streamed token, 32 clients)" "$BUILD/ipc_bench" -m "$M/aidreams260K.bin" -z "$M/tok512.bin"
else
  echo; echo "=== daemon IPC: skipped ($M/aidreams260K.bin not found)"
fi

# OpenAI HTTP gateway (bench/http_bench.c): per-token delivery latency through HTTP vs IPC and time to first
# token, on the demo-shape synthetic model (tokens slower than delivery, so the difference is per-token cost).
if [ ! -s "$BUILD/demo-q8_0.gguf" ]; then
  "$BUILD/specd" mkmodel --preset demo --type q8_0 -o "$BUILD/demo-q8_0.gguf" >/dev/null
fi
make -s "$BUILD/specd" "$BUILD/http_bench" >/dev/null &&
  section "http: OpenAI gateway vs IPC (per-token delivery, time to first token)" \
    "$BUILD/http_bench" -m "$BUILD/demo-q8_0.gguf" --runs 20 --tokens 64

# Prefix sharing (bench/prefix_bench.c): 32 sessions whose prompts share a 2,000-token system prompt, on the
# demo pair: KV memory held against one session's, and a new session's time to first token against a cold
# prompt of its suffix alone.
DEMO_DIR=$BUILD/bench
if [ ! -s "$DEMO_DIR/demo.gguf" ] || [ ! -s "$DEMO_DIR/demo-draft.gguf" ]; then
  mkdir -p "$DEMO_DIR" && "$BUILD/specd" mkmodel --preset demo -o "$DEMO_DIR/demo.gguf" --pair "$DEMO_DIR/demo-draft.gguf" >/dev/null
fi
make -s "$BUILD/prefix_bench" >/dev/null &&
  section "prefix: 32 sessions sharing a 2,000-token system prompt (KV held, time to first token)" \
    "$BUILD/prefix_bench" -m "$DEMO_DIR/demo.gguf" -md "$DEMO_DIR/demo-draft.gguf" -t "$THREADS" --prefix 2000 --sessions 32

# specd serve beside llama.cpp's llama-server, 8 concurrent streams (bench/server_vs_llamacpp.sh; skips
# without LLAMACPP_BIN).
section "server: specd vs llama.cpp llama-server, 8 concurrent" env THREADS="$THREADS" bench/server_vs_llamacpp.sh

exit $status
