"""The optimiser (torch SGD semantics, per-parameter lr, weight average) and the K-model state."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmnist import nets
from jaxmnist.data import augment
from jaxmnist.train import loop, recipes, state as state_lib, step
from runs import torch_sgd


@pytest.mark.parametrize("arch", ["gap8k", "fc19k"])
def test_optimizer_matchestorch_sgd(arch):
    recipe = recipes.recipe_for(arch).replace(step_size=1, gamma=0.5)
    spe = 2
    tx = state_lib.make_optimizer(recipe, spe)
    p = jnp.array([1.0, -2.0, 0.5])
    grads = [jnp.array([0.1, 0.2, -0.3]) * (t + 1) for t in range(5)]
    state, x = tx.init(p), p
    for g in grads:
        upd, state = tx.update(g, state, x)
        x = optax.apply_updates(x, upd)
    expected = torch_sgd(
        np.asarray(p), [np.asarray(g) for g in grads],
        lambda t: recipe.lr * 0.5 ** (t // spe), recipe.momentum, recipe.nesterov, recipe.weight_decay,
    )
    np.testing.assert_allclose(np.asarray(x), expected, rtol=1e-6)




def test_bn_lr_scales_the_batchnorm_updates_only():
    """bn_lr = c: the BatchNorm scales' and biases' updates (momentum, Nesterov and weight
    decay included) are c times those of bn_lr = 1; every other parameter's are unchanged."""
    recipe = recipes.SPEED["gap8k"]
    params = {"bn1": {"scale": jnp.ones(3), "bias": jnp.zeros(3)},
              "conv1": {"kernel": jnp.full((2, 3), 0.5)}}
    grads = [jax.tree_util.tree_map(lambda p, t=t: jnp.cos(p + t) + t, params) for t in range(4)]

    def updates(bn_lr):
        tx = state_lib.make_optimizer(recipe.replace(bn_lr=bn_lr), 10)
        state, out = tx.init(params), []
        for g in grads:
            u, state = tx.update(g, state, params)
            out.append(u)
        return out

    for base, scaled in zip(updates(1.0), updates(3.0)):
        for name in ("scale", "bias"):
            np.testing.assert_allclose(scaled["bn1"][name], 3.0 * base["bn1"][name], rtol=1e-6)
        np.testing.assert_array_equal(scaled["conv1"]["kernel"], base["conv1"]["kernel"])
    tree = nets.init_variables(nets.build("gap8k"), jax.random.PRNGKey(0))["params"]
    masked = {k for k, v in state_lib.batchnorm_mask(tree).items() if all(jax.tree_util.tree_leaves(v))}
    assert masked == {f"bn{i}" for i in range(1, 8)}
    with pytest.raises(ValueError, match="--bn-lr"):
        recipe.replace(bn_lr=0.0).validate()




def test_ema_keeps_the_average_of_the_weights_after_each_step():
    """ema = d: after step t, ema_t = d * ema_(t-1) + (1 - d) * params_t, ema_0 = the initial
    weights; the updates (so the training) are those without it; evaluation reads the average."""
    recipe, d = recipes.SPEED["gap8k"], 0.75
    params = {"bn1": {"scale": jnp.ones(3)}, "conv1": {"kernel": jnp.full((2, 3), 0.5)}}
    with_ema = state_lib.make_optimizer(recipe.replace(ema=d), 10)
    without = state_lib.make_optimizer(recipe, 10)
    s_ema, s_plain, p, want = with_ema.init(params), without.init(params), params, params
    for t in range(4):
        g = jax.tree_util.tree_map(lambda x: jnp.sin(x + t) + t, p)
        u_ema, s_ema = with_ema.update(g, s_ema, p)
        u, s_plain = without.update(g, s_plain, p)
        jax.tree_util.tree_map(np.testing.assert_array_equal, u_ema, u)
        p = optax.apply_updates(p, u)
        want = jax.tree_util.tree_map(lambda e, x: d * e + (1 - d) * x, want, p)
        got = state_lib.weights_for_eval(p, s_ema)
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, want)
    assert state_lib.weights_for_eval(p, s_plain) is p
    with pytest.raises(ValueError, match="--ema"):
        recipe.replace(ema=1.0).validate()

