#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Doxygen INPUT_FILTER for the public headers: they are commented in plain
# `//` (LevelDB style), which Doxygen ignores. This turns, on the fly and
# without moving a line:
#   the SPDX line            -> "/// @file" (the header's opening comment documents the file)
#   a comment line           -> "/// ..."   (documents the declaration below it)
#   "decl;  // text"          -> "decl;  ///< text" (documents the member on its left)
exec awk '
  NR == 1 && /SPDX-License-Identifier/ { print "/// @file"; next }
  /^[[:space:]]*\/\/[^\/]/ || /^[[:space:]]*\/\/$/ { sub(/\/\//, "///"); print; next }
  { line = $0
    if (match(line, /[;,{][[:space:]]+\/\/ /)) {
      head = substr(line, 1, RSTART + RLENGTH - 4)
      tail = substr(line, RSTART + RLENGTH - 3)
      sub(/^\/\/ /, "///< ", tail)
      line = head tail
    }
    print line }
' "$1"
