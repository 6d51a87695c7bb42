# Shell helpers the benchmark scripts share (sourced, with BUILD set): the bench-shape model files and
# medians.

# The model file of a weight type, $BUILD/bench-TYPE.gguf, made once: by `specd mkmodel --preset bench`
# (dim 1024, 24 layers, 336M parameters), or for types mkmodel does not write (mixes such as q4_k_m) by
# `specd quantize` from the F16 file. Prints the path; 1 when it cannot be made.
model_file() {
  local t=$1 f="$BUILD/bench-$1.gguf"
  if [ ! -s "$f" ]; then
    "$BUILD/specd" mkmodel --preset bench --type "$t" -o "$f" >/dev/null 2>&1 ||
      { model_file f16 >/dev/null && "$BUILD/specd" quantize "$BUILD/bench-f16.gguf" "$f" "$t" >/dev/null; } ||
      { rm -f "$f"; echo "cannot make a $t model" >&2; return 1; }
  fi
  echo "$f"
}

# The median of the numbers on stdin, one per line ("nan" when there are none).
median() {
  sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
