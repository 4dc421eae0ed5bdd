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
  # Name each failed test with the first lines of its message, so a CI log that keeps only its tail still says what broke.
  if [ "$fl" -gt 0 ]; then
    python3 - "$f" <<'PY' 2>/dev/null || grep -o 'testName="[^"]*" [^>]*outcome="Failed"' "$f" | sed 's/^/    FAILED /'
import sys, xml.etree.ElementTree as ET
ns = {"t": "http://microsoft.com/schemas/VisualStudio/TeamTest/2010"}
for r in ET.parse(sys.argv[1]).getroot().iter("{%s}UnitTestResult" % ns["t"]):
    if r.get("outcome") != "Failed": continue
    m = r.find("t:Output/t:ErrorInfo/t:Message", ns)
    msg = " | ".join((m.text or "").strip().splitlines()[:3])[:400] if m is not None else ""
    print(f"    FAILED {r.get('testName')} ({r.get('duration')}): {msg}")
PY
  fi
done
echo "tests: $passed passed, $failed failed, $skipped skipped"
