#!/usr/bin/env bash
# Recipe search for gap8k on the validation split (55k train / 5k val), 3 seeds per config.
# The test column is logged by the trainer but is not used to choose.
set -u
cd "$(dirname "$0")/../.."
out=experiments/search/gap8k
mkdir -p "$out"
for cfg in "lr0.01-ss6:--lr 0.01 --step-size 6" "lr0.05-ss6:--lr 0.05 --step-size 6" "lr0.02-ss8:--lr 0.02 --step-size 8"; do
  name=${cfg%%:*}; flags=${cfg#*:}
  for seed in 0 1 2; do
    wd=/tmp/search/gap8k-$name-s$seed
    python -m jaxmnist.train --arch gap8k --val-examples 5000 --seed $seed --workdir "$wd" \
      --no-progress --no-plots $flags > "$out/$name-s$seed.log" 2>&1
    cp "$wd/metrics.jsonl" "$out/$name-s$seed.jsonl"
  done
done
