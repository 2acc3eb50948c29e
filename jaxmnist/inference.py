"""A trained checkpoint as an inference function: the one loader predict, export and serve share.

`load(workdir)` reads the run's run.json, rebuilds its network, restores the chosen
checkpoint's params and batch statistics (as `jaxmnist.evaluate` does) and returns a
`Model` whose `log_probs` maps MNIST-format uint8 images (B, 28, 28, 1) to (B, 10)
log-probabilities in eval mode, with the recipe's normalisation inside.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxmnist import checkpoint, loop, models, step as step_lib
from jaxmnist.recipes import Recipe


@dataclasses.dataclass(frozen=True)
class Model:
    """One trained network in eval mode.

    `apply(images)` is the pure jnp function (what `jaxmnist.export` serialises);
    `log_probs(images)` runs it jitted on numpy input, padded up to whole batches of
    `batch` so any number of images reuses one compiled shape.
    """

    workdir: str
    arch: str
    recipe: Recipe
    epoch: int
    meta: dict
    variables: dict
    batch: int
    net: Any = dataclasses.field(repr=False)
    _jitted: Callable = dataclasses.field(repr=False)

    def apply(self, images_u8):
        v = self.variables
        return step_lib.eval_logits(self.net.apply, v["params"], v["batch_stats"], images_u8,
                                    self.recipe)

    def log_probs(self, images_u8) -> np.ndarray:
        images = np.asarray(images_u8)
        if images.ndim == 3:
            images = images[..., None]
        if images.shape[1:] != (28, 28, 1) or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 images (B, 28, 28, 1), got {images.dtype} {images.shape}")
        n = len(images)
        pad = (-n) % self.batch
        if pad:
            images = np.concatenate([images, np.zeros((pad, 28, 28, 1), np.uint8)])
        out = [np.asarray(self._jitted(self.variables, images[i: i + self.batch]))
               for i in range(0, len(images), self.batch)]
        return np.concatenate(out)[:n] if out else np.zeros((0, 10), np.float32)

    def warm_up(self) -> None:
        """Compiles the batch shape now, so the first real request does not wait for it."""
        self.log_probs(np.zeros((1, 28, 28, 1), np.uint8))

    @property
    def params_count(self) -> int:
        return models.count_params(self.variables["params"])

    @property
    def test_accuracy(self) -> float | None:
        """Test accuracy (%) recorded when this checkpoint was saved."""
        acc = self.meta.get("test_accuracy")
        if isinstance(acc, (list, tuple)):
            acc = acc[0] if acc else None
        return None if acc is None else float(acc)


def read_run(workdir: str) -> dict:
    run_file = os.path.join(workdir, "run.json")
    if not os.path.isfile(run_file):
        raise loop.RunError(
            f"{workdir} holds no jaxmnist run (no run.json); pass the --workdir of a training run")
    try:
        with open(run_file) as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise loop.RunError(f"{run_file} is unreadable ({exc})") from None


def choose_epoch(manager, workdir: str, step: int | None, best: bool) -> int:
    steps = sorted(manager.all_steps())
    if not steps:
        raise checkpoint.CheckpointError(f"{workdir} has no checkpoints yet; train it first")
    if best:
        return checkpoint.best_epoch(manager)
    if step is None:
        return steps[-1]
    if step not in steps:
        raise checkpoint.CheckpointError(f"no checkpoint for epoch {step} in {workdir}; kept: {steps}")
    return step


def load(workdir: str, step: int | None = None, best: bool = False, model: int = 0,
         batch: int = step_lib.EVAL_BATCH, kernels: str | None = None) -> Model:
    """The checkpoint of `workdir` (latest, epoch `step`, or best by validation).

    `model` picks one seed of a multi-seed run. `batch` is the compiled batch size:
    the eval batch for bulk prediction, 1 for a server answering one drawing at a time.
    `kernels`: the lowering (None: $JAXMNIST_KERNELS, else auto, as `evaluate` uses);
    export passes "plain", the standard ops every platform compiles.
    """
    ident = read_run(workdir)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckpt_dir):
        raise checkpoint.CheckpointError(f"{workdir} has no checkpoints yet; train it first")
    with _quiet_orbax():
        return _load(workdir, ident, ckpt_dir, step, best, model, batch, kernels)


@contextlib.contextmanager
def _quiet_orbax():
    """Orbax warns through absl that a read-only manager will not save; true and noise here."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _load(workdir, ident, ckpt_dir, step, best, model, batch, kernels) -> Model:
    manager = checkpoint.open_manager(ckpt_dir, read_only=True)
    epoch = choose_epoch(manager, workdir, step, best)
    recipe = Recipe(**ident["recipe"])
    seeds = tuple(ident["seeds"])
    if not 0 <= model < len(seeds):
        raise ValueError(f"--model must be in [0, {len(seeds)})")
    # The restore template only needs the trees' shapes, which both lowerings share.
    config = loop.RunConfig(recipe=recipe, seeds=seeds, kernels="plain")
    state, keys = loop.init_models(config, math.ceil(ident["train_examples"] / recipe.batch_size))
    tree, meta = checkpoint.restore(manager, epoch, checkpoint.state_tree(state, keys))
    variables = {"params": step_lib.weights_for_eval(tree["params"], tree["opt_state"]),
                 "batch_stats": tree["batch_stats"]}
    if len(seeds) > 1:  # stacked on a leading model axis
        variables = jax.tree_util.tree_map(lambda x: x[model], variables)
        meta = {**meta, "test_accuracy": _pick(meta.get("test_accuracy"), model),
                "val_accuracy": _pick(meta.get("val_accuracy"), model)}
    variables = jax.tree_util.tree_map(jnp.asarray, variables)
    net = models.build(recipe.arch, recipe.init, recipe.dropout, kernels=kernels)
    jitted = jax.jit(functools.partial(_log_probs, net.apply, recipe))
    return Model(workdir=workdir, arch=recipe.arch, recipe=recipe, epoch=epoch, meta=meta,
                 variables=variables, batch=batch, net=net, _jitted=jitted)


def _log_probs(apply_fn, recipe, variables, images_u8):
    return step_lib.eval_logits(apply_fn, variables["params"], variables["batch_stats"],
                                images_u8, recipe)


def _pick(value, i):
    return value[i] if isinstance(value, (list, tuple)) and len(value) > i else value
