#!/usr/bin/env bash
# Makes TorchSharp's libLibTorchSharp.so load where the system libstdc++ lacks GLIBCXX_3.4.32 (Debian 12).
# The library needs that version for exactly one symbol, std::ios_base_library_init() (GCC 13's <iostream>
# hook). Where the version is missing this script, once per library file (marker: the DT_NEEDED entry):
#   1. builds liblowbit_iosinit.so next to the library (defines the symbol; see ios_base_library_init.cpp),
#   2. marks the GLIBCXX_3.4.32 entry of .gnu.version_r weak (vna_flags |= VER_FLG_WEAK), so the loader
#      no longer refuses the file,
#   3. clears the symbol's version and adds a DT_NEEDED on the shim (RUNPATH has $ORIGIN), so it resolves.
# It edits a copy and renames it over the original (atomic for concurrent builds). Needs readelf, patchelf, g++.
# Usage: fix-libstdcxx.sh /path/to/libLibTorchSharp.so       Prints what it did; exit 0 when nothing to do.
set -euo pipefail
so="$1"
here="$(cd "$(dirname "$0")" && pwd)"
shim_name=liblowbit_iosinit.so
shim="$(dirname "$so")/$shim_name"
symbol=_ZSt21ios_base_library_initv
version=GLIBCXX_3.4.32

[ "$(uname -s)" = Linux ] || exit 0
[ -f "$so" ] || { echo "fix-libstdcxx: $so not found" >&2; exit 1; }

libstdcxx="$(/sbin/ldconfig -p 2>/dev/null | awk '/libstdc\+\+\.so\.6 .*x86-64/ {print $NF; exit}')"
[ -n "$libstdcxx" ] || libstdcxx=/usr/lib/x86_64-linux-gnu/libstdc++.so.6
if grep -qa "$version" "$libstdcxx"; then
  echo "fix-libstdcxx: $libstdcxx has $version; nothing to do"
  exit 0
fi
if readelf -d "$so" | grep -q "\[$shim_name\]" && [ -f "$shim" ]; then
  echo "fix-libstdcxx: $so already patched"
  exit 0
fi
for tool in readelf patchelf g++ dd; do
  command -v "$tool" >/dev/null || { echo "fix-libstdcxx: $tool is required (bash .ci/tools.sh installs it)" >&2; exit 1; }
done

tmp_shim="$shim.$$.tmp"
g++ -shared -fPIC -O2 -o "$tmp_shim" "$here/ios_base_library_init.cpp"
mv -f "$tmp_shim" "$shim"

tmp="$so.$$.tmp"
cp -p "$so" "$tmp"
chmod u+w "$tmp"
# .gnu.version_r: section file offset, then the vernaux entry naming $version (offsets relative to the section).
section_offset="$(readelf -V "$tmp" | awk '/Version needs section/ {getline; for (i = 1; i <= NF; i++) if ($i == "Offset:") print $(i + 1)}')"
entry_offset="$(readelf -V "$tmp" | awk -v v="$version" '$2 == "Name:" && $3 == v {sub(":", "", $1); print $1}')"
if [ -n "$section_offset" ] && [ -n "$entry_offset" ]; then
  # Elf64_Vernaux: vna_hash u32, vna_flags u16 (at +4), vna_other u16, vna_name u32, vna_next u32.
  flags_at=$(( section_offset + entry_offset + 4 ))
  old=$(od -An -tu2 -j "$flags_at" -N2 "$tmp" | tr -d ' ')
  new=$(( old | 2 ))
  printf "$(printf '\\%03o\\%03o' $(( new & 255 )) $(( new >> 8 )))" | dd of="$tmp" bs=1 seek="$flags_at" conv=notrunc status=none
fi
patchelf --clear-symbol-version "$symbol" "$tmp"
patchelf --add-needed "$shim_name" "$tmp"
mv -f "$tmp" "$so"
echo "fix-libstdcxx: patched $so ($version weak, $symbol unversioned, needs $shim_name)"
