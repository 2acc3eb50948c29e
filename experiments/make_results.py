"""Regenerate experiments/RESULTS.md, the README's results table and the accuracy-band
plot from results/*.json.

    python experiments/make_results.py [--check]

The README's table sits between `<!-- results:start -->` and `<!-- results:end -->`; it is
the same table as RESULTS.md's first one. --check exits non-zero when either file is not
what the JSON files produce (a test runs it).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(os.path.dirname(HERE), "README.md")
START, END = "<!-- results:start -->", "<!-- results:end -->"

# What each seed document claims: (seed file, params, epoch budget, best test accuracy).
CLAIMS = {
    "fc19k": ("000", 18970, 20, "99.47 (epoch 12)"),
    "gap7k": ("001", 7416, 15, "> 99.4 (no figure given)"),
    "fc16k": ("002", 16146, 20, "99.56 (epoch 17 of 19)"),
    "gap8k": ("003", 7776, 15, "99.44 (epoch 10)"),
    "gap9k": ("004", 8932, 15, "99.50 (epoch 14)"),
}
ORDER = list(CLAIMS)


def load_results(results_dir: str) -> list[dict]:
    results = []
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        with open(path) as f:
            results.append(json.load(f))
    return sorted(results, key=lambda r: (ORDER.index(r["arch"]), r["variant"] != "seed", r["variant"]))


def load_checks(results_dir: str) -> list[tuple[str, dict]]:
    """(folder, result) for results/checks-*/*.json: short runs after a change to the train
    step that alters float rounding, to show the tabled accuracy still holds."""
    checks = []
    for path in sorted(glob.glob(os.path.join(results_dir, "checks-*", "*.json"))):
        with open(path) as f:
            checks.append((os.path.basename(os.path.dirname(path)), json.load(f)))
    return checks


def render_checks(checks: list[tuple[str, dict]]) -> list[str]:
    if not checks:
        return []
    lines = [
        "",
        "## Checks after changes to the train step",
        "",
        "A change to the step that alters only the order of float sums (its gradients equal the",
        "plain formulation's within float tolerance in `tests/`) changes every run from the first",
        "max-pool tie or BatchNorm sum on, so the table above, trained before it, is checked with",
        "a few seeds after it (`experiments/results/checks-*/`, same command with `--out-dir`):",
        "",
        "| checks | arch | variant | K | final-epoch test % mean +- std | min | max | runs >= 99.40 at the end | machine |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for folder, r in checks:
        lines.append(f"| {folder} | {r['arch']} | {r['variant']} | {len(r['seeds'])} | "
                     f"{_final_cells(r)} | {r['machine']['cpu']} |")
    return lines


def _final_cells(r: dict) -> str:
    """mean +- std | min | max | seeds at >= 99.40 of the final-epoch test accuracy."""
    f = r["final_test_accuracy"]
    ok = sum(v >= 99.4 for v in f["per_seed"])
    return (f"{f['mean']:.2f} +- {f['std']:.2f} | {f['min']:.2f} | {f['max']:.2f} | "
            f"{ok}/{len(r['seeds'])}")


# Published Fashion-MNIST figures for small CNNs, from the benchmark table in the dataset's
# README (github.com/zalandoresearch/fashion-mnist, "Benchmark"): user-submitted single runs.
FASHION_ANCHORS = (
    ("2 Conv+pooling (TensorFlow's tutorial)", "91.6"),
    ("2 Conv, <100K parameters", "92.5"),
    ("2 Conv, ~113K parameters", "92.2"),
    ("2 Conv+3 FC, ~1.8M parameters", "93.2"),
)


def render_fashion(results: list[dict]) -> list[str]:
    """The second table: the five networks' default recipes on Fashion-MNIST
    (results/fashion_mnist/*.json), the same final-epoch columns as the MNIST table."""
    if not results:
        return []
    anchors = "; ".join(f"{name} {acc}%" for name, acc in FASHION_ANCHORS)
    lines = [
        "",
        "## Fashion-MNIST",
        "",
        "The same five networks with their default recipes (tuned where it exists, else the seed's)",
        "and the `speed` variants (nothing re-tuned for this dataset, MNIST's Normalize constants",
        "and +-rotation kept), trained",
        "on Fashion-MNIST's 60,000 training images and scored on its 10,000 test images",
        "(`experiments/run_fashion_mnist.sh`, JSON in `experiments/results/fashion_mnist/`). The",
        "figure is again the **final-epoch** test accuracy over K seeds. For scale, the dataset's",
        "own benchmark table lists small CNNs at " + anchors + " (single",
        "submitted runs of networks with ~100K-1.8M parameters, against these 7k-19k).",
        "",
        "| arch | variant | params | epochs | K | final-epoch test % mean +- std | min | max | best epoch (test-selected) % | wall (s) | machine |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        f = r["final_test_accuracy"]
        lines.append(
            f"| {r['arch']} | {r['variant']} | {r['params']:,} | {r['epochs']} | {len(r['seeds'])} | "
            f"{f['mean']:.2f} +- {f['std']:.2f} | {f['min']:.2f} | {f['max']:.2f} | "
            f"{r['best_epoch_test_selected']['max']:.2f} | {r['wall_s']:.0f} | "
            f"{r['machine']['cpu']}, {r['machine']['cores']} cores |"
        )
    lines += ["", "Per-seed final-epoch accuracies:", ""]
    for r in results:
        per = ", ".join(f"{v:.2f}" for v in r["final_test_accuracy"]["per_seed"])
        lines.append(f"- **{r['arch']} ({r['variant']})**: {per}. Command: `{r['command']}`.")
    return lines


def main_table(results: list[dict]) -> list[str]:
    """The results table: RESULTS.md's first, and the README's (between its markers)."""
    lines = [
        "| seed | arch | variant | seed's claim: params / epochs / best test % | ours: params | epochs | K | final-epoch test % mean +- std | min | max | runs >= 99.40 at the end | best epoch (test-selected) % | wall (s) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        seed_file, params, budget, claim = CLAIMS[r["arch"]]
        lines.append(
            f"| {seed_file} | {r['arch']} | {r['variant']} | {params:,} / {budget} / {claim} | "
            f"{r['params']:,} | {r['epochs']} | {len(r['seeds'])} | {_final_cells(r)} | "
            f"{r['best_epoch_test_selected']['max']:.2f} | {r['wall_s']:.0f} |"
        )
    if not results:
        lines.append("| | (no results yet) | | | | | | | | | | | |")
    return lines


def with_table(readme: str, table: list[str], start: str = START, end: str = END) -> str:
    """readme with the text between its `start` and `end` markers replaced by `table`."""
    if readme.count(start) != 1 or readme.count(end) != 1:
        raise ValueError(f"README must hold {start} and {end} once each")
    head, rest = readme.split(start)
    _, tail = rest.split(end)
    return head + start + "\n" + "\n".join(table) + "\n" + end + tail


SPEEDRUNS = os.path.join(os.path.dirname(HERE), "benchmarks", "results", "speedrun-*.json")


def load_speedruns(pattern: str = SPEEDRUNS) -> list[tuple[str, dict]]:
    """(file name, report) of each committed speedrun (benchmarks/time_to_accuracy.py --speedrun)."""
    out = []
    for path in sorted(glob.glob(pattern)):
        with open(path) as f:
            out.append((os.path.basename(path), json.load(f)))
    return out


SPEED_START, SPEED_END = "<!-- speedrun:start -->", "<!-- speedrun:end -->"


def speedrun_summary(speedruns: list[tuple[str, dict]]) -> list[str]:
    """One row per committed speedrun: the figures the README quotes, each from one machine."""
    lines = ["| file | CPU (load average) | arch | seeds | epochs | final-epoch test % mean +- std | min | p, one-sided t-test against mean <= 99.40 | train s/run | s/epoch | PyTorch seed recipe: s to its first 99.4% epoch (epochs) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, report in speedruns:
        sm, c = report["summary"], report["config"]
        ours = [r for r in report["runs"] if r["impl"] == "jaxmnist" and not r.get("error")]
        peer = next((r for r in report["runs"] if r["impl"] == "torch" and not r.get("error")), None)
        key = f"seconds_to_{sm['target']:.1f}"  # time_to_accuracy.threshold_key
        per_epoch = statistics.mean(r["train_s"] / r["epochs_run"] for r in ours)
        peer_cell = (f"{peer[key]:.1f} ({peer['epochs_run']})" if peer and peer.get(key) is not None
                     else "never" if peer else "-")
        p = sm.get("p_mean_above_target")
        lines.append(f"| `{name}` | {report['machine']['cpu']} ({report['machine']['load_average'][0]:.1f}) | "
                     f"{c['arch']} | {sm['n']} | "
                     f"{c['recipe']['epochs']} | {sm['mean']:.2f} +- {sm['std']:.2f} | {sm['min']:.2f} | "
                     f"{'-' if p is None else f'{p:.3f}'} | "
                     f"{sm['train_s_mean']:.1f} | {per_epoch:.1f} | {peer_cell} |")
    return lines


def render_speedruns(speedruns: list[tuple[str, dict]]) -> list[str]:
    """The speedrun section: each report's own table, as the script printed it."""
    if not speedruns:
        return []
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "benchmarks"))
    import time_to_accuracy  # stdlib + numpy at import

    lines = ["", "## Speedrun: time to a final-epoch 99.40% mean", "",
             "N seeds of a `speed` recipe, each trained in its own process on all 60k images, with the",
             "PyTorch seed recipe's time to its first 99.4% epoch as the peer row, from one machine",
             "(`python benchmarks/time_to_accuracy.py --arch ARCH --variant speed --speedrun 10 --json ...`):"]
    lines += [""] + speedrun_summary(speedruns)
    for name, report in speedruns:
        lines += ["", f"`benchmarks/results/{name}`:", "", time_to_accuracy.speedrun_table(report)]
    return lines


def render(results: list[dict], checks: list[tuple[str, dict]] = (),
           fashion: list[dict] = (), speedruns: list[tuple[str, dict]] = ()) -> str:
    lines = [
        "# Results: the seeds' claims, reproduced",
        "",
        "Generated by `python experiments/make_results.py` from `experiments/results/*.json`",
        "(each written by `python experiments/reproduce.py --arch ARCH --seeds K`). Do not edit by hand.",
        "",
        "Our figure is the **final-epoch** MNIST test accuracy over K independently seeded runs",
        "(init, dropout, augmentation and shuffling all differ), trained on all 60,000 training",
        "images within the seed's epoch budget. The seeds' figures are the best epoch of one run,",
        "picked on the test set; our test-selected best epoch is shown beside them only for that",
        "comparison.",
        "",
        "`--mode vmap` trains the K seeds in one jitted step, `jax.vmap` over a model axis whose",
        "batching rule runs each model's slice as its own copy of the one-model step inside the one",
        "XLA program (`jaxmnist.nets.cpu.models_side_by_side`). On this 2-core CPU K=2 is never",
        "slower than one model at a time and K=3-5 are within -13% to +13% of it, depending on",
        "the VM's phase (`python benchmarks/models_per_step.py --arch gap8k --models 1 2 3 5`,",
        "total training images/s, batch 128, three runs: K=1 10.3k / 7.7k / 7.7k, K=2 10.3k /",
        "9.0k / 8.9k, K=3 9.0k / 8.2k / 8.8k, K=5 8.9k / 8.5k / 8.6k; a plain vmap that carried",
        "the model axis through every activation ran K=2 at 8.8k and K=3 at 7.1k). The runs",
        "below use `--mode sequential` (the same loop once per seed); a test",
        "checks that",
        "both modes train identical models. Recipe searches (validation split) are tabled in",
        "`experiments/search/SEARCH.md`.",
        "",
    ]
    lines += main_table(results)
    lines += ["", "Per-seed final-epoch accuracies and the first epoch each seed reached 99.40%:", ""]
    for r in results:
        firsts = ", ".join(f"{s}: {e if e is not None else 'never'}" for s, e in r["first_epoch_at_99_4"].items())
        per = ", ".join(f"{v:.2f}" for v in r["final_test_accuracy"]["per_seed"])
        lines.append(f"- **{r['arch']} ({r['variant']})**: final {per}; first epoch at 99.40%: {firsts}. "
                     f"Recipe: `{json.dumps({k: v for k, v in r['recipe'].items() if k not in ('arch', 'mean', 'std')})}`. "
                     f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores; {r['images_per_s_all_models']:.0f} training images/s (all seeds, {r.get('mode', 'vmap')}).")
    lines += ["", "![per-epoch test accuracy, min-max band over seeds](results/accuracy_bands.png)"]
    lines += render_checks(list(checks))
    lines += render_speedruns(list(speedruns))
    lines += render_fashion(list(fashion))
    return "\n".join(lines + [""])


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in results:
        curves = np.array([[row["test_accuracy"] for row in rows] for rows in r["per_epoch"].values()])
        epochs = np.arange(1, curves.shape[1] + 1)
        label = f"{r['arch']} ({r['variant']}, K={len(r['seeds'])})"
        line, = ax.plot(epochs, curves.mean(0), label=label)
        ax.fill_between(epochs, curves.min(0), curves.max(0), color=line.get_color(), alpha=0.2)
    ax.axhline(99.4, color="grey", lw=0.8, ls="--")
    ax.set_ylim(98.5, 99.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("MNIST test accuracy per epoch: mean and min-max over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    parser.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    parser.add_argument("--readme", default=README, help="README whose results table to write")
    parser.add_argument("--speedruns", default=SPEEDRUNS, help="glob of speedrun reports to render")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    results = load_results(args.results_dir)
    fashion = load_results(os.path.join(args.results_dir, "fashion_mnist"))
    speedruns = load_speedruns(args.speedruns)
    text = render(results, load_checks(args.results_dir), fashion, speedruns)
    with open(args.readme) as f:
        readme = f.read()
    readme_text = with_table(readme, main_table(results))
    if speedruns:
        readme_text = with_table(readme_text, speedrun_summary(speedruns), SPEED_START, SPEED_END)
    if args.check:
        current = open(args.out).read() if os.path.exists(args.out) else ""
        stale = [path for path, now, want in ((args.out, current, text), (args.readme, readme, readme_text))
                 if now != want]
        if stale:
            print(f"{' and '.join(stale)} stale: run python experiments/make_results.py", file=sys.stderr)
            return 1
        return 0
    with open(args.out, "w") as f:
        f.write(text)
    with open(args.readme, "w") as f:
        f.write(readme_text)
    if results:
        plot(results, os.path.join(args.results_dir, "accuracy_bands.png"))
    print(f"wrote {args.out} ({len(results)} result files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
