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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", help="also write the table (with its preamble) to this file")
    parser.add_argument("--preamble", default=os.path.join(HERE, "PREAMBLE.md"),
                        help="markdown placed above the table")
    args = parser.parse_args()
    text = table(load())
    print(text, end="")
    if args.markdown:
        with open(args.preamble) as f:
            preamble = f.read()
        with open(args.markdown, "w") as f:
            f.write(preamble.rstrip("\n") + "\n\n" + text)


if __name__ == "__main__":
    main()
