# Sourced by the cross-build scripts: compile_sources NAME LIST compiles every line of LIST
# ("<source>\t<extra flags>") with "$CXX" "${CXXFLAGS[@]}" into "$OUT/obj", JOBS at a time,
# printing ok, warn (with the warnings) or FAIL (with the errors) per source; it exits 1
# when any source fails.
compile_one() {
  local src=$1 flags=$2 obj
  obj="$OUT/obj/$(echo "${src%.cc}" | tr / _).o"
  # shellcheck disable=SC2086
  if ! "$CXX" "${CXXFLAGS[@]}" $flags -c "$src" -o "$obj" 2> "$obj.log"; then
    echo "FAIL  $src"; sed 's/^/      /' "$obj.log" | head -40; return 1
  elif [ -s "$obj.log" ]; then
    echo "warn  $src"; sed 's/^/      /' "$obj.log" | head -20
  else
    echo "ok    $src"
  fi
}

compile_sources() {
  local name=$1 list=$2 fail=0 running=0 src flags count
  mkdir -p "$OUT/obj"
  while IFS=$'\t' read -r src flags; do
    compile_one "$src" "$flags" &
    running=$((running + 1))
    if [ "$running" -ge "${JOBS:-1}" ]; then wait -n || fail=1; running=$((running - 1)); fi
  done < "$list"
  while [ "$running" -gt 0 ]; do wait -n || fail=1; running=$((running - 1)); done
  count=$(wc -l < "$list")
  if [ "$fail" != 0 ]; then echo "$name: some of $count sources failed to compile" >&2; exit 1; fi
  echo "$name: $count sources compiled to $OUT/obj"
}
