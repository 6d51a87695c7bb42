#!/usr/bin/env bash
# specd beside llama.cpp on the same GGUF files, the same threads, interleaved A/B runs, medians:
# decode tokens/s (and as a share of the read probe measured beside each side's run), prefill of 128 and
# 512 tokens (llama-bench -p vs bench_decode --prefill: time to the first token of a fresh request).
#
#   LLAMACPP_BIN=/path/to/llama.cpp/build/bin bash bench/vs_llamacpp.sh
#
# Settings (environment):
#   VS_TYPES   weight types to compare (default "f16 q8_0"): file $BUILD/bench-TYPE.gguf each, made once
#              (bench/models.sh: mkmodel's bench preset, or `specd quantize` of its F16 file for mixes
#              such as q4_k_m). Add a type here to compare it.
#   VS_FILES   GGUF files to compare instead of VS_TYPES (any llama-architecture file both can load)
#   THREADS (2), ROUNDS (3), PREFILL ("128 512"), GEN (32: decoded tokens per run)
#   LLAMACPP_COMMIT   printed with the results (llama-bench's own build info may say "unknown")
# Without LLAMACPP_BIN it prints why and exits 0 (nothing to compare with).
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
PREFILL=${PREFILL:-128 512}
GEN=${GEN:-32}
VS_TYPES=${VS_TYPES:-f16 q8_0}

if [ -z "${LLAMACPP_BIN:-}" ]; then
  echo "vs_llamacpp: skipped (set LLAMACPP_BIN to llama.cpp's build/bin directory to compare with it)"
  exit 0
fi
LB=$LLAMACPP_BIN/llama-bench
[ -x "$LB" ] || { echo "vs_llamacpp: $LB not found or not executable" >&2; exit 1; }
make -s "$BUILD/specd" "$BUILD/bench_decode" >/dev/null || exit 1

source bench/models.sh

files=()
if [ -n "${VS_FILES:-}" ]; then
  for f in $VS_FILES; do [ -s "$f" ] && files+=("$f") || echo "vs_llamacpp: $f not found" >&2; done
else
  for t in $VS_TYPES; do f=$(model_file "$t") && files+=("$f"); done
fi
[ ${#files[@]} -gt 0 ] || { echo "vs_llamacpp: no model files" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pp_list=$(echo $PREFILL | tr ' ' ',')

# llama-bench, one repetition: appends "decode V" and "prefillN V" lines (tokens/s) to $2.
run_llama() {
  local f=$1 out=$2
  "$LB" -m "$f" -t "$THREADS" -p "$pp_list" -n "$GEN" -r 1 -o csv 2>/dev/null |
    awk -F'","' 'NR == 1 { gsub(/"/, ""); n = split($0, h, ","); for (i = 1; i <= n; i++) col[h[i]] = i; next }
      { gsub(/^"|"$/, ""); np = $col["n_prompt"]; ng = $col["n_gen"]; ts = $col["avg_ts"]
        if (ng > 0 && np == 0) print "decode", ts; else if (np > 0 && ng == 0) print "prefill" np, ts }' >>"$out"
}

# specd's bench_decode, one repetition: the same lines, plus "fracprobe V" (its per-step share of the probe)
# and "probe V" (GB/s beside its decode); MB read per token into $3.
run_specd() {
  local f=$1 out=$2 mb=$3
  "$BUILD/bench_decode" -t "$THREADS" -n "$GEN" --prefill "$pp_list" --reps 1 "$f" >"$tmp/sd.log" 2>&1
  grep -o '[0-9.]* MB read per token' "$tmp/sd.log" | head -1 | cut -d' ' -f1 >"$mb"
  awk '/^RESULT tokens\/s/ { print $3, $5 } /^RESULT probe GB\/s/ { print "probe", $4 }
       /^RESULT decode .*% of read/ { sub(/%/, "", $4); print "fracprobe", $4 / 100 }' "$tmp/sd.log" >>"$out"
}

# The read probe beside llama.cpp's run (before it), in the same file format.
run_probe() { "$BUILD/bench_decode" -t "$THREADS" --probe | awk '/^RESULT probe/ { print "probe", $4 }' >>"$1"; }

get() { awk -v k="$2" '$1 == k { print $2 }' "$1" | median; }

echo "specd vs llama.cpp: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs, -t $THREADS, $ROUNDS interleaved rounds"
echo "llama.cpp: $LB, commit ${LLAMACPP_COMMIT:-unknown (set LLAMACPP_COMMIT to record it)}"
echo "specd: $(git log -1 --format='%h %cd' --date=short 2>/dev/null), SIMD ${SPECD_SIMD:-native}"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 0; r < ROUNDS; r++)); do
  for i in "${!files[@]}"; do
    f=${files[$i]}
    if ((r % 2 == 0)); then run_probe "$tmp/l$i"; run_llama "$f" "$tmp/l$i"; run_specd "$f" "$tmp/s$i" "$tmp/mb$i"
    else run_specd "$f" "$tmp/s$i" "$tmp/mb$i"; run_probe "$tmp/l$i"; run_llama "$f" "$tmp/l$i"; fi
    echo "  round $((r + 1)) $(basename "$f") done (load $(cut -d' ' -f1 /proc/loadavg))"
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

for i in "${!files[@]}"; do
  f=${files[$i]} mb=$(cat "$tmp/mb$i" 2>/dev/null || echo 0)
  echo
  echo "$(basename "$f") ($mb MB read per token), medians of $ROUNDS"
  printf '  %-18s %12s %12s %8s\n' what specd llama.cpp ratio
  for w in decode $(for p in $PREFILL; do echo prefill$p; done); do
    a=$(get "$tmp/s$i" "$w") b=$(get "$tmp/l$i" "$w")
    printf '  %-18s %12s %12s %8s\n' "$w tokens/s" "$a" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')"
    echo "RESULT vs_llamacpp $(basename "$f" .gguf) $w specd $a llama.cpp $b" >>"$tmp/results"
  done
  ps=$(get "$tmp/s$i" probe) pl=$(get "$tmp/l$i" probe) fs=$(get "$tmp/s$i" fracprobe)
  as=$(get "$tmp/s$i" decode) al=$(get "$tmp/l$i" decode)
  awk -v mb="$mb" -v as="$as" -v al="$al" -v ps="$ps" -v pl="$pl" -v fs="$fs" 'BEGIN {
    printf "  %-18s %11.1f%% %11.1f%%   (probe beside: %.1f / %.1f GB/s; specd per-step median %.1f%%)\n",
      "decode / probe", 100 * as * mb / 1e3 / ps, 100 * al * mb / 1e3 / pl, ps, pl, 100 * fs }'
done
echo
cat "$tmp/results"
