#!/usr/bin/env bash
# One recipe-search configuration (flags override the seed's recipe) on the validation split
# (55k train / 5k val), seeds ${SEARCH_SEEDS:-0 1 2}. The trainer also logs test accuracy;
# summarize.py never reads it to choose.
#   experiments/search/run_config.sh ARCH NAME [train flags...]
# Writes ${SEARCH_OUT:-experiments/search}/ARCH/NAME-sSEED.{log,jsonl}; a finished seed is
# skipped on rerun (speed/run_config.sh sets SEARCH_OUT to its own folder).
set -u
cd "$(dirname "$0")/../.."
arch=$1; name=$2; shift 2
out=${SEARCH_OUT:-experiments/search}/$arch
mkdir -p "$out"
for seed in ${SEARCH_SEEDS:-0 1 2}; do
  [ -f "$out/$name-s$seed.jsonl" ] && continue
  wd=${SEARCH_WORKDIR:-/tmp/search}/$arch-$name-s$seed
  rm -rf "$wd"
  if python -m jaxmnist.train --arch "$arch" --variant seed --val-examples 5000 --seed "$seed" --workdir "$wd" \
      --no-progress --no-plots "$@" > "$out/$name-s$seed.log" 2>&1; then
    cp "$wd/metrics.jsonl" "$out/$name-s$seed.jsonl"
  else
    echo "search run failed: $arch $name seed $seed (see $out/$name-s$seed.log)" >&2
  fi
done
