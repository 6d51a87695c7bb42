#!/usr/bin/env bash
# specd serve beside llama.cpp's llama-server (issue 10: >= 1.3x its aggregate tokens/s at 8 concurrent):
# the same GGUF file, the same threads, the same prompts, STREAMS concurrent clients on each server's
# OpenAI /v1/completions endpoint (non-streamed, greedy, max_tokens TOKENS), driven by one client
# (bench/completions_load.py). Both servers stay up; the runs alternate (llama.cpp, specd, llama.cpp,
# specd, ...) so machine load drifts over both alike; prints each run and the ratio of the medians.
#
#   LLAMACPP_BIN=/path/to/llama.cpp/build/bin bench/server_vs_llamacpp.sh [MODEL.gguf]
#
# Without MODEL: mkmodel's demo preset (88M parameters, F16), written once into $BUILD/bench/demo.gguf.
# Env: THREADS (2), STREAMS (8), TOKENS (64), ROUNDS (3), REQUESTS (requests per stream per run, 2),
# MAX_SESSIONS (STREAMS), LLAMACPP_COMMIT (printed; read from git when the build's source is a checkout).
# On a machine whose cores other processes keep busy, llama.cpp's threads lose whole time slices waiting
# at its per-op barriers (more than one thread), so compare THREADS=1 too and quote the load printed. Skips with a message when LLAMACPP_BIN is unset.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
if [ -z "${LLAMACPP_BIN:-}" ]; then
  echo "skipped: LLAMACPP_BIN is not set (the bin directory of a llama.cpp build, with llama-server)"
  exit 0
fi
SERVER=$LLAMACPP_BIN/llama-server
[ -x "$SERVER" ] || { echo "server_vs_llamacpp: $SERVER not found or not executable"; exit 1; }
THREADS=${THREADS:-2} STREAMS=${STREAMS:-8} TOKENS=${TOKENS:-64} ROUNDS=${ROUNDS:-3} REQUESTS=${REQUESTS:-2}
MODEL=${1:-}
if [ -z "$MODEL" ]; then
  MODEL=$BUILD/bench/demo.gguf
  if [ ! -s "$MODEL" ]; then
    mkdir -p "$BUILD/bench" && "$BUILD/specd" mkmodel --preset demo -o "$MODEL" >/dev/null || exit 1
  fi
fi
[ -s "$MODEL" ] || { echo "server_vs_llamacpp: model $MODEL not found"; exit 1; }

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_health() { # url, name, log
  for _ in $(seq 1 600); do
    python3 - "$1" <<'EOF' 2>/dev/null && return 0
import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(sys.argv[1] + "/health", timeout=1).status == 200 else 1)
EOF
    sleep 0.2
  done
  echo "server_vs_llamacpp: $2 did not come up; its log:"; tail -20 "$3"; return 1
}

LP=$(free_port) SP=$(free_port)
# llama.cpp: STREAMS slots of 512 positions each, continuous batching (its default), CPU only.
"$SERVER" -m "$MODEL" -t "$THREADS" -tb "$THREADS" -np "$STREAMS" -c $((STREAMS * 512)) -ngl 0 \
  --host 127.0.0.1 --port "$LP" --no-webui >"$tmp/llama.log" 2>&1 &
pids+=($!)
"$BUILD/specd" serve -m "$MODEL" -t "$THREADS" --max-sessions "${MAX_SESSIONS:-$STREAMS}" --device cpu \
  --socket "$tmp/specd.sock" --http "127.0.0.1:$SP" --log-level error >"$tmp/specd.log" 2>&1 &
pids+=($!)
wait_health "http://127.0.0.1:$LP" llama-server "$tmp/llama.log" || exit 1
wait_health "http://127.0.0.1:$SP" "specd serve" "$tmp/specd.log" || exit 1

# A source snapshot without .git builds as "version 0 (unknown)": LLAMACPP_COMMIT names it then.
commit=${LLAMACPP_COMMIT:-$(git -C "$LLAMACPP_BIN/../.." rev-parse --short HEAD 2>/dev/null || echo unknown)}
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "model $MODEL; threads $THREADS; $STREAMS streams x $REQUESTS requests, $TOKENS tokens each; llama.cpp $commit"
python3 bench/completions_load.py --rounds "$ROUNDS" --streams "$STREAMS" --requests "$REQUESTS" --tokens "$TOKENS" \
  "llama.cpp=http://127.0.0.1:$LP" '{"ignore_eos": true}' "specd=http://127.0.0.1:$SP" '{}'
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
