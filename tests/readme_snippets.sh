#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Extracts the ```cpp snippets of README.md so the build compiles them as
# they stand. Usage: readme_snippets.sh README.md OUT_DIR
#
# The first snippet is a whole program: OUT_DIR/readme_program.cc, verbatim.
# The others are fragments: each becomes the body of a function in
# OUT_DIR/readme_fragments.cc whose parameters are the names the README's
# text gives them (runtime, bytes, image).
set -euo pipefail
readme=$1
out=$2
mkdir -p "$out"
awk -v out="$out" '
  /^```cpp$/ { n++; inside = 1; next }
  /^```$/ && inside { inside = 0; next }
  inside { print > (out "/snippet_" n ".txt") }
' "$readme"
[[ -f $out/snippet_1.txt ]] || { echo "readme_snippets.sh: no \`\`\`cpp snippet in $readme" >&2; exit 1; }
cp "$out/snippet_1.txt" "$out/readme_program.cc.new"
{
  echo '// Generated from README.md by tests/readme_snippets.sh: do not edit.'
  echo '#include <faultline/faultline.h>'
  echo '#include <cstdio>'
  echo '#include <cstdlib>'
  echo '#include <span>'
  for f in "$out"/snippet_*.txt; do
    n=${f##*/snippet_}
    n=${n%.txt}
    [[ $n == 1 ]] && continue
    echo "void readme_snippet_$n(faultline::Runtime& runtime, std::span<const std::byte> bytes,"
    echo "                       std::span<const std::byte> image) {"
    echo "  (void)runtime; (void)bytes; (void)image;"
    echo "#line 1 \"README.md snippet $n\""
    cat "$f"
    echo "}"
  done
} >"$out/readme_fragments.cc.new"
rm -f "$out"/snippet_*.txt
# Rewritten only when changed, so an unchanged README rebuilds nothing.
for f in readme_program.cc readme_fragments.cc; do
  if cmp -s "$out/$f.new" "$out/$f"; then rm "$out/$f.new"; else mv "$out/$f.new" "$out/$f"; fi
done
