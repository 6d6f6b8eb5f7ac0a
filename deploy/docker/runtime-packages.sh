#!/usr/bin/env bash
# runtime-packages.sh BINARY...: the Debian/Ubuntu packages that provide the shared libraries these
# binaries load (ldd, then dpkg -S), one per line. The Dockerfile runs it in the build stage so the
# runtime stage installs exactly those packages, under whatever names this release gives them
# (e.g. Ubuntu 24.04's "t64" library packages), with no list to keep in step by hand.
# Libraries no package owns (the CUDA driver stub, the build's own) are skipped, named on stderr.
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: runtime-packages.sh BINARY..." >&2; exit 2; }
libs=()
for bin in "$@"; do
  [ -x "$bin" ] || { echo "runtime-packages.sh: $bin is not an executable" >&2; exit 2; }
  out=$(ldd "$bin") || { echo "runtime-packages.sh: ldd $bin failed" >&2; exit 1; }
  if grep -q "not found" <<<"$out"; then
    echo "runtime-packages.sh: $bin: $(grep 'not found' <<<"$out" | head -3 | tr -s ' \t' ' ')" >&2
    exit 1
  fi
  # "libfoo.so.1 => /lib/x86_64-linux-gnu/libfoo.so.1 (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)"
  while read -r lib; do libs+=("$lib"); done < <(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$out")
done
# dpkg knows a file by the path its package ships; with merged /usr that may be the /lib or the
# /usr/lib spelling, or only the symlink's name, so each is asked for (one dpkg-query for all).
declare -A spellings=()
candidates=()
for lib in $(printf '%s\n' "${libs[@]}" | sort -u); do
  for p in "$lib" "$(readlink -f "$lib")" "${lib/#\/usr\/lib\//\/lib\/}" "${lib/#\/lib\//\/usr\/lib\/}"; do
    spellings["$p"]+="$lib "
    candidates+=("$p")
  done
done
declare -A owner=()
while IFS= read -r line; do
  # "libfoo1:amd64: /usr/lib/x86_64-linux-gnu/libfoo.so.1"
  pkg="${line%%: /*}"
  path="/${line#*: /}"
  for lib in ${spellings["$path"]:-}; do owner["$lib"]="${pkg%%:*}"; done
done < <(dpkg-query -S "${candidates[@]}" 2>/dev/null | sort -u)
for lib in $(printf '%s\n' "${libs[@]}" | sort -u); do
  if [ -n "${owner[$lib]:-}" ]; then
    echo "${owner[$lib]}"
  else
    echo "runtime-packages.sh: no package owns $lib (skipped)" >&2
  fi
done | sort -u
