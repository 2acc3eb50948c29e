"""A run's training state: TrainState, the optimiser, K models stacked, and what a
checkpoint holds of it.

Randomness is a pure function of the seed: model k's key is PRNGKey(seed_k), split into
an init key and a run key (the run key's epoch/step folds are `loop.epoch_plan`'s).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
import optax
from flax.training import train_state

from jaxmnist import nets
from jaxmnist.train.recipes import Recipe, momentum_schedule, schedule


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
    variables = nets.init_variables(model, key)
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        tx=make_optimizer(recipe, steps_per_epoch),
    )


def _stack(trees):
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def init_models(recipe: Recipe, seeds: Sequence[int], steps_per_epoch: int,
                lowering: str | None = None):
    """(state, run_keys): one TrainState, its arrays stacked on a leading model axis when
    there are several seeds (one model keeps unstacked arrays, as its checkpoints do)."""
    model = nets.build(recipe.arch, recipe.init, recipe.dropout, lowering=lowering)
    states, keys = [], []
    for seed in seeds:
        init_key, run_key = jax.random.split(jax.random.PRNGKey(seed))
        states.append(create_state(model, recipe, init_key, steps_per_epoch))
        keys.append(run_key)
    if len(seeds) == 1:
        return states[0], keys[0]
    arrays = [(s.step, s.params, s.batch_stats, s.opt_state) for s in states]
    step, params, batch_stats, opt_state = _stack(arrays)
    stacked = states[0].replace(step=step, params=params, batch_stats=batch_stats, opt_state=opt_state)
    return stacked, jnp.stack(keys)


def checkpoint_tree(state: TrainState, keys) -> dict[str, Any]:
    """What a checkpoint holds: everything a TrainState carries except its static
    functions, and the models' run keys."""
    return {
        "params": state.params,
        "batch_stats": state.batch_stats,
        "opt_state": state.opt_state,
        "step": jnp.asarray(state.step),
        "rng": keys,
    }


def from_checkpoint(state: TrainState, tree: dict) -> tuple[TrainState, Any]:
    """(state, run_keys) with a restored checkpoint_tree's values."""
    state = state.replace(params=tree["params"], batch_stats=tree["batch_stats"],
                          opt_state=tree["opt_state"], step=tree["step"])
    return state, jnp.asarray(np.asarray(tree["rng"]))  # host-side, as at init


def for_evaluation(model: nn.Module, tree: dict) -> TrainState:
    """A TrainState that `step.make_eval_fn` scores: a restored checkpoint_tree's
    weights and statistics under `model`'s lowering, without an optimiser."""
    return TrainState(step=tree["step"], apply_fn=model.apply, params=tree["params"], tx=None,
                      opt_state=tree["opt_state"], batch_stats=tree["batch_stats"])


def checkpoint_template(recipe: Recipe, seeds: Sequence[int], train_examples: int) -> dict:
    """The checkpoint_tree's shapes and dtypes for a run, computed abstractly
    (jax.eval_shape: nothing is initialised or compiled): a restore target."""
    steps_per_epoch = math.ceil(train_examples / recipe.batch_size)

    def make():
        return checkpoint_tree(*init_models(recipe, seeds, steps_per_epoch, "plain"))

    return jax.eval_shape(make)
