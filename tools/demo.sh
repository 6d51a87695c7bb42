#!/usr/bin/env bash
# `make demo` (after `make` built everything): writes the default synthetic draft/target pair under
# build/demo/, starts `specd serve` in the background on a temporary socket, generates from one prompt in
# plain and in speculative mode through `specd-cli`, prints the comparison, and stops the daemon.
# The synthetic weights are not trained: the text is meaningless, the speed and acceptance are real.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BUILD:-build}
SPECD=$B/specd
CLI=$B/specd-cli
PROMPT=${DEMO_PROMPT:-"Once upon a time"}
N=${DEMO_TOKENS:-64}

for exe in "$SPECD" "$CLI"; do
  [ -x "$exe" ] || { echo "demo: $exe is missing: run make first" >&2; exit 1; }
done

mkdir -p "$B/demo"
TARGET=$B/demo/target.gguf
DRAFT=$B/demo/draft.gguf
if [ ! -s "$TARGET" ] || [ ! -s "$DRAFT" ]; then
  echo "== writing the default synthetic pair (specd mkmodel) into $B/demo/"
  "$SPECD" mkmodel -o "$TARGET" --pair "$DRAFT"
fi

TMP=$(mktemp -d /tmp/specd-demo-XXXXXX)
SOCK=$TMP/specd.sock
PID=
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

echo "== starting: $SPECD serve -m $TARGET -md $DRAFT --socket $SOCK"
"$SPECD" serve -m "$TARGET" -md "$DRAFT" --socket "$SOCK" --log-level warn 2>"$TMP/daemon.log" &
PID=$!
for _ in $(seq 1 300); do
  "$CLI" --socket "$SOCK" --connect-timeout 200 ping >/dev/null 2>&1 && break
  if ! kill -0 "$PID" 2>/dev/null; then
    echo "demo: the daemon exited:" >&2; cat "$TMP/daemon.log" >&2; exit 1
  fi
  sleep 0.1
done
"$CLI" --socket "$SOCK" ping

for mode in plain spec; do
  echo
  echo "== specd-cli generate --$mode -n $N \"$PROMPT\""
  "$CLI" --socket "$SOCK" generate "--$mode" -v -n "$N" "$PROMPT"
done

echo
echo "== comparison (specd-cli bench: the prompt twice in each mode, interleaved)"
printf '%s\n' "$PROMPT" >"$TMP/prompts.txt"
"$CLI" --socket "$SOCK" bench --prompts "$TMP/prompts.txt" -n "$N" --runs 2

echo
echo "== stopping the daemon"
kill -TERM "$PID"
wait "$PID" && echo "daemon exited cleanly"
PID=
