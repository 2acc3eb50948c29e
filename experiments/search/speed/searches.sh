#!/usr/bin/env bash
# The speed-recipe search behind jaxmnist/recipes.py's `speed` variants (validation split),
# as it was run, round by round. A finished seed is skipped on rerun.
set -u
cd "$(dirname "$0")"
S=./run_config.sh
export SEARCH_SEEDS="0 1"
# gap8k, first search: the tuned recipe's StepLR cut to 4 epochs vs OneCycleLR peaks
# (Nesterov and weight decay 1e-4 as the seed's, batch 128, +-7 deg)
G8="--nesterov --weight-decay 1e-4"
OC="--schedule onecycle --step-size 0 --gamma 1"
$S gap8k e4-lr0.05-ss3 $G8 --epochs 4 --lr 0.05 --step-size 3 --gamma 0.1
$S gap8k e4-oc-lr0.1 $G8 $OC --epochs 4 --lr 0.1
$S gap8k e4-oc-lr0.2 $G8 $OC --epochs 4 --lr 0.2
$S gap8k e4-oc-lr0.4 $G8 $OC --epochs 4 --lr 0.4
# gap8k, second search: around OneCycleLR peaking at 0.2 (the first search's best): rotation, batch 256
# with the peak scaled x2
$S gap8k e4-oc-lr0.2-rot0 $G8 $OC --epochs 4 --lr 0.2 --rotation 0
$S gap8k e4-oc-lr0.4-bs256 $G8 $OC --epochs 4 --lr 0.4 --batch-size 256
# gap7k, first search: the tuned OneCycleLR recipe (peak 0.1) cut to 4 epochs, and gap8k's
# best peak 0.2 (seed's momentum without Nesterov, dropout 0.05, batch 128, +-7 deg)
$S gap7k e4-oc-lr0.1 $OC --epochs 4 --lr 0.1
$S gap7k e4-oc-lr0.2 $OC --epochs 4 --lr 0.2
# gap8k, third search: label smoothing on the best candidate, and one more epoch, 4 seeds each
# (the best candidate's seeds 2-3 added)
export SEARCH_SEEDS="0 1 2 3"
$S gap8k e4-oc-lr0.2 $G8 $OC --epochs 4 --lr 0.2
$S gap8k e4-oc-lr0.2-ls0.1 $G8 $OC --epochs 4 --lr 0.2 --label-smoothing 0.1
$S gap8k e4-oc-lr0.2-ls0.05 $G8 $OC --epochs 4 --lr 0.2 --label-smoothing 0.05
$S gap8k e5-oc-lr0.2 $G8 $OC --epochs 5 --lr 0.2
# gap7k, second search: 4 epochs fall short (above), so more epochs of the tuned peak 0.1,
# and dropout off for the short schedule
export SEARCH_SEEDS="0 1"
$S gap7k e6-oc-lr0.1 $OC --epochs 6 --lr 0.1
$S gap7k e8-oc-lr0.1 $OC --epochs 8 --lr 0.1
$S gap7k e6-oc-lr0.1-do0 $OC --epochs 6 --lr 0.1 --dropout 0
