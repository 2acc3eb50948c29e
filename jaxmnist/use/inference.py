"""A trained checkpoint as an inference function: the one loader predict, export and serve share.

`restore(workdir)` reads a run's identity and restores the chosen checkpoint, read-only
(`jaxmnist.rundir`); `load(workdir)` rebuilds its network around it and returns a
`Model` whose `log_probs` maps MNIST-format uint8 images (B, 28, 28, 1) to (B, 10)
log-probabilities in eval mode, with the recipe's normalisation inside.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxmnist import nets
from jaxmnist.messages import to_stderr
from jaxmnist.rundir import RunDir
from jaxmnist.train import state as state_lib, step as step_lib
from jaxmnist.train.recipes import Recipe



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
        return nets.count_params(self.variables["params"])

    @property
    def test_accuracy(self) -> float | None:
        """Test accuracy (%) recorded when this checkpoint was saved."""
        acc = self.meta.get("test_accuracy")
        if isinstance(acc, (list, tuple)):
            acc = acc[0] if acc else None
        return None if acc is None else float(acc)


@dataclasses.dataclass(frozen=True)
class Restored:
    """One checkpoint of a run, read-only: its identity, recipe and state tree."""

    workdir: str
    ident: dict
    recipe: Recipe
    epoch: int
    tree: dict
    meta: dict
    unreadable: list  # newer epochs that could not be read (the latest was asked for)

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(self.ident["seeds"])


def restore(workdir: str, epoch: int | None = None, best: bool = False,
            log: Callable[[str], Any] = to_stderr) -> Restored:
    """The checkpoint of `workdir` at `epoch`, or best by validation, or the latest
    readable one, restored onto this machine's first device without changing the workdir
    (the one loader evaluate, predict, export and serve share)."""
    rd = RunDir(workdir, read_only=True)
    ident = rd.identity()
    recipe = Recipe(**ident["recipe"])
    template = state_lib.checkpoint_template(recipe, ident["seeds"], ident["train_examples"])
    epoch, tree, meta, unreadable = rd.restore_chosen(template, epoch, best, log)
    return Restored(workdir, ident, recipe, epoch, tree, meta, unreadable)


def load(workdir: str, epoch: int | None = None, best: bool = False, model: int = 0,
         batch: int = step_lib.EVAL_BATCH, lowering: str | None = None) -> Model:
    """The checkpoint of `workdir` (latest, `epoch`, or best by validation) as a Model.

    `model` picks one seed of a multi-seed run. `batch` is the compiled batch size:
    the eval batch for bulk prediction, 1 for a server answering one drawing at a time.
    `lowering`: None ($JAXMNIST_LOWERING, else auto, as `evaluate` uses); export passes
    "plain", the standard ops every platform compiles.
    """
    got = restore(workdir, epoch, best)
    recipe, seeds, meta = got.recipe, got.seeds, got.meta
    if not 0 <= model < len(seeds):
        raise ValueError(f"--model must be in [0, {len(seeds)})")
    variables = {"params": state_lib.weights_for_eval(got.tree["params"], got.tree["opt_state"]),
                 "batch_stats": got.tree["batch_stats"]}
    if len(seeds) > 1:  # stacked on a leading model axis
        variables = jax.tree_util.tree_map(lambda x: x[model], variables)
        meta = {**meta, "test_accuracy": _pick(meta.get("test_accuracy"), model),
                "val_accuracy": _pick(meta.get("val_accuracy"), model)}
    variables = jax.tree_util.tree_map(jnp.asarray, variables)
    net = nets.build(recipe.arch, recipe.init, recipe.dropout, lowering=lowering)
    jitted = jax.jit(functools.partial(_log_probs, net.apply, recipe))
    return Model(workdir=workdir, arch=recipe.arch, recipe=recipe, epoch=got.epoch, meta=meta,
                 variables=variables, batch=batch, net=net, _jitted=jitted)


def _log_probs(apply_fn, recipe, variables, images_u8):
    return step_lib.eval_logits(apply_fn, variables["params"], variables["batch_stats"],
                                images_u8, recipe)


def _pick(value, i):
    return value[i] if isinstance(value, (list, tuple)) and len(value) > i else value
