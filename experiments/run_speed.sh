#!/usr/bin/env bash
# The `speed` variants (jaxmnist/train/recipes.py, chosen in experiments/search/speed/) retrained on
# all 60k and reported on test over 10 seeds, one after another; each resumes from its
# checkpoints if interrupted. Writes experiments/results/ARCH-speed.json.
set -u
cd "$(dirname "$0")/.."
for arch in "$@"; do
  python experiments/reproduce.py --mode sequential --arch "$arch" --variant speed --seeds 10 \
    --workdir "experiments/runs/$arch-speed-k10"
done
