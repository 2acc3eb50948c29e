"""benchmarks/time_to_accuracy.py's speedrun mode: per-run timing and the multi-seed summary."""

import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import time_to_accuracy as tta  # noqa: E402


def test_run_timing_takes_the_compile_out_of_the_first_epoch():
    epochs = [{"epoch": 1, "epoch_seconds": 12.0, "train_seconds": 11.0},
              {"epoch": 2, "epoch_seconds": 6.0, "train_seconds": 5.0},
              {"epoch": 3, "epoch_seconds": 7.0, "train_seconds": 6.0},
              {"epoch": 4, "epoch_seconds": 5.0, "train_seconds": 4.0}]
    t = tta.run_timing({"epochs": epochs})
    assert t["train_s"] == pytest.approx(26.0)
    assert t["eval_s"] == pytest.approx(4.0)
    assert t["compile_s"] == pytest.approx(11.0 - 5.0)  # beyond the later epochs' median
    assert t["train_s_excl_compile"] == pytest.approx(20.0)
    one = tta.run_timing({"epochs": epochs[:1]})
    assert one["train_s"] == 11.0 and one["compile_s"] is None


def test_speedrun_summary_one_sided_t_test():
    from scipy import stats

    finals = [99.45, 99.41, 99.38, 99.50, 99.44, 99.47, 99.40, 99.43, 99.46, 99.42]
    s = tta.speedrun_summary(finals, 99.4)
    assert s["n"] == 10 and s["min"] == 99.38 and s["max"] == 99.50
    assert s["at_or_above_target"] == 9
    ref = stats.ttest_1samp(finals, 99.4, alternative="greater")
    assert s["t"] == pytest.approx(ref.statistic) and s["p_mean_above_target"] == pytest.approx(ref.pvalue)
    assert s["t"] > 0 and s["p_mean_above_target"] < 0.05
    below = tta.speedrun_summary([99.30, 99.35, 99.32], 99.4)
    assert below["t"] < 0 and below["p_mean_above_target"] > 0.5


def test_speedrun_table_names_the_machine_and_the_test():
    run = {"impl": "jaxmnist", "seed": 0, "final_accuracy": 99.45, "train_s": 26.0, "compile_s": 6.0,
           "train_s_excl_compile": 20.0, "eval_s": 4.0, "first_step_s": 5.5, "process_s": 40.0}
    finals = [99.45, 99.41, 99.38]
    summary = tta.speedrun_summary(finals, 99.4)
    summary.update(train_s_mean=26.0, train_s_excl_compile_mean=20.0)
    report = {"machine": {"cpu": "Some CPU", "cores": 2, "git": "abc", "date": "2025-01-01",
                          "load_average": [0.1, 0.1, 0.1],
                          "versions": {"python": "3.11", "jax": "0.4", "torch": "2.0"}},
              "config": {"arch": "gap8k", "recipe": {}, "train_examples": 60000},
              "summary": summary,
              "runs": [run, {"impl": "torch", "error": "worker exited with status 1"}]}
    text = tta.speedrun_table(report)
    assert "| jaxmnist |" in text and "99.45" in text and "failed: worker exited" in text
    assert "Some CPU" in text and "one-sided t-test of mean >= 99.40" in text
    assert "final-epoch test accuracy 99.41 +- 0.04%" in text


def test_speedrun_peer_is_pytorch_on_the_seed_recipe_stopped_at_the_target(monkeypatch):
    """jaxmnist runs N seeds of the speed recipe to its end; the PyTorch row is seed 0 of the
    seed document's recipe, stopped at its first epoch at the target."""
    calls = []

    def fake_launch(impl, args, recipe, stop_at=None):
        calls.append((impl, args.seed, recipe["variant"], recipe["epochs"], stop_at))
        accs = [99.0, 99.3, 99.41] if impl == "jaxmnist" else [98.9, 99.42]
        epochs = [{"epoch": i + 1, "test_accuracy": a, "epoch_seconds": 6.0, "train_seconds": 5.0,
                   "elapsed_s": 10.0 + 6 * i} for i, a in enumerate(accs)]
        return {"impl": impl, "epochs": epochs, "process_s": 30.0}

    monkeypatch.setattr(tta, "launch", fake_launch)
    monkeypatch.setattr(tta.common, "publish", lambda report, text, path: (report, text))
    args = tta.parse_args(["--arch", "gap8k", "--variant", "speed", "--speedrun", "2"])
    machine = {"cpu": "Some CPU", "cores": 2, "git": "abc", "date": "2025-01-01",
               "load_average": [0.1, 0.1, 0.1], "versions": {"python": "3.11", "jax": "0.4", "torch": "2.0"}}
    speed = {"arch": "gap8k", "variant": "speed", "epochs": 3}
    seed = {"arch": "gap8k", "variant": "seed", "epochs": 15}
    report, text = tta.speedrun_main(args, machine, speed, seed)
    assert calls == [("jaxmnist", 0, "speed", 3, None), ("jaxmnist", 1, "speed", 3, None),
                     ("torch", 0, "seed", 15, 99.4)]
    torch_row = report["runs"][-1]
    assert torch_row["variant"] == "seed" and torch_row["seconds_to_99.4"] == 16.0
    assert report["summary"]["n"] == 2 and report["summary"]["mean"] == 99.41
    assert re.search(r"\| torch +\| seed +\|", text) and re.search(r"\| jaxmnist +\| speed +\|", text)
