"""Validation-split summary of the speed-recipe search: the table recipes.py's `speed`
variants cite.

    python experiments/search/speed/summarize.py [--markdown experiments/search/speed/SEARCH.md]

Ranks each arch's candidates by FINAL-epoch validation accuracy (mean over seeds), ties by
final validation loss. Test accuracy is logged by the trainer but deliberately not read
here: choosing on it would leak. The train seconds are the trainer's own per-epoch train
time summed over the run (first epoch's compilation included), on the machine named.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics

HERE = os.path.dirname(os.path.abspath(__file__))


def _parent():
    """experiments/search/summarize.py, whose `load` reads these logs as it reads its own."""
    spec = importlib.util.spec_from_file_location(
        "search_summarize", os.path.join(os.path.dirname(HERE), "summarize.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(root: str = HERE) -> dict[str, dict[str, list[dict]]]:
    return _parent().load(root)


def table(results: dict[str, dict[str, list[dict]]]) -> str:
    lines = ["| arch | candidate | epochs | seeds | final val % mean +- std | min | max | final val loss | train s/run (median) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for arch in sorted(results):
        ranked = sorted(results[arch].items(),
                        key=lambda kv: (-statistics.mean(r["val"] for r in kv[1]),
                                        statistics.mean(r["loss"] for r in kv[1])))
        for config, runs in ranked:
            vals = [r["val"] for r in runs]
            std = statistics.stdev(vals) if len(vals) > 1 else 0.0
            loss = statistics.mean(r["loss"] for r in runs)
            secs = statistics.median(r["train_s"] for r in runs)
            lines.append(f"| {arch} | {config} | {runs[0]['epochs']} | {len(vals)} | "
                         f"{statistics.mean(vals):.2f} +- {std:.2f} | {min(vals):.2f} | {max(vals):.2f} | "
                         f"{loss:.4f} | {secs:.0f} |")
    return "\n".join(lines) + "\n"


# The candidate each trick is measured against, per arch and epoch count: the recipe the
# trick would be added to (gap8k's adopted 4-epoch OneCycleLR, and the same cut to 3 epochs).
BASELINES = {"gap8k": {3: "e3-oc-lr0.2", 4: "e4-oc-lr0.2"}}


def paired(results: dict[str, dict[str, list[dict]]]) -> str:
    """Each candidate minus its baseline on the seeds both ran: the same initial weights,
    data order and rotations, so the difference is the trick's, not the seeds'. 5,000
    validation images make one image 0.02 points; the spread of the per-seed differences
    says how far a mean of a few pairs can be trusted."""
    lines = ["| arch | candidate | epochs | against | paired seeds | val % difference mean +- std | better / worse / same |",
             "|---|---|---:|---|---:|---:|---:|"]
    for arch in sorted(BASELINES):
        rows = []
        for epochs, base in sorted(BASELINES[arch].items()):
            base_val = {r["seed"]: r["val"] for r in results.get(arch, {}).get(base, [])}
            for config, runs in results.get(arch, {}).items():
                if config == base or runs[0]["epochs"] != epochs:
                    continue
                diffs = [r["val"] - base_val[r["seed"]] for r in runs if r["seed"] in base_val]
                if len(diffs) < 2:
                    continue
                mean = round(statistics.mean(diffs), 9) + 0.0  # no "-0.000" from float noise
                better, worse = sum(d > 1e-9 for d in diffs), sum(d < -1e-9 for d in diffs)
                tally = f"{better}/{worse}/{len(diffs) - better - worse}"
                rows.append((-epochs, -mean, f"| {arch} | {config} | {epochs} | {base} | {len(diffs)} | "
                             f"{mean:+.3f} +- {statistics.stdev(diffs):.3f} | {tally} |"))
        lines += [row for *_, row in sorted(rows)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", help="also write the table (with its preamble) to this file")
    parser.add_argument("--preamble", default=os.path.join(HERE, "PREAMBLE.md"),
                        help="markdown placed above the table")
    args = parser.parse_args()
    results = load()
    text = table(results) + "\nEach trick against the recipe it would join, seed by seed:\n\n" + paired(results)
    print(text, end="")
    if args.markdown:
        with open(args.preamble) as f:
            preamble = f.read()
        with open(args.markdown, "w") as f:
            f.write(preamble.rstrip("\n") + "\n\n" + text)


if __name__ == "__main__":
    main()
