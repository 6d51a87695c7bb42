#!/usr/bin/env bash
# Runs each test program given, from the project root, and sums their per-test lines.
# The closing line is "N passed, N failed, N skipped".
cd "$(dirname "$0")/.."
pass=0; fail=0; skip=0; crashed=()
for t in "$@"; do
  echo "== $(basename "$t")"
  t0=$(date +%s.%N)
  out=$(timeout "${TEST_TIMEOUT:-300}" "$t" 2>&1); rc=$?
  printf '%s\n' "$out"
  # each program's wall time, so the 10-minute CI budget can be watched program by program
  awk -v n="$(basename "$t")" -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "-- %s: %.1f s\n", n, b - a }'
  p=$(grep -c '^ok ' <<<"$out"); f=$(grep -c '^FAIL ' <<<"$out"); s=$(grep -c '^skipped: ' <<<"$out")
  pass=$((pass+p)); fail=$((fail+f)); skip=$((skip+s))
  if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "FAIL $(basename "$t"): exited with status $rc"; fail=$((fail+1)); crashed+=("$t")
  fi
done
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
