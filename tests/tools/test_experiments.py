"""experiments/: the multi-seed reproduction script and the generated RESULTS.md."""

import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

import make_results  # noqa: E402
import reproduce  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "experiments", "search"))
import summarize  # noqa: E402


def test_results_md_is_generated_from_the_committed_json():
    assert make_results.main(["--check"]) == 0


def test_readme_results_md_and_json_agree():
    """Every committed result's final-epoch mean +- std, min and max appear in the same row
    of the README's table and of RESULTS.md's, and the two tables are one table."""
    results = make_results.load_results(os.path.join(ROOT, "experiments", "results"))
    assert len(results) >= 9
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    with open(os.path.join(ROOT, "experiments", "RESULTS.md")) as f:
        results_md = f.read()
    table = readme.split(make_results.START)[1].split(make_results.END)[0].strip().splitlines()
    assert "\n".join(table) in results_md
    rows = table[2:]
    assert len(rows) == len(results)
    for r, row in zip(results, rows):
        f = r["final_test_accuracy"]
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert cells[1:3] == [r["arch"], r["variant"]]
        assert cells[7] == f"{f['mean']:.2f} +- {f['std']:.2f}", row
        assert cells[8:10] == [f"{f['min']:.2f}", f"{f['max']:.2f}"], row
        assert cells[6] == str(len(r["seeds"])) and np.isclose(np.mean(f["per_seed"]), f["mean"])


def test_readme_table_is_replaced_between_its_markers():
    readme = "intro\n<!-- results:start -->\nold\n<!-- results:end -->\nafter\n"
    assert make_results.with_table(readme, ["| a |", "|---|"]) == (
        "intro\n<!-- results:start -->\n| a |\n|---|\n<!-- results:end -->\nafter\n")
    with pytest.raises(ValueError, match="results:start"):
        make_results.with_table("no markers", [])


def test_search_md_is_generated_from_the_committed_logs():
    """The validation table that recipes.py cites is what the committed search logs say."""
    with open(os.path.join(ROOT, "experiments", "search", "SEARCH.md")) as f:
        committed = f.read()
    table = summarize.table(summarize.load())
    assert "gap9k | lr0.1-ss6-rot7" in table and table in committed


@pytest.mark.slow
def test_vmapped_seeds_equal_separate_runs(tmp_path, mnist_dir):
    """K=2 in one vmapped program gives each seed the run it would have had alone."""
    common = ["--arch", "gap8k", "--data-dir", mnist_dir, "--epochs", "1", "--train-examples", "1024"]
    assert reproduce.main(common + ["--seeds", "2", "--out-dir", str(tmp_path / "k2"),
                                    "--workdir", str(tmp_path / "w2")]) == 0
    assert reproduce.main(common + ["--seeds", "1", "--out-dir", str(tmp_path / "k1"),
                                    "--workdir", str(tmp_path / "w1")]) == 0
    k2 = json.load(open(tmp_path / "k2" / "gap8k.json"))
    k1 = json.load(open(tmp_path / "k1" / "gap8k.json"))
    for key in ("arch", "variant", "params", "epochs", "seeds", "final_test_accuracy", "per_epoch",
                "first_epoch_at_99_4", "wall_s", "machine"):
        assert key in k2
    assert k2["params"] == 7776 and k2["seeds"] == [0, 1]
    a, b = k2["per_epoch"]["0"][0], k1["per_epoch"]["0"][0]
    assert abs(a["test_accuracy"] - b["test_accuracy"]) <= 0.05
    np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-4)
    # and the two seeds are different runs
    assert k2["per_epoch"]["0"][0]["train_loss"] != k2["per_epoch"]["1"][0]["train_loss"]
    f = k2["final_test_accuracy"]
    assert f["min"] <= f["mean"] <= f["max"] and f["std"] >= 0


def test_unknown_variant_is_a_clean_error(capsys, mnist_dir):
    assert reproduce.main(["--arch", "gap8k", "--variant", "magic", "--data-dir", mnist_dir]) == 2
    assert "magic" in capsys.readouterr().err


@pytest.mark.slow
def test_sequential_mode_gives_the_same_runs(tmp_path, mnist_dir):
    """Under the CPU lowering, whose K-model step is K copies of the one-model step (the
    plain lowering's vmap rounds differently; tests/nets/test_lowerings.py compares it)."""
    common = ["--arch", "gap8k", "--data-dir", mnist_dir, "--epochs", "1", "--train-examples", "1024",
              "--seeds", "2", "--lowering", "cpu"]
    assert reproduce.main(common + ["--out-dir", str(tmp_path / "v"), "--workdir", str(tmp_path / "wv")]) == 0
    assert reproduce.main(common + ["--mode", "sequential", "--out-dir", str(tmp_path / "s"),
                                    "--workdir", str(tmp_path / "ws")]) == 0
    v = json.load(open(tmp_path / "v" / "gap8k.json"))
    s = json.load(open(tmp_path / "s" / "gap8k.json"))
    for seed in ("0", "1"):
        np.testing.assert_allclose(v["per_epoch"][seed][0]["train_loss"], s["per_epoch"][seed][0]["train_loss"],
                                   rtol=1e-4)


def test_check_runs_are_listed_apart_from_the_table(tmp_path):
    """results/checks-*/ runs get their own section; the main table reads results/*.json only."""
    check = {"arch": "fc19k", "variant": "tuned", "seeds": [0, 1, 2],
             "final_test_accuracy": {"mean": 99.45, "std": 0.04, "min": 99.40, "max": 99.50,
                                     "per_seed": [99.40, 99.45, 99.50]},
             "machine": {"cpu": "Some CPU"}}
    (tmp_path / "checks-2cpu-xeon-2026-01-01").mkdir()
    (tmp_path / "checks-2cpu-xeon-2026-01-01" / "fc19k-tuned.json").write_text(json.dumps(check))
    assert make_results.load_results(str(tmp_path)) == []
    checks = make_results.load_checks(str(tmp_path))
    text = make_results.render([], checks)
    assert "## Checks after changes to the train step" in text
    assert "| checks-2cpu-xeon-2026-01-01 | fc19k | tuned | 3 | 99.45 +- 0.04 | 99.40 | 99.50 | 3/3 | Some CPU |" in text
    assert "## Checks" not in make_results.render([], [])


def test_readme_speedrun_rows_are_the_committed_reports():
    """The README's speedrun table has one row per committed speedrun report, and each row's
    mean +- std, min, seeds, epochs and seconds per run are that report's."""
    speedruns = make_results.load_speedruns()
    assert speedruns, "no committed benchmarks/results/speedrun-*.json"
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    block = readme.split(make_results.SPEED_START)[1].split(make_results.SPEED_END)[0]
    rows = block.strip().splitlines()[2:]
    assert len(rows) == len(speedruns)
    for (name, report), row in zip(speedruns, rows):
        sm = report["summary"]
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert cells[0] == f"`{name}`" and cells[2] == report["config"]["arch"]
        assert cells[3:5] == [str(sm["n"]), str(report["config"]["recipe"]["epochs"])], row
        assert cells[5:7] == [f"{sm['mean']:.2f} +- {sm['std']:.2f}", f"{sm['min']:.2f}"], row
        per_seed = [r["final_accuracy"] for r in report["runs"] if r["impl"] == "jaxmnist"]
        assert np.isclose(np.mean(per_seed), sm["mean"]) and cells[8] == f"{sm['train_s_mean']:.1f}"


def test_fashion_mnist_results_get_their_own_table(tmp_path):
    """results/fashion_mnist/*.json render as a second table; the MNIST table ignores them."""
    result = {"arch": "gap8k", "variant": "tuned", "params": 7776, "epochs": 15, "seeds": [0, 1, 2],
              "dataset": "fashion_mnist", "wall_s": 300.4,
              "final_test_accuracy": {"mean": 91.5, "std": 0.1, "min": 91.4, "max": 91.6,
                                      "per_seed": [91.4, 91.5, 91.6]},
              "best_epoch_test_selected": {"max": 91.8},
              "command": "python experiments/reproduce.py --arch gap8k --dataset fashion_mnist",
              "machine": {"cpu": "Some CPU", "cores": 2}}
    (tmp_path / "fashion_mnist").mkdir()
    (tmp_path / "fashion_mnist" / "gap8k-tuned.json").write_text(json.dumps(result))
    out = tmp_path / "RESULTS.md"
    readme = tmp_path / "README.md"
    readme.write_text(f"x\n{make_results.START}\n{make_results.END}\n")
    files = ["--results-dir", str(tmp_path), "--out", str(out), "--readme", str(readme),
             "--speedruns", str(tmp_path / "speedrun-*.json")]
    assert make_results.main(files) == 0
    text = out.read_text()
    assert "## Fashion-MNIST" in text
    assert ("| gap8k | tuned | 7,776 | 15 | 3 | 91.50 +- 0.10 | 91.40 | 91.60 | 91.80 | 300 | "
            "Some CPU, 2 cores |") in text
    assert "92.5%" in text  # the benchmark's published small-CNN anchor
    assert "91.40, 91.50, 91.60" in text
    assert "(no results yet)" in text  # the MNIST table read results/*.json only
    assert make_results.main(files + ["--check"]) == 0
    assert "(no results yet)" in readme.read_text()
    assert "## Fashion-MNIST" not in make_results.render([], [], [])


def test_speed_variant_is_the_searched_recipe():
    """The `speed` recipes (experiments/search/speed/): gap8k's seed network and optimiser, 4
    epochs of OneCycleLR peaking at 0.2; gap7k's 8 epochs; selectable, never the default."""
    from jaxmnist.train import recipes

    speed = recipes.variant("gap8k", "speed")
    assert speed == recipes.RECIPES["gap8k"].replace(epochs=4, schedule="onecycle", lr=0.2,
                                                     step_size=0, gamma=1.0, variant="speed")
    assert speed.nesterov and speed.weight_decay == 1e-4 and speed.batch_size == 128
    assert "speed" in recipes.VARIANTS and recipes.default_variant("gap8k") == "tuned"
    # gap7k's: its tuned OneCycleLR recipe (peak 0.1, seed's momentum and dropout) cut to 8 epochs
    assert recipes.variant("gap7k", "speed") == recipes.RECIPES["gap7k"].replace(
        epochs=8, schedule="onecycle", lr=0.1, step_size=0, gamma=1.0, variant="speed")
    with pytest.raises(ValueError, match="available: seed, tuned"):
        recipes.variant("gap9k", "speed")


def _speed_summarize():
    """experiments/search/speed/summarize.py (not importable as `summarize`: the parent
    search's module has that name)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "speed_summarize", os.path.join(ROOT, "experiments", "search", "speed", "summarize.py"))
    speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed)
    return speed


def test_speed_search_md_is_generated_from_the_committed_logs():
    """The speed-search tables recipes.py's `speed` variants cite are what the logs say."""
    speed = _speed_summarize()
    with open(os.path.join(ROOT, "experiments", "search", "speed", "SEARCH.md")) as f:
        committed = f.read()
    results = speed.load()
    table, paired = speed.table(results), speed.paired(results)
    assert "| gap8k | e4-oc-lr0.2 | 4 | 12 |" in table and table in committed
    assert "| gap8k | e4-oc-lr0.2-tta10 | 4 | e4-oc-lr0.2 | 4 |" in paired and paired in committed


def test_paired_search_table_compares_candidates_on_shared_seeds_only():
    speed = _speed_summarize()
    run = lambda seed, val, epochs=4: {"seed": seed, "val": val, "loss": 0.03, "epochs": epochs, "train_s": 1.0}
    results = {"gap8k": {
        "e4-oc-lr0.2": [run(0, 99.0), run(1, 99.1), run(2, 99.2)],
        "e4-trick": [run(1, 99.2), run(2, 99.1), run(3, 99.9)],  # seed 3 has no partner
        "e4-lonely": [run(2, 99.9), run(5, 99.9)],  # one pair only: no row
        "e3-other": [run(0, 99.9, 3), run(1, 99.9, 3)],  # 3 epochs: against e3-oc-lr0.2, absent
        "e4-same": [run(0, 99.0), run(1, 99.1)],
    }}
    rows = speed.paired(results).splitlines()[2:]
    assert rows == ["| gap8k | e4-same | 4 | e4-oc-lr0.2 | 2 | +0.000 +- 0.000 | 0/0/2 |",
                    "| gap8k | e4-trick | 4 | e4-oc-lr0.2 | 2 | +0.000 +- 0.141 | 1/1/0 |"]
