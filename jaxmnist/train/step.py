"""The one train step every caller uses, and the evaluation every score goes through.

The trainer, the multi-seed runs (vmap over a leading model axis) and the benchmarks all
run `train_step`, under either lowering of the network (the TrainState's apply_fn):
augmentation, forward, backward, BatchNorm update and optimiser update in one jitted
function, fed uint8 images straight from the on-device dataset.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxmnist.data import augment
from jaxmnist.nets import lowering as lowering_lib
from jaxmnist.train.recipes import Recipe, rotation_schedule
from jaxmnist.train.state import TrainState, weights_for_eval


def nll(log_probs, labels):
    return -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]


def loss_of(log_probs, labels, recipe: Recipe):
    """Per-example training loss: NLL, or with label smoothing e, (1 - e) * NLL plus e
    times the mean over classes of -log p (cross-entropy against smoothed one-hot labels)."""
    e = recipe.label_smoothing
    if not e:
        return nll(log_probs, labels)
    return (1.0 - e) * nll(log_probs, labels) - e * jnp.mean(log_probs, axis=-1)


def train_step(state: TrainState, images, labels, key, *, recipe: Recipe,
               steps_per_epoch: int | None = None):
    """One SGD step on a uint8 batch (B, 28, 28, 1); returns (state, (loss, correct)).
    steps_per_epoch is needed only by a scheduled rotation range (rotation_warmup)."""
    rot_key, drop_key = jax.random.split(key)
    degrees = recipe.rotation
    if recipe.rotation_warmup:
        if steps_per_epoch is None:
            raise ValueError("rotation_warmup needs the step's steps_per_epoch")
        degrees = rotation_schedule(recipe, steps_per_epoch)(state.step)
    x = augment.random_rotate(rot_key, images, degrees)
    x = augment.normalize(x, recipe.mean, recipe.std)

    def loss_fn(params):
        log_probs, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            x,
            train=True,
            rngs={"dropout": drop_key},
            mutable=["batch_stats"],
        )
        return jnp.mean(loss_of(log_probs, labels, recipe)), (updates["batch_stats"], log_probs)

    (loss, (batch_stats, log_probs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params
    )
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    correct = jnp.sum(jnp.argmax(log_probs, -1) == labels)
    return state, (loss, correct)


def eval_logits(apply_fn, params, batch_stats, images, recipe: Recipe):
    """Eval-mode log-probabilities of uint8 images: every evaluation, prediction, export and
    server answer goes through here. With test-time augmentation the log of the mean of
    the views' probabilities (augment.tta_views), so it stays a distribution."""
    views = augment.tta_views(images, recipe.tta_rotation)
    x = augment.normalize(views, recipe.mean, recipe.std)
    logp = apply_fn({"params": params, "batch_stats": batch_stats}, x, train=False)
    n_views = views.shape[0] // images.shape[0]
    if n_views == 1:
        return logp
    logp = logp.reshape(n_views, images.shape[0], logp.shape[-1])
    return jax.nn.logsumexp(logp, axis=0) - jnp.log(float(n_views))


def make_step(recipe: Recipe, n_models: int, lowering: str | None = None,
              steps_per_epoch: int | None = None):
    """train_step for one model, or vmapped over a leading model axis of state/data/keys.

    Under the plain lowering K models are one plain vmap (grouped convolutions, which
    accelerators batch well); under the CPU lowering each model runs as its own copy of
    the one-model step (`jaxmnist.nets.cpu.models_side_by_side`).
    """
    step = functools.partial(train_step, recipe=recipe, steps_per_epoch=steps_per_epoch)
    if n_models == 1:
        return step
    if lowering_lib.resolve(lowering) == "cpu":
        from jaxmnist.nets.cpu import models_side_by_side

        step = models_side_by_side(step)
    return jax.vmap(step)


def make_train_fn(recipe: Recipe, n_models: int, lowering: str | None = None,
                  steps_per_call: int = 1, layout=None, steps_per_epoch: int | None = None):
    """The jitted step fed from the on-device dataset: gathers batch `idx`, then steps.

    idx: (B,) or (K, B) indices into images/labels; key: (2,) or (K, 2). With
    steps_per_call = S > 1 idx and key carry a leading axis of S steps, run in order by a
    lax.scan inside the one call, and the metrics come back stacked (S, ...): an
    accelerator then is not bound by one host dispatch per ~1 ms step. On CPU one step
    per call is the default: a scan over a chunk of steps measured 2-3x slower there (and
    compiled 2x longer), while per-step dispatch costs microseconds against a step of
    tens of milliseconds, and stays asynchronous.

    On a mesh (`jaxmnist.train.parallel.Layout`) the inputs arrive sharded and the function
    pins its outputs: the state where it came from, the metrics replicated, so every
    process can read them.
    """
    step = make_step(recipe, n_models, lowering, steps_per_epoch)
    pinned = {} if layout is None or layout.mesh is None else {
        "out_shardings": (layout.state_sharding, layout.replicated)}

    def one(state, images, labels, idx, key):
        return step(state, images[idx], labels[idx], key)

    def many(state, images, labels, idx, keys):
        return jax.lax.scan(lambda s, xs: one(s, images, labels, *xs), state, (idx, keys))

    fn = one if steps_per_call == 1 else many
    if layout is not None and layout.models > 1:
        fn = _models_apart(fn, layout, scanned=steps_per_call > 1)
    return jax.jit(fn, donate_argnums=0, **pinned)


def _models_apart(fn, layout, scanned: bool):
    """fn with each device group running only its own K/models models (shard_map, manual
    over the `models` axis; `data` stays automatic). The models never communicate, and
    XLA's partitioner, left to split the vmapped (grouped) convolutions over models
    itself, produces invalid convolutions (XLA:CPU, jax 0.10: "output feature dimension
    not divisible by feature_group_count")."""
    from jax.sharding import PartitionSpec as P

    lead = (None,) if scanned else ()
    models = P(*lead, "models")
    return jax.shard_map(fn, mesh=layout.mesh, axis_names={"models"}, check_vma=False,
                         in_specs=(P("models"), P(), P(), models, models),
                         out_specs=(P("models"), models))


# Evaluation batch: small enough that a batch's activations stay in cache. Measured over
# the 10,000 test images (in-process, interleaved, 2-core EPYC, 2026-11-22), images/s at
# batch 200 vs 1000: fc19k 25.0k vs 22.7k, fc16k 25.8k vs 21.8k, gap7k 51.4k vs 33.8k,
# gap8k 44.0k vs 35.1k, gap9k 60.5k vs 50.4k; batch 100 was no better.
EVAL_BATCH = 200


def make_eval_fn(recipe: Recipe, n_models: int, batch: int = EVAL_BATCH, layout=None):
    """Predictions and per-example NLL for every example (padding is masked out later).

    The dataset is padded up to a multiple of `batch` so every one of the N examples is
    scored with one compiled shape; with K models the data is shared (vmap in_axes None).
    On a mesh each eval batch is split over the `data` axis (when it divides) and the
    results come back replicated.
    """
    split = None
    if layout is not None and layout.mesh is not None and batch % layout.data == 0:
        from jax.sharding import NamedSharding, PartitionSpec

        split = NamedSharding(layout.mesh, PartitionSpec(None, "data"))

    def one_model(apply_fn, params, batch_stats, images, labels):
        n = images.shape[0]
        b = min(batch, n)
        pad = (-n) % b
        images = jnp.pad(images, ((0, pad), (0, 0), (0, 0), (0, 0)))
        labels = jnp.pad(labels, (0, pad))

        def body(_, xy):
            x, y = xy
            logp = eval_logits(apply_fn, params, batch_stats, x, recipe)
            return None, (jnp.argmax(logp, -1).astype(jnp.int32), nll(logp, y))

        xs = (images.reshape(-1, b, *images.shape[1:]), labels.reshape(-1, b))
        if split is not None and b == batch:
            xs = jax.lax.with_sharding_constraint(xs, split)
        _, (pred, loss) = jax.lax.scan(body, None, xs)
        return pred.reshape(-1)[:n], loss.reshape(-1)[:n]

    def fn(state: TrainState, images, labels):
        f = functools.partial(one_model, state.apply_fn)
        if n_models > 1:
            f = jax.vmap(f, in_axes=(0, 0, None, None))
        return f(weights_for_eval(state.params, state.opt_state), state.batch_stats, images, labels)

    if layout is None or layout.mesh is None:
        return jax.jit(fn)
    if layout.models > 1:
        from jax.sharding import PartitionSpec as P

        fn = jax.shard_map(fn, mesh=layout.mesh, axis_names={"models"}, check_vma=False,
                           in_specs=(P("models"), P(), P()), out_specs=P("models"))
    return jax.jit(fn, out_shardings=layout.replicated)


@dataclasses.dataclass
class Evaluation:
    predictions: np.ndarray  # (N,) or (K, N)
    losses: np.ndarray

    def accuracy(self, labels) -> np.ndarray:
        return 100.0 * np.mean(self.predictions == np.asarray(labels), axis=-1)

    def correct(self, labels) -> np.ndarray:
        return np.sum(self.predictions == np.asarray(labels), axis=-1)

    def loss(self) -> np.ndarray:
        return np.mean(self.losses, axis=-1)


def on_device(split, layout=None) -> tuple:
    """A split's arrays on the device, or replicated on every device of a mesh."""
    if layout is None:
        return jnp.asarray(split.images), jnp.asarray(split.labels)
    return layout.put_replicated(split.images), layout.put_replicated(split.labels)


def evaluate(eval_fn, state, split) -> Evaluation:
    """Scores every example of a split (host Split, or its on_device() arrays)."""
    images, labels = split if isinstance(split, tuple) else on_device(split)
    pred, loss = eval_fn(state, images, labels)
    return Evaluation(np.asarray(pred), np.asarray(loss))
