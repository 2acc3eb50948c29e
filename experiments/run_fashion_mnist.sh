#!/usr/bin/env bash
# The five networks on Fashion-MNIST with their default recipes (tuned where it exists,
# else the seed's) and the speed variants, 3 seeds each, final-epoch test accuracy; one after another (each
# resumes from its checkpoints if interrupted). Writes experiments/results/fashion_mnist/.
#   FASHION_MNIST_DIR=/usr/share/datasets/fashion-mnist experiments/run_fashion_mnist.sh
set -u
cd "$(dirname "$0")/.."
data=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
run() {
  arch=$1 variant=$2
  python experiments/reproduce.py --mode sequential --arch "$arch" --variant "$variant" --seeds 3 \
    --dataset fashion_mnist --data-dir "$data" --out-dir experiments/results/fashion_mnist \
    --workdir "experiments/runs/fashion_mnist/$arch-$variant-k3"
}
run gap8k tuned
run gap7k tuned
run gap9k tuned
run fc16k seed
run fc19k tuned
run gap8k speed
run gap7k speed
