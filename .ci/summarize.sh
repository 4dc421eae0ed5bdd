#!/usr/bin/env bash
# Reads the TRX files that `dotnet test --logger trx` wrote and prints one line per test assembly
# plus the closing line CI reads: "tests: N passed, N failed, N skipped".
set -euo pipefail
dir=${1:-TestResults}
passed=0; failed=0; skipped=0
shopt -s nullglob
for f in "$dir"/*.trx; do
  c=$(grep -o '<Counters [^>]*>' "$f" | head -1)
  num() { echo "$c" | sed -n "s/.* $1=\"\([0-9]*\)\".*/\1/p"; }
  t=$(num total); p=$(num passed); fl=$(num failed); e=$(num error); nx=$(num notExecuted)
  name=$(grep -o 'storage="[^"]*"' "$f" | head -1 | sed 's/.*\/\([^/]*\)\.dll"/\1/')
  s=$(( ${t:-0} - ${p:-0} - ${fl:-0} - ${e:-0} ))
  echo "  ${name:-$f}: ${p:-0} passed, $(( ${fl:-0} + ${e:-0} )) failed, $s skipped"
  passed=$(( passed + ${p:-0} )); failed=$(( failed + ${fl:-0} + ${e:-0} )); skipped=$(( skipped + s ))
done
echo "tests: $passed passed, $failed failed, $skipped skipped"
