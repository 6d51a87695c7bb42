#!/usr/bin/env bash
# Everything a lent GPU machine should run, in one call of at most ~8 minutes (issue 13 §3):
#   tools/gpu_check.sh [--dry-run] [--only STEP,...] [OUTDIR]      (OUTDIR: $OUT, else build/gpu-check)
# Steps (each under its own time limit and a budget for the whole run, GPU_CHECK_BUDGET seconds, default 420;
# every step's output goes to OUTDIR/log.txt, one line per step to OUTDIR/summary.txt):
#   info      the GPU, driver and tools
#   test      tests/test_cuda (kernels against the CPU backend, forward logits, graphs, OOM)
#   agree     greedy CPU vs CUDA on a synthetic model with a 300-token prompt (cuBLAS prefill path)
#   sanitize  compute-sanitizer memcheck, racecheck and synccheck on one speculative sampled generation
#   models    an 8-layer slice of the 8B preset, F16 and Q8_0, with its draft (mkmodel on the machine), and
#             the F16 slice quantized to Q4_K_M (specd quantize: Q4_K with Q6_K for some v/down and the output)
#   matvec    bench_cuda: matrix-vector kernels against the device's copy bandwidth (8B shapes, n = 1..64;
#             F16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K)
#   sample    bench_cuda --sample: device sampling (two launches a pass, many blocks a row) against argmax,
#             1 and 4 rows of 32000, 128256 and 151936 words
#   steps     bench_cuda --steps: one decode step's attention at advancing positions, graph replay vs op by
#             op (what uploading only the changed descriptors leaves per step)
#   decode    plain decode bandwidth, F16 and Q8_0 with CUDA graphs on and off, Q4_K_M with graphs on
#   prefill   a ~4000-token prompt on the F16 slice (cuBLAS GEMMs, tiled attention; F16 and F32 KV cache) and a
#             1500-token one on the Q4_K_M slice: prefill tokens/s
#   verify    the verify cost curve T(k+1)/T(1) for k = 1, 2, 4, 7, 8 (specd bench --sweep)
#   batch     continuous batching: aggregate tokens/s and latency at 1, 4, 8, 16 concurrent (specd bench --concurrency),
#             and at 8 without step graphs
#   longctx   decode with a 4096- and a 32768-position cache (the split-attention plan)
#   profile   ncu: time and DRAM bytes of every kernel of one decode step (F16, Q8_0, Q4_K_M slices, graphs off)
#   profprefill  ncu: the kernels of two prefill passes in the middle of the F16 slice's ~3900-token prompt
#   sass      SASS facts of the CUDA kernels in specd: shared atomics (ATOMS), local memory (LDL/STL)
# Binaries come from .gpu/ (tools/gpu_prep.sh, run where the project builds) or else build/gpu/.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0; ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --only) ONLY=",$2,"; shift ;;
    -h|--help) sed -n 2,26p "$0"; exit 0 ;;
    *) break ;;
  esac
  shift
done
O=${1:-${OUT:-build/gpu-check}}
mkdir -p "$O"
if [ -d .gpu/bin ]; then BIN=.gpu/bin; export SPECD_SHARED=$PWD/.gpu/shared
  export LD_LIBRARY_PATH=$PWD/.gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
else BIN=build/gpu; fi
[ -x $BIN/tests/test_cuda ] && TEST_CUDA=$BIN/tests/test_cuda || TEST_CUDA=$BIN/test_cuda
SPECD=$BIN/specd
SH=${SPECD_SHARED:-../shared}
W=${GPU_CHECK_WORK:-/tmp/specd-gpu}   # multi-GB synthetic models
mkdir -p "$W"
# cuBLAS: CUDA's own folder first, else wherever the machine keeps libcublas.so.13 (e.g. a pip wheel).
if [ ! -e /usr/local/cuda/lib64/libcublas.so.13 ] && [ "$DRY" = 0 ]; then
  d=$(dirname "$(find / -name 'libcublas.so.13' -not -path '/proc/*' 2>/dev/null | head -1)" 2>/dev/null)
  [ -n "$d" ] && export LD_LIBRARY_PATH=$d:$LD_LIBRARY_PATH
fi
SUM=$O/summary.txt; LOG=$O/log.txt; : >"$SUM"; : >"$LOG"
BUDGET=${GPU_CHECK_BUDGET:-420}
N=0
# step NAME LIMIT_S COMMAND...: runs one step with a time limit, logs it, records its status.
step() {
  local name=$1 limit=$2; shift 2
  N=$((N + 1))
  if [ -n "$ONLY" ] && [[ "$ONLY" != *",$name,"* ]]; then return 0; fi
  local log; log=$(printf '%s/%02d-%s.log' "$W" $N "$name")
  if [ "$DRY" = 1 ]; then printf 'would run [%s, limit %ss]: %s\n' "$name" "$limit" "$*"; return 0; fi
  local left=$((BUDGET - SECONDS))
  if [ $left -lt 10 ]; then printf '%-9s skipped: the run'"'"'s budget of %ss is spent\n' "$name" "$BUDGET" | tee -a "$SUM"; return 0; fi
  [ "$limit" -gt $left ] && limit=$left
  local t0=$SECONDS
  timeout -k 5 "$limit" bash -c "$*" >"$log" 2>&1; local rc=$?
  { printf '\n==== %s (step %d, rc %d, %ss): %s\n' "$name" $N $rc $((SECONDS - t0)) "$*"; cat "$log"; } >>"$LOG"
  local st=ok; [ $rc -ne 0 ] && st="rc=$rc"; [ $rc -eq 124 ] && st="TIMEOUT"
  printf '%-9s %-8s %4ss  %s\n' "$name" "$st" $((SECONDS - t0)) "$(grep -E '^(ok|FAIL|skipped)|passed|GB/s|ERROR SUMMARY|error|^sample |per step' "$log" | tail -1 | cut -c1-120)" | tee -a "$SUM"
}

G_F16=$W/t8b-f16.gguf; D_F16=$W/d8b-f16.gguf; G_Q8=$W/t8b-q8_0.gguf; D_Q8=$W/d8b-q8_0.gguf; G_Q4=$W/t8b-q4_k_m.gguf
TINY=$SH/models/aidreams260K.gguf; TINYD=$SH/models/aidreams-draft.gguf
LONGP=$(for i in $(seq 1 60); do printf 'the quick brown fox jumps '; done)

step info 30 "nvidia-smi; nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv; \
  nvcc --version 2>/dev/null | tail -2; which compute-sanitizer cuobjdump; ldd $SPECD | grep -E 'not found|cublas|zmq'"

step test 150 "$TEST_CUDA"
step test 120 "SPECD_CUDA_TC=1 $TEST_CUDA" # F16/BF16 products on tensor cores (matmul_tc.cu, opt-in)

step agree 90 "set -e; $SPECD mkmodel --preset demo --type f16 -o $W/demo.gguf >/dev/null; \
  for d in cpu cuda; do $SPECD generate -m $W/demo.gguf -p '$LONGP' -n 48 --device \$d --json > $W/agree-\$d.json; done; \
  python3 -c 'import json,sys; a=json.load(open(\"$W/agree-cpu.json\")); b=json.load(open(\"$W/agree-cuda.json\")); \
n=next((i for i,(x,y) in enumerate(zip(a[\"tokens\"],b[\"tokens\"])) if x!=y), None); \
print(\"prompt tokens\", len(a[\"prompt_tokens\"]), \"greedy cpu vs cuda:\", \"identical\" if n is None else \"first difference at %d\" % n); \
sys.exit(0 if n is None else 1)'"

for tool in memcheck racecheck synccheck; do
  step sanitize 75 "compute-sanitizer --tool $tool --error-exitcode 9 $SPECD generate -m $TINY -md $TINYD \
    -p 'Once upon a time' -n 24 --temp 0.8 --seed 3 --device cuda"
done

step models 150 "set -e; nproc; \
  $SPECD mkmodel --preset 8b --layers 8 --ctx 32768 --type f16 -o $G_F16 --pair $D_F16; \
  $SPECD mkmodel --preset 8b --layers 8 --ctx 32768 --type q8_0 -o $G_Q8 --pair $D_Q8; \
  $SPECD quantize $G_F16 $G_Q4 q4_k_m -q; ls -la $W"

step matvec 90 "$BIN/bench_cuda; echo '== SPECD_CUDA_TC=1 (tensor cores)'; \
  SPECD_CUDA_TC=1 $BIN/bench_cuda | grep -E '^f16'"

step sample 60 "$BIN/bench_cuda --sample"
step steps 60 "$BIN/bench_cuda --steps"

step decode 60 "SPECD_CUDA_TC=1 $SPECD generate -m $G_F16 -p 'Once upon a time' -n 256 --plain --device cuda \
  --ctx 4096 2>&1 >/dev/null | sed 's|^|$(basename "$G_F16") tc=1: |'"
for m in "$G_F16" "$G_Q8"; do
  for g in 1 0; do
    step decode 60 "SPECD_CUDA_GRAPHS=$g $SPECD generate -m $m -p 'Once upon a time' -n 256 --plain --device cuda --ctx 4096 \
      2>&1 >/dev/null | sed 's|^|$(basename "$m") graphs=$g: |'"
  done
done
step decode 60 "$SPECD generate -m $G_Q4 -p 'Once upon a time' -n 256 --plain --device cuda --ctx 4096 \
  2>&1 >/dev/null | sed 's|^|$(basename "$G_Q4") graphs=1: |'"
step prefill 60 "$SPECD generate -m $G_Q4 -p '$(for i in $(seq 1 100); do printf 'alpha beta gamma delta epsilon '; done)' \
  -n 4 --plain --device cuda --ctx 8192 2>&1 >/dev/null | grep -E 'prompt tokens|backend' | sed 's|^|prefill Q4_K_M slice: |'"

LONG4K=$(for i in $(seq 1 260); do printf 'alpha beta gamma delta epsilon '; done)
step prefill 60 "$SPECD generate -m $G_F16 -p '$LONG4K' -n 4 --plain --device cuda --ctx 8192 2>&1 >/dev/null \
  | grep -E 'prompt tokens|backend' | sed 's|^|prefill F16 slice: |'"

# the same with every kernel loaded at start (CUDA loads modules lazily, at a kernel's first launch: cuBLAS's
# GEMM kernels load inside the timed prefill)
step prefill 60 "CUDA_MODULE_LOADING=EAGER $SPECD generate -m $G_F16 -p '$LONG4K' -n 4 --plain --device cuda --ctx 8192 \
  2>&1 >/dev/null | grep -E 'prompt tokens' | sed 's|^|prefill F16 slice, eager loading: |'"
# the same prompt with an F32 KV cache (session 4's prefill figure was taken before the F16 paged cache)
step prefill 60 "$SPECD generate -m $G_F16 -p '$LONG4K' -n 4 --plain --device cuda --ctx 8192 --kv-type f32 2>&1 \
  >/dev/null | grep -E 'prompt tokens' | sed 's|^|prefill F16 slice, f32 KV: |'"

step sampled 60 "$SPECD generate -m $G_F16 -p 'Once upon a time' -n 256 --plain --device cuda --ctx 4096 \
  --temp 0.8 --top-p 0.95 2>&1 >/dev/null | sed 's|^|sampled t=0.8 top-p 0.95: |'"
step sampled 60 "$SPECD generate -m $G_F16 -p 'Once upon a time' -n 256 --plain --device cuda --ctx 4096 \
  --temp 0.8 --top-k 40 --top-p 0.95 --min-p 0.05 2>&1 >/dev/null | sed 's|^|sampled t=0.8 top-k 40 top-p 0.95 min-p 0.05: |'"

step verify 150 "$SPECD bench -m $G_F16 -md $D_F16 --device cuda --ctx 4096 --sweep 1,2,4,7,8,12,15 -n 64"
step batch 120 "$SPECD bench -m $G_F16 -md $D_F16 --device cuda --ctx 4096 --concurrency 1,4,8,16 -n 64"
# passes of several sequences replay step graphs per shape since session 5: the same at 8 without graphs
step batch 60 "SPECD_CUDA_GRAPHS=0 $SPECD bench -m $G_F16 -md $D_F16 --device cuda --ctx 4096 --concurrency 8 -n 64 \
  | sed 's|^|graphs=0: |'"

for c in 4096 32768; do
  step longctx 60 "$SPECD generate -m $G_F16 -p 'Once upon a time' -n 128 --plain --device cuda --ctx $c \
    2>&1 >/dev/null | sed 's|^|ctx $c: |'"
done

# One decode step is ~16 kernels a layer: skip the prefill and two steps, profile the next step's launches.
PROF_PY='import csv,sys,collections
rows=[r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith("\""))]
h=rows[0]; i=h.index("Kernel Name"); m=h.index("Metric Name"); v=h.index("Metric Value"); u=h.index("Metric Unit")
k=collections.OrderedDict(); cur={}
for r in rows[1:]:
  key=(r[h.index("ID")], r[i][:60]); val=float(r[v].replace(",",""))
  if r[u] in ("usecond",): val*=1e3
  if r[u] in ("msecond",): val*=1e6
  if r[u] in ("Kbyte",): val*=1e3
  if r[u] in ("Mbyte",): val*=1e6
  if r[u] in ("Gbyte",): val*=1e9
  k.setdefault(key,{})[r[m]]=val
agg=collections.OrderedDict()
for (id_,name),d in k.items():
  a=agg.setdefault(name,[0,0.0,0.0]); a[0]+=1; a[1]+=d.get("gpu__time_duration.sum",0); a[2]+=d.get("dram__bytes_read.sum",0)
tt=sum(a[1] for a in agg.values()); tb=sum(a[2] for a in agg.values())
print("%-60s %5s %9s %9s %8s" % ("kernel","count","us","MB read","GB/s"))
for n,a in sorted(agg.items(), key=lambda x:-x[1][1]):
  print("%-60s %5d %9.1f %9.2f %8.0f" % (n,a[0],a[1]/1e3,a[2]/1e6,a[2]/a[1] if a[1] else 0))
print("total %d kernels %.1f us, %.1f MB read, %.0f GB/s" % (sum(a[0] for a in agg.values()), tt/1e3, tb/1e6, tb/tt if tt else 0))'
for m in "$G_F16" "$G_Q8" "$G_Q4"; do
  step profile 90 "SPECD_CUDA_GRAPHS=0 ncu --clock-control none --launch-skip 420 --launch-count 150 \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum --csv $SPECD generate -m $m -p 'Once upon a time' -n 6 \
    --plain --device cuda --ctx 4096 > $W/prof.csv 2>/dev/null; python3 -c '$PROF_PY' $W/prof.csv | sed 's|^|$(basename "$m"): |'"
done

# Prefill, kernel by kernel: two passes of 128 rows in the middle of the 3902-token prompt (a pass is ~230
# launches: per layer norms, F16 conversions, cuBLAS, rope, K/V store, tiled attention, SwiGLU).
step profprefill 120 "SPECD_CUDA_GRAPHS=0 ncu --clock-control none --launch-skip 3450 --launch-count 460 \
  --metrics gpu__time_duration.sum,dram__bytes_read.sum --csv $SPECD generate -m $G_F16 -p '$LONG4K' -n 1 \
  --plain --device cuda --ctx 8192 > $W/profp.csv 2>/dev/null; python3 -c '$PROF_PY' $W/profp.csv | sed 's|^|prefill: |'"

step sass 60 "for f in $SPECD; do echo \"== \$f\"; cuobjdump --dump-sass \$f > $W/sass.txt; \
  printf 'ATOMS %s  LDL %s  STL %s  functions %s\n' \$(grep -c ATOMS $W/sass.txt) \$(grep -c 'LDL' $W/sass.txt) \
    \$(grep -c 'STL' $W/sass.txt) \$(grep -c 'Function :' $W/sass.txt); \
  grep -E 'Function :|ATOMS|LDL|STL' $W/sass.txt | awk '/Function/ {f=\$3} !/Function/ {c[f]++} END {for (k in c) print \"   \", c[k], k}'; done"

[ "$DRY" = 1 ] && exit 0
echo "== failures and sanitizer reports"
grep -hE '^FAIL|check failed|required |ERROR SUMMARY: [1-9]|Invalid|Race|error' "$W"/*-test.log "$W"/*-sanitize.log 2>/dev/null | head -40 | cut -c1-200
echo "== summary ($O/summary.txt, full output in $O/log.txt)"
cat "$SUM"
