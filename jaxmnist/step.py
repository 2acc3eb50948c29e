"""TrainState, the optimiser, and the one train step every caller uses.

The trainer, the multi-seed runs (vmap over a leading model axis) and the benchmarks
all run `train_step`, under either lowering of the network (the TrainState's apply_fn): augmentation, forward, backward, BatchNorm update and optimiser
update in one jitted function, fed uint8 images straight from the on-device dataset.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import flax.linen as nn
import optax
from flax.training import train_state

from jaxmnist import augment, kernels as kernels_lib, models
from jaxmnist.recipes import Recipe, momentum_schedule, rotation_schedule, schedule


class TrainState(train_state.TrainState):
    batch_stats: Any = None


def make_optimizer(recipe: Recipe, steps_per_epoch: int) -> optax.GradientTransformation:
    """torch.optim.SGD: grad += wd * param (coupled L2), then momentum, then -lr * buf."""
    lr = schedule(recipe, steps_per_epoch)
    momentum = momentum_schedule(recipe, steps_per_epoch)
    if momentum is not None:  # cycled momentum: a hyperparameter fed per step
        sgd = optax.inject_hyperparams(optax.sgd, static_args=("nesterov",))(
            learning_rate=lr, momentum=momentum, nesterov=recipe.nesterov)
    else:
        sgd = optax.sgd(lr, momentum=recipe.momentum or None, nesterov=recipe.nesterov)
    parts = [optax.add_decayed_weights(recipe.weight_decay)] if recipe.weight_decay else []
    parts.append(sgd)
    if recipe.bn_lr != 1.0:  # SGD's update is linear in lr: scaling it is a per-parameter lr
        parts.append(optax.masked(optax.scale(recipe.bn_lr), batchnorm_mask))
    if recipe.ema:
        parts.append(average_weights(recipe.ema))
    return parts[0] if len(parts) == 1 else optax.chain(*parts)


class WeightAverage(NamedTuple):
    ema: Any


def average_weights(decay: float) -> optax.GradientTransformation:
    """Keeps ema = decay * ema + (1 - decay) * (params + updates) in the optimiser state,
    leaving the updates alone (optax.ema averages the updates, not the weights). In the
    optimiser state, the average is checkpointed, resumed and split over models and
    devices with everything else there, by the code that already does so."""

    def init(params):  # a copy: the train step donates the state, params and average apart
        return WeightAverage(jax.tree_util.tree_map(lambda p: jnp.array(p, copy=True), params))

    def update(updates, state, params):
        new = optax.apply_updates(params, updates)
        return updates, WeightAverage(optax.incremental_update(new, state.ema, 1.0 - decay))

    return optax.GradientTransformation(init, update)


def weights_for_eval(params, opt_state):
    """The weights that evaluate: the recipe's average (`ema`) where it keeps one."""
    found = [s for s in jax.tree_util.tree_leaves(
        opt_state, is_leaf=lambda x: isinstance(x, WeightAverage)) if isinstance(s, WeightAverage)]
    return found[0].ema if found else params


def batchnorm_mask(params):
    """True on the BatchNorm scales and biases (the modules every network names bn1, bn2, ...)."""
    return {name: jax.tree_util.tree_map(lambda _: name.startswith("bn"), sub)
            for name, sub in params.items()}


def create_state(model: nn.Module, recipe: Recipe, key, steps_per_epoch: int) -> TrainState:
    variables = models.init_variables(model, key)
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        tx=make_optimizer(recipe, steps_per_epoch),
    )


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


def make_step(recipe: Recipe, n_models: int, kernels: str | None = None,
              steps_per_epoch: int | None = None):
    """train_step for one model, or vmapped over a leading model axis of state/data/keys.

    Under the plain lowering K models are one plain vmap (grouped convolutions, which
    accelerators batch well); under the CPU lowering each model runs as its own copy of
    the one-model step (`jaxmnist.cpu.models_side_by_side`).
    """
    step = functools.partial(train_step, recipe=recipe, steps_per_epoch=steps_per_epoch)
    if n_models == 1:
        return step
    if kernels_lib.resolve(kernels) == "cpu":
        from jaxmnist.cpu import models_side_by_side

        step = models_side_by_side(step)
    return jax.vmap(step)


def make_train_fn(recipe: Recipe, n_models: int, kernels: str | None = None,
                  steps_per_call: int = 1, layout=None, steps_per_epoch: int | None = None):
    """The jitted step fed from the on-device dataset: gathers batch `idx`, then steps.

    idx: (B,) or (K, B) indices into images/labels; key: (2,) or (K, 2). With
    steps_per_call = S > 1 idx and key carry a leading axis of S steps, run in order by a
    lax.scan inside the one call, and the metrics come back stacked (S, ...): an
    accelerator then is not bound by one host dispatch per ~1 ms step. On CPU one step
    per call is the default: a scan over a chunk of steps measured 2-3x slower there (and
    compiled 2x longer), while per-step dispatch costs microseconds against a step of
    tens of milliseconds, and stays asynchronous.

    On a mesh (`jaxmnist.parallel.Layout`) the inputs arrive sharded and the function
    pins its outputs: the state where it came from, the metrics replicated, so every
    process can read them.
    """
    step = make_step(recipe, n_models, kernels, steps_per_epoch)
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
