#!/usr/bin/env bash
# Reads the TRX files that `dotnet test --logger trx` wrote and prints one line per test assembly
# plus the closing line CI reads: "tests: N passed, N failed, N skipped".
set -uo pipefail
dir=${1:-TestResults}
passed=0; failed=0; skipped=0
shopt -s nullglob
for f in "$dir"/*.trx; do
  c=$(grep -o '<Counters [^>]*>' "$f" | head -1)
  num() { v=$(echo "$c" | sed -n "s/.* $1=\"\([0-9]*\)\".*/\1/p"); echo "${v:-0}"; }
  t=$(num total); p=$(num passed); fl=$(( $(num failed) + $(num error) + $(num timeout) + $(num aborted) ))
  [ "$t" -eq 0 ] && continue
  name=$(grep -o 'codeBase="[^"]*"' "$f" | head -1 | sed 's/.*\/\([^/]*\)\.dll"/\1/')
  s=$(( t - p - fl )); [ $s -lt 0 ] && s=0
  echo "  ${name:-$(basename "$f")}: $p passed, $fl failed, $s skipped"
  passed=$(( passed + p )); failed=$(( failed + fl )); skipped=$(( skipped + s ))
done
echo "tests: $passed passed, $failed failed, $skipped skipped"
