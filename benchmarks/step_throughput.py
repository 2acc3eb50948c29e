"""Training-step and inference throughput: jaxmnist's real train step vs PyTorch on CPU.

    python benchmarks/step_throughput.py [--archs all|NAME...] [--batch-sizes 64 128 256 512]
        [--repeats 9] [--steps N] [--impls jaxmnist torch-eager torch-compile]
        [--torch-augment] [--json out.json] [--quick]

For each arch and batch size, images/s of
  * `jaxmnist`: `jaxmnist.train.step.make_train_fn(recipe, 1)`, the very function the trainer
    runs, called as `state, metrics = fn(state, images, labels, idx, key)` on a synthetic
    on-device uint8 dataset (60,000 random images and labels) with host-side int32 index
    batches and PRNG keys precomputed outside the timed region; the step gathers the
    batch, rotates, normalises, runs forward/backward with BatchNorm and dropout, and
    updates SGD. `jax.block_until_ready` ends every repeat (the step is asynchronous);
  * `torch-eager`: benchmarks/torch_reference.py's network, `make_optimizer` with the
    recipe's hyperparameters and `train_step`, on NCHW float32 batches;
  * `torch-compile`: the same step (forward, backward, SGD update) under torch.compile;
    a failure is recorded in the JSON and the benchmark goes on;
and, once per arch, inference over `--eval-images` images: `jaxmnist-eval`
(`make_eval_fn(recipe, 1)`, the trainer's eval: batches of `jaxmnist.train.step.EVAL_BATCH`
inside one jit) and `torch-eager-eval` (model.eval(), torch.no_grad(), the same batches).

Each implementation runs in its own worker process (spawned by this script, which only
coordinates): PyTorch's OpenMP threads keep spinning after each step and, in one process,
took 15% of jaxmnist's throughput (fc19k, batch 128: 5,732 images/s alone vs 4,872 beside
torch; OMP_WAIT_POLICY=ACTIVE: 3,096), and neither side's allocator or thread pools should
shape the other's numbers. `--in-process` restores the single-process mode. Repeats are
interleaved across the workers (jaxmnist rep 1, torch rep 1, ..., jaxmnist rep 2, ...),
one worker timing while the others wait, so that drift in machine load hits every
implementation alike; the table reports the median
repeat and the slowest / fastest. Warm-up calls (jit / torch.compile compilation, first
allocations) are excluded from throughput; `compile_s` is their time in excess of the
same number of steady-state steps (the raw warm-up call times are in the JSON).

Measure on a quiet machine: with other processes on the cores the numbers are noise,
multi-threaded PyTorch collapses first (its OpenMP barriers wait for descheduled
threads), and the output says so when the load average is high.
"""

from jaxmnist import machine  # process tuning (first: before JAX starts)

if __name__ == "__main__":
    machine.prepare_command()  # as the trainer does; the workers inherit it

import argparse
import json
import os
import statistics
import subprocess
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from jaxmnist.train import loop
from jaxmnist.train import state as state_lib
from jaxmnist import nets
from jaxmnist.train import recipes
from jaxmnist.train import step as step_lib

IMPLS = ("jaxmnist", "jaxmnist-plain", "torch-eager", "torch-compile")
JAX_LOWERINGS = {"jaxmnist": "cpu", "jaxmnist-plain": "plain"}  # impl -> jaxmnist's --lowering
REFERENCE_IMPLS = ("torch-eager", "torch-eager-eval")  # what the ratios divide by
TRAIN_EXAMPLES = 60_000  # the synthetic on-device dataset, MNIST's training-set size
KEY_POOL = 64  # distinct (idx, key) / torch batches, cycled through during a repeat
TORCH_BATCH_POOL = 8
EVAL_BATCH = step_lib.EVAL_BATCH  # both sides score in the trainer's eval batches
SETTLE_S = 0.25  # pause before each timed repeat (OpenMP / Eigen threads spin after work)

QUICK = dict(archs=["gap8k", "fc19k"], batch_sizes=[128], repeats=2, warmup=2,
             target_seconds=0.2, min_steps=2, max_steps=20, eval_images=2000,
             impls=["jaxmnist", "jaxmnist-plain", "torch-eager"])
DEFAULTS = dict(archs=["all"], batch_sizes=[64, 128, 256, 512], repeats=9, warmup=3,
                target_seconds=1.0, min_steps=5, max_steps=500, eval_images=10_000,
                impls=list(IMPLS))


# --- runners: each times `n` calls of one implementation -------------------------------


class Runner:
    impl: str
    images_per_call: int

    def call(self, i: int) -> None:
        """One step (not synchronised)."""
        raise NotImplementedError

    def sync(self) -> None:
        pass

    def close(self) -> None:
        """Releases what the runner holds (a worker process)."""

    def timed(self, n: int, offset: int = 0) -> float:
        t0 = time.perf_counter()
        for i in range(n):
            self.call(offset + i)
        self.sync()
        return time.perf_counter() - t0


class JaxTrain(Runner):
    """The trainer's step; with n_models > 1 the K-model step of `--mode vmap`.
    lowering="cpu" is `jaxmnist` (the CPU lowering), "plain" is `jaxmnist-plain`."""

    def __init__(self, recipe: recipes.Recipe, images, labels, rng: np.random.Generator,
                 n_models: int = 1, lowering: str = "cpu"):
        self.impl = next(i for i, k in JAX_LOWERINGS.items() if k == lowering)
        b = recipe.batch_size
        self.images_per_call = b * n_models
        steps_per_epoch = math.ceil(TRAIN_EXAMPLES / b)
        self.state, _ = state_lib.init_models(recipe, tuple(range(n_models)), steps_per_epoch,
                                              lowering)
        jax.block_until_ready(self.state)
        self.fn = step_lib.make_train_fn(recipe, n_models, lowering, steps_per_epoch=steps_per_epoch)
        self.images, self.labels = images, labels
        shape = (b,) if n_models == 1 else (n_models, b)
        self.idx = [rng.integers(0, TRAIN_EXAMPLES, shape).astype(np.int32) for _ in range(KEY_POOL)]
        keys = np.asarray(jax.random.split(jax.random.PRNGKey(int(rng.integers(2**31))),
                                           (KEY_POOL,) + shape[:-1]))
        # (2,) or (K, 2) uint32 per step, as the trainer passes
        self.keys = [np.ascontiguousarray(k) for k in keys]
        self.metrics = None

    def call(self, i):
        j = i % KEY_POOL
        self.state, self.metrics = self.fn(self.state, self.images, self.labels,
                                           self.idx[j], self.keys[j])

    def sync(self):
        jax.block_until_ready((self.state, self.metrics))


class JaxEval(Runner):
    impl = "jaxmnist-eval"

    def __init__(self, recipe, state, images, labels):
        self.images_per_call = int(images.shape[0])
        self.fn = step_lib.make_eval_fn(recipe, 1, EVAL_BATCH)
        self.state, self.images, self.labels = state, images, labels
        self.out = None

    def call(self, i):
        self.out = self.fn(self.state, self.images, self.labels)

    def sync(self):
        jax.block_until_ready(self.out)


class TorchTrain(Runner):
    """Pre-augmented batches by default; with augment=True each step also gathers its
    uint8 batch from the dataset, rotates it (affine_grid + grid_sample, nearest) and
    normalises, inside the timed region."""

    def __init__(self, recipe, images_u8, labels, rng, compiled: bool, augment: bool):
        import torch

        import torch_reference as tr

        self.impl = "torch-compile" if compiled else "torch-eager"
        self.torch = torch
        b = recipe.batch_size
        self.images_per_call = b
        self.rotation = recipe.rotation
        torch.manual_seed(int(rng.integers(2**31)))
        self.device = torch_device()
        self.model = tr.TORCH_ARCHS[recipe.arch]().to(self.device)
        self.opt = tr.make_optimizer(self.model, recipe.lr, recipe.momentum, recipe.nesterov,
                                     recipe.weight_decay)
        model, opt = self.model, self.opt

        def step(x, y):
            return tr.train_step(model, opt, x, y)

        if compiled:
            torch._dynamo.reset()
            step = torch.compile(step, dynamic=False)
        self.step = step
        self.augment = augment
        images_u8, labels = images_u8.to(self.device), labels.to(self.device)
        self.images_u8, self.labels = images_u8, labels  # torch (N,1,28,28) uint8, int64
        self.idx = [torch.from_numpy(rng.integers(0, TRAIN_EXAMPLES, b)).to(self.device)
                    for _ in range(KEY_POOL)]
        self.angles = [torch.empty(b, device=self.device).uniform_(-self.rotation, self.rotation)
                       for _ in range(KEY_POOL)]
        pool = KEY_POOL if augment else TORCH_BATCH_POOL
        self.batches = [
            (common.torch_augment(images_u8[self.idx[j]], self.angles[j], self.rotation),
             labels[self.idx[j]])
            for j in range(pool)
        ]

    def call(self, i):
        if self.augment:
            j = i % KEY_POOL
            x = common.torch_augment(self.images_u8[self.idx[j]], self.angles[j], self.rotation)
            y = self.labels[self.idx[j]]
        else:
            x, y = self.batches[i % len(self.batches)]
        self.step(x, y)  # returns the loss tensor; CPU torch is synchronous

    def sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()


class TorchEval(Runner):
    impl = "torch-eager-eval"

    def __init__(self, arch, images_u8):
        import torch

        import torch_reference as tr

        self.torch = torch
        self.device = torch_device()
        self.model = tr.TORCH_ARCHS[arch]().eval().to(self.device)
        self.x = torch_augment_eval(images_u8.to(self.device))
        self.images_per_call = int(self.x.shape[0])

    def call(self, i):
        with self.torch.no_grad():
            for s in range(0, self.x.shape[0], EVAL_BATCH):
                self.model(self.x[s: s + EVAL_BATCH]).argmax(1)

    def sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()


def torch_device() -> str:
    """cuda where this torch build sees a GPU (so a CUDA machine compares like with like)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_augment_eval(images_u8):
    return images_u8.float().div_(255.0).sub_(common.MEAN).div_(common.STD)


# --- measurement ---------------------------------------------------------------------------


def warm_up(runner: Runner, calls: int) -> list[float]:
    """Times each of the first `calls` calls on its own (compilation happens here)."""
    return [runner.timed(1, offset=i) for i in range(calls)]


def choose_steps(warm: list[float], args, fixed: int | None) -> int:
    if fixed is not None:
        return fixed
    est = min(warm[1:]) if len(warm) > 1 else warm[0]
    return int(min(max(math.ceil(args.target_seconds / max(est, 1e-6)), args.min_steps),
                   args.max_steps))


def measure(runners: list[Runner], args, fixed_steps: int | None,
            errors: dict[str, str]) -> list[dict]:
    """Warm every runner up, then interleave the repeats; returns one record per runner."""
    live, plan = [], {}
    for r in runners:
        try:
            warm = warm_up(r, args.warmup)
        except Exception as exc:  # torch.compile may fail on a machine; record and go on
            if r.impl != "torch-compile":
                raise
            errors[r.impl] = f"{type(exc).__name__}: {exc}".strip()[:2000]
            common.log(f"  {r.impl} failed during warm-up: {errors[r.impl].splitlines()[0]}")
            continue
        plan[r.impl] = (warm, choose_steps(warm, args, fixed_steps))
        live.append(r)
    times: dict[str, list[float]] = {r.impl: [] for r in live}
    cross_core: list[float | None] = []
    for rep in range(args.repeats):
        cross_core.append(common.cross_core_ratio())  # see common.SLOW_CROSS_CORE
        for r in list(live):
            steps = plan[r.impl][1]
            time.sleep(SETTLE_S)  # let the previous impl's spinning worker threads go idle
            try:
                times[r.impl].append(r.timed(steps, offset=args.warmup + rep * steps))
            except Exception as exc:
                if r.impl != "torch-compile":
                    raise
                errors[r.impl] = f"{type(exc).__name__}: {exc}".strip()[:2000]
                live.remove(r)
    records = []
    for r in live:
        warm, steps = plan[r.impl]
        rates = [steps * r.images_per_call / t for t in times[r.impl]]
        median, lo, hi = common.summarize(rates)
        call_s = r.images_per_call / median  # one steady-state call
        records.append({
            "impl": r.impl,
            "device": getattr(r, "device", None) or jax.devices()[0].platform,
            "images_per_s": median,
            "min": lo,
            "max": hi,
            "compile_s": max(0.0, sum(warm) - len(warm) * call_s),
            "warmup_call_s": warm,
            "repeat_images_per_s": rates,  # in time order; impls take turns within a repeat
            "repeat_cross_core_ratio": cross_core[:len(rates)],  # probed before each repeat
            "steps": steps,
            "repeats": len(rates),
            "images_per_call": r.images_per_call,
        })
    ref = next((rec for rec in records if rec["impl"] in REFERENCE_IMPLS), None)
    for rec in records:
        if ref is not None and rec is not ref:
            rec["paired_ratio_normal"], rec["paired_ratio_slow"] = paired_ratios(rec, ref)
    return records


def paired_ratios(rec: dict, ref: dict) -> tuple[float | None, float | None]:
    """Median of rec's images/s over ref's within each repeat, over the repeats probed
    normal and over those probed slow (None where there were none).

    The impls take turns inside a repeat, so a repeat's pair saw the same phase of the VM;
    the overall medians mix the phases in whatever proportion a run happened to get.
    """
    groups: dict[bool, list[float]] = {False: [], True: []}
    for a, b, probe in zip(rec["repeat_images_per_s"], ref["repeat_images_per_s"],
                           rec["repeat_cross_core_ratio"]):
        if probe is not None:
            groups[common.slow_phase(probe)].append(a / b)
    return tuple(statistics.median(v) if v else None for v in (groups[False], groups[True]))


def error_record(arch, batch, impl, msg):
    return {"arch": arch, "batch_size": batch, "impl": impl, "images_per_s": None,
            "min": None, "max": None, "compile_s": None, "error": msg}


# --- runners built from a spec, in this process or in a worker process ----------------------

EVAL_IMPLS = ("jaxmnist-eval", "torch-eager-eval")


def synthetic_data(seed: int):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (TRAIN_EXAMPLES, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, TRAIN_EXAMPLES).astype(np.int32)
    return images, labels


def build_runner(spec: dict, data=None) -> Runner:
    """spec: impl, arch, batch, seed, eval_images, torch_augment, torch_threads."""
    impl, arch = spec["impl"], spec["arch"]
    images_np, labels_np = data if data is not None else synthetic_data(spec["seed"])
    rng = np.random.default_rng([spec["seed"], (IMPLS + EVAL_IMPLS).index(impl)])
    recipe = recipes.recipe_for(arch).replace(batch_size=spec["batch"])
    if impl.startswith("torch"):
        import torch

        torch.set_num_threads(spec["torch_threads"] or common.n_cores())
        images_t = common.to_nchw(images_np)
        if impl == "torch-eager-eval":
            return TorchEval(arch, images_t[: spec["eval_images"]])
        labels_t = torch.from_numpy(labels_np.astype(np.int64))
        return TorchTrain(recipe, images_t, labels_t, rng, compiled=impl == "torch-compile",
                          augment=spec["torch_augment"])
    images, labels = jax.device_put(images_np), jax.device_put(labels_np)
    if impl == "jaxmnist-eval":
        state, _ = state_lib.init_models(recipes.recipe_for(arch), (0,), 1)
        n = spec["eval_images"]
        return JaxEval(recipes.recipe_for(arch), state, images[:n], labels[:n])
    return JaxTrain(recipe, images, labels, rng, lowering=JAX_LOWERINGS[impl])


class WorkerRunner(Runner):
    """A Runner living in a child process; `timed` asks it to time n calls on its own clock."""

    def __init__(self, spec: dict):
        self.impl = spec["impl"]
        self.device = torch_device() if self.impl.startswith("torch") else None
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self._receive()
        self.images_per_call = ready["images_per_call"]
        self.torch_threads = ready.get("torch_threads")

    def _receive(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.impl} worker exited (code {self.proc.wait()}); "
                               "its error is printed above")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def timed(self, n: int, offset: int = 0) -> float:
        self.proc.stdin.write(json.dumps({"n": n, "offset": offset}) + "\n")
        self.proc.stdin.flush()
        return self._receive()["seconds"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def worker_main(spec_json: str) -> None:
    """Builds one runner and serves {"n", "offset"} requests from stdin until EOF."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else printed goes to stderr, not into the protocol
    try:
        spec = json.loads(spec_json)
        if spec["no_compile_cache"]:
            jax.config.update("jax_enable_compilation_cache", False)
        runner = build_runner(spec)
        ready = {"images_per_call": runner.images_per_call}
        if "torch" in sys.modules:
            ready["torch_threads"] = sys.modules["torch"].get_num_threads()
        proto.write(json.dumps(ready) + "\n")
        for line in sys.stdin:
            req = json.loads(line)
            proto.write(json.dumps({"seconds": runner.timed(req["n"], req["offset"])}) + "\n")
    except Exception as exc:  # reported by the parent (torch-compile may fail on a machine)
        proto.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:2000]}) + "\n")


def run(args) -> dict[str, Any]:
    cores = common.n_cores()
    machine = common.machine_info(with_jax=True)
    warning = common.busy_warning(machine["load_average"], cores)
    if warning:
        common.log(f"warning: {warning}")

    if any(i.startswith("torch") for i in args.impls):
        try:
            import torch  # noqa: F401  (only to know it is there; the workers use it)
        except ImportError as exc:
            common.log(f"torch not importable ({exc}); timing jaxmnist only")
            machine["torch_error"] = str(exc)
            args.impls = [i for i in args.impls if not i.startswith("torch")]
    machine["isolation"] = "in-process" if args.in_process else "one worker process per impl"
    data = synthetic_data(args.seed) if args.in_process else None

    def start(spec):
        if args.in_process:
            return build_runner(spec, data)
        return WorkerRunner(spec)

    def stop(runners):
        for r in runners:
            r.close()

    base = {"seed": args.seed, "eval_images": min(args.eval_images, TRAIN_EXAMPLES),
            "torch_augment": args.torch_augment, "torch_threads": args.torch_threads,
            "no_compile_cache": args.no_compile_cache}
    results: list[dict] = []
    for arch in args.archs:
        for batch in args.batch_sizes:
            common.log(f"{arch} batch {batch}: setting up {', '.join(args.impls)}")
            runners: list[Runner] = []
            errors: dict[str, str] = {}
            try:
                for impl in args.impls:
                    try:
                        runners.append(start({**base, "impl": impl, "arch": arch, "batch": batch}))
                    except Exception as exc:
                        if impl != "torch-compile":
                            raise
                        errors[impl] = f"{type(exc).__name__}: {exc}"[:2000]
                records = measure(runners, args, args.steps, errors)
            finally:
                stop(runners)
            for r in runners:
                if getattr(r, "torch_threads", None):
                    machine["torch_threads"] = r.torch_threads
            for rec in records:
                results.append({"arch": arch, "batch_size": batch, **rec})
                common.log(f"  {rec['impl']:>14}: {rec['images_per_s']:,.0f} images/s "
                           f"({rec['steps']} steps x {rec['repeats']} repeats)")
            for impl, msg in errors.items():
                results.append(error_record(arch, batch, impl, msg))
        if args.eval_images > 0:
            common.log(f"{arch} eval over {base['eval_images']} images")
            impls = [i for i, t in zip(EVAL_IMPLS, ("jaxmnist", "torch-eager")) if t in args.impls]
            runners = []
            try:
                runners = [start({**base, "impl": i, "arch": arch, "batch": EVAL_BATCH})
                           for i in impls]
                eval_args = argparse.Namespace(**{**vars(args), "warmup": min(args.warmup, 2)})
                records = measure(runners, eval_args, 1, {})
            finally:
                stop(runners)
            for rec in records:
                results.append({"arch": arch, "batch_size": EVAL_BATCH, **rec})

    machine["load_average_after"] = common.load_average()
    config = {
        "archs": args.archs, "batch_sizes": args.batch_sizes, "repeats": args.repeats,
        "steps": args.steps, "target_seconds": args.target_seconds, "warmup": args.warmup,
        "impls": args.impls, "eval_images": base["eval_images"],
        "torch_augment": args.torch_augment,
        "quick": args.quick, "synthetic_data": True, "in_process": args.in_process,
    }
    return {"machine": machine, "config": config, "results": results,
            "notes": notes(args, machine, warning)}


def notes(args, machine, warning) -> list[str]:
    out = [
        "Synthetic data: random uint8 images and labels (speed does not depend on pixel values).",
        "jaxmnist: jaxmnist.train.step.make_train_fn(recipe, 1, 'cpu'), the trainer's step under the "
        "CPU lowering (jaxmnist/nets/cpu); jaxmnist-plain: the same step under the plain lowering "
        "(nets.Net, the GPU/TPU default). Both include "
        "the batch gather from the on-device uint8 dataset, per-image random rotation, "
        "normalisation, forward/backward with BatchNorm and dropout, and the SGD update.",
    ]
    if args.torch_augment:
        out.append("torch: each step gathers its uint8 batch, rotates it (affine_grid + "
                   "grid_sample nearest, per-image angle) and normalises inside the timed region.")
    else:
        out.append("torch: timed on pre-augmented float32 NCHW batches (rotation and "
                   "normalisation done beforehand, outside the timed region): the PyTorch "
                   "numbers exclude the augmentation cost that jaxmnist's include.")
    out.append(f"torch threads: {machine.get('torch_threads', '-')}; torch-compile: "
               "torch.compile(dynamic=False) of forward + backward + SGD step.")
    out.append("compile_s: time of the warm-up calls in excess of the same number of "
               "steady-state steps (jit/torch.compile compilation; the jax persistent "
               "compilation cache can make it small on a second run).")
    out.append(f"Eval rows: one pass over the eval images in batches of {EVAL_BATCH} (both sides).")
    out.append("slow-phase repeats: repeats (all impls of one repeat share a probe) before which "
               "one CPU took more than "
               f"{common.SLOW_CROSS_CORE}x as long to overwrite 8 MB the other CPU had just read as "
               "8 MB it had read itself (benchmarks/common.py cross_core_ratio); on this "
               "project's VM such phases slow the jaxmnist step 20-25% and PyTorch's less. "
               "The medians include them; 'paired vs eager' is the median per-repeat ratio "
               "over the normal and over the slow repeats (paired_ratio_normal/_slow in the JSON).")
    if args.in_process:
        out.append("Isolation: every impl in one process (--in-process).")
    else:
        out.append("Isolation: each impl in its own worker process, timed in turn (never "
                   "concurrently); all share the environment, including glibc's transparent "
                   "huge pages, which the benchmark enables as the trainer does "
                   f"(GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}).")
    if warning:
        out.append(f"WARNING: {warning}.")
    return out


def table(report: dict) -> str:
    base = {}
    for r in report["results"]:
        if r["impl"] in REFERENCE_IMPLS and r.get("images_per_s"):
            base[(r["arch"], r["batch_size"], r["impl"].endswith("-eval"))] = r["images_per_s"]
    rows = []
    for r in report["results"]:
        if r.get("error"):
            first = r["error"].splitlines()[0][:60]
            rows.append([r["arch"], r["batch_size"], r["impl"], f"failed: {first}",
                         "-", "-", "-", "-", "-", "-"])
            continue
        ref = base.get((r["arch"], r["batch_size"], r["impl"].endswith("-eval")))
        ratio = f"{r['images_per_s'] / ref:.2f}x" if ref else "-"
        probes = [x for x in r.get("repeat_cross_core_ratio", []) if x is not None]
        slow = f"{sum(map(common.slow_phase, probes))}/{len(probes)}" if probes else "-"
        paired = "-"
        if "paired_ratio_normal" in r:
            paired = " / ".join("-" if x is None else f"{x:.2f}x"
                                for x in (r["paired_ratio_normal"], r["paired_ratio_slow"]))
        rows.append([r["arch"], r["batch_size"], r["impl"], common.fmt_num(r["images_per_s"]),
                     common.fmt_num(r["min"]), common.fmt_num(r["max"]),
                     common.fmt_num(r["compile_s"], 2), ratio, slow, paired])
    headers = ["arch", "batch", "impl", "images/s (median)", "min", "max", "compile s",
               "vs torch-eager", "slow-phase repeats", "paired vs eager: normal / slow"]
    text = common.markdown_table(headers, rows,
                                 [False, True, False, True, True, True, True, True, True, True])
    m = report["machine"]
    v = m["versions"]
    lines = [
        text, "",
        f"Machine: {common.cpu_label(m)}, {m['cores']} cores, {', '.join(m.get('device', []))}; "
        f"python {v['python']}, jax {v['jax']}, jaxlib {v['jaxlib']}, flax {v['flax']}, "
        f"optax {v['optax']}, torch {v['torch']}; XLA_FLAGS={m['XLA_FLAGS']!r}; "
        f"git {m['git']}; {m['date']}; load average {m['load_average']} -> "
        f"{m['load_average_after']}.",
    ]
    lines += [f"* {n}" for n in report["notes"]]
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=None,
                   help=f"'all' or names from {', '.join(nets.ARCHS)} (default all)")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=None,
                   help="training batch sizes (default 64 128 256 512)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default 9)")
    p.add_argument("--steps", type=int, default=None,
                   help="steps per repeat (default: chosen per impl from the warm-up so a "
                        "repeat lasts about --target-seconds)")
    p.add_argument("--target-seconds", type=float, default=None,
                   help="repeat length when --steps is not given (default 1.0)")
    p.add_argument("--min-steps", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed warm-up calls per impl (default 3; >= 1)")
    p.add_argument("--impls", nargs="+", choices=IMPLS, default=None,
                   help="implementations to time (default all three)")
    p.add_argument("--no-compile", action="store_true", help="skip torch-compile")
    p.add_argument("--eval-images", type=int, default=None,
                   help="images per inference pass (default 10000; 0 skips the eval rows)")
    p.add_argument("--torch-augment", action="store_true",
                   help="time torch with batch gather + rotation + normalisation per step")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch.set_num_threads (default: the cores this process may use)")
    p.add_argument("--no-compile-cache", action="store_true",
                   help="disable jax's persistent compilation cache (cold compile_s)")
    p.add_argument("--in-process", action="store_true",
                   help="time every impl in this one process (default: one worker process "
                        "per impl, so torch's spinning OpenMP threads and allocations cannot "
                        "slow jaxmnist, or the reverse)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--json", metavar="PATH", help="write machine info and results here")
    p.add_argument("--quick", action="store_true",
                   help="CI smoke: gap8k and fc19k at batch 128, 2 short repeats, no "
                        "torch-compile, 2000 eval images (explicit flags still win)")
    args = p.parse_args(argv)
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.archs == ["all"]:
        args.archs = list(nets.ARCHS)
    for a in args.archs:
        nets.check_arch(a)
    if args.no_compile:
        args.impls = [i for i in args.impls if i != "torch-compile"]
    if args.warmup < 1 or args.repeats < 1 or (args.steps is not None and args.steps < 1):
        p.error("--warmup, --repeats and --steps must be >= 1")
    if any(b < 1 for b in args.batch_sizes):
        p.error("--batch-sizes must be positive")
    return args


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return None
    if args.no_compile_cache:
        jax.config.update("jax_enable_compilation_cache", False)
    report = run(args)
    return common.publish(report, table(report), args.json)


if __name__ == "__main__":
    main()
