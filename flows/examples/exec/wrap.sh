#!/bin/sh
# An exec module: one JSON value per line in, exactly one JSON line per input out.
while IFS= read -r line; do
  printf '{"shell":%s,"pid":%d}\n' "$line" "$$"
done
