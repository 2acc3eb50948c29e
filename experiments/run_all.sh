#!/usr/bin/env bash
# Every reproduction, one after another (each resumes from its checkpoints if interrupted).
# Sequential mode: on a 2-core CPU the K-model step is slower per model for K >= 3 (see
# RESULTS.md); the runs and their JSON are otherwise identical.
set -u
cd "$(dirname "$0")/.."
run() { python experiments/reproduce.py --mode sequential "$@" && python experiments/make_results.py; }
run --arch gap9k --seeds 5
run --arch gap9k --seeds 5 --variant tuned
run --arch gap7k --seeds 5
run --arch gap8k --seeds 5
run --arch gap8k --seeds 5 --variant tuned
run --arch fc19k --seeds 3
run --arch fc19k --seeds 3 --variant tuned
run --arch fc16k --seeds 3
