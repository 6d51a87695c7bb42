#!/usr/bin/env bash
# Decode beside a CPU hog: how much slower plain decoding gets when another process takes one core
# (issue 16 item 3: specd's slowdown <= 2.2x; llama.cpp's spinning OpenMP threads for comparison).
#
#   bash bench/contention.sh                                  specd alone
#   LLAMACPP_BIN=/path/to/llama.cpp/build/bin bash bench/contention.sh    and llama.cpp beside it
#
# Each round runs every program quiet, then beside the hog (interleaved), GEN decoded tokens each; the
# figures are medians over ROUNDS and the slowdown is quiet / with-hog tokens per second. The hog is a
# busy loop in its own session (setsid): with kernel.sched_autogroup_enabled=1 each session gets an equal
# CPU share, so it takes one core's worth from a two-thread decode however the scheduler groups things.
# Settings (environment): VS_TYPES ("f16"), THREADS (2), ROUNDS (2), GEN (16), BUILD (build), RUN_LIMIT (60:
# seconds one run may take; llama.cpp's spinning threads can slow to well under a token per second beside
# the hog, and a run past the limit counts as 0 tokens/s, so the whole script ends in a few minutes).
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-2}
GEN=${GEN:-16}
RUN_LIMIT=${RUN_LIMIT:-60}
VS_TYPES=${VS_TYPES:-f16}
make -s "$BUILD/specd" "$BUILD/bench_decode" >/dev/null || exit 1
source bench/models.sh

LB=
if [ -n "${LLAMACPP_BIN:-}" ]; then
  LB=$LLAMACPP_BIN/llama-bench
  [ -x "$LB" ] || { echo "contention: $LB not found or not executable" >&2; exit 1; }
else
  echo "contention: llama.cpp not compared (set LLAMACPP_BIN to its build/bin directory)"
fi

tmp=$(mktemp -d)
hog=
stop_hog() { [ -n "$hog" ] && kill "$hog" 2>/dev/null && wait "$hog" 2>/dev/null; hog=; }
trap 'stop_hog; rm -rf "$tmp"' EXIT
start_hog() { setsid bash -c 'while :; do :; done' & hog=$!; sleep 0.5; }

# One run's tokens/s, or 0 when it took longer than RUN_LIMIT seconds.
limited() {
  timeout "$RUN_LIMIT" "$@"
  local rc=$?
  [ $rc -eq 124 ] && echo "contention: $(basename "$1") passed ${RUN_LIMIT}s: counted as 0 tokens/s" >&2
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && echo "contention: $(basename "$1") failed (exit $rc)" >&2
  return 0
}
specd_tps() {
  limited "$BUILD/bench_decode" -t "$THREADS" -n "$GEN" --no-probe "$1" | awk '/^RESULT tokens\/s decode/ { v = $5 } END { print v + 0 }'
}
llama_tps() {
  limited "$LB" -m "$1" -t "$THREADS" -p 0 -n "$GEN" -r 1 -o csv 2>/dev/null |
    awk -F'","' 'NR == 1 { gsub(/"/, ""); n = split($0, h, ","); for (i = 1; i <= n; i++) col[h[i]] = i; next }
      { gsub(/^"|"$/, ""); v = $col["avg_ts"] } END { print v + 0 }'
}

echo "decode beside a one-core hog: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs, -t $THREADS, $GEN tokens, $ROUNDS rounds, ${RUN_LIMIT}s per run at most"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
progs=(specd)
[ -n "$LB" ] && progs+=(llama)
for t in $VS_TYPES; do
  f=$(model_file "$t") || continue
  for ((r = 0; r < ROUNDS; r++)); do
    for p in "${progs[@]}"; do
      ${p}_tps "$f" >>"$tmp/$t.$p.quiet"
      start_hog
      ${p}_tps "$f" >>"$tmp/$t.$p.hog"
      stop_hog
    done
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %-10s %14s %14s %9s\n' type program 'quiet tok/s' 'hog tok/s' slowdown
for t in $VS_TYPES; do
  for p in "${progs[@]}"; do
    [ -s "$tmp/$t.$p.quiet" ] || continue
    q=$(median <"$tmp/$t.$p.quiet") h=$(median <"$tmp/$t.$p.hog")
    s=$(awk -v q="$q" -v h="$h" 'BEGIN { if (h > 0) printf "%.2f", q / h; else print "-" }')
    name=$([ "$p" = specd ] && echo specd || echo llama.cpp)
    printf '%-6s %-10s %14s %14s %8sx\n' "$t" "$name" "$q" "$h" "$s"
    echo "RESULT contention $t $name slowdown $s" >>"$tmp/results"
  done
done
cat "$tmp/results" 2>/dev/null
