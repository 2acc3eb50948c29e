"""Recipes, variants and their schedules (learning rate, momentum, rotation range)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmnist import nets
from jaxmnist.data import augment
from jaxmnist.train import command as train, loop, recipes, state as state_lib, step
from runs import torch_sgd


def test_default_recipe_is_the_tuned_one_where_it_exists():
    for arch in nets.ARCHS:
        default = train.recipe_from_args(train.parse_args(["--arch", arch]))
        seed = train.recipe_from_args(train.parse_args(["--arch", arch, "--variant", "seed"]))
        assert seed == recipes.RECIPES[arch]
        assert default == recipes.TUNED.get(arch, recipes.RECIPES[arch])
        override = train.recipe_from_args(train.parse_args(["--arch", arch, "--lr", "0.3"]))
        assert override == default.replace(lr=0.3)
    assert recipes.TUNED["gap8k"].lr != recipes.RECIPES["gap8k"].lr  # 003 states lr 0.01


def test_dropout_override_sets_every_dropout_layer():
    recipe = train.recipe_from_args(train.parse_args(["--arch", "gap7k", "--dropout", "0.1"]))
    assert recipe.dropout == 0.1
    net = nets.build("gap7k", dropout=0.1)
    rates = {layer.rate for layer in net.spec if type(layer).__name__ == "Dropout"}
    assert rates == {0.1}
    assert {layer.rate for layer in nets.build("gap7k").spec
            if type(layer).__name__ == "Dropout"} == {0.05}
    params = lambda m: nets.count_params(nets.init_variables(m, jax.random.PRNGKey(0))["params"])
    assert params(net) == params(nets.build("gap7k")) == nets.EXPECTED_PARAMS["gap7k"]


def test_step_lr_at_boundaries():
    spe = 469
    fc19k = state_lib.make_optimizer(recipes.recipe_for("fc19k"), spe)  # 0.025, x0.15 every 9
    sched = recipes.schedule(recipes.recipe_for("fc19k"), spe)
    assert float(sched(0)) == pytest.approx(0.025, rel=1e-7)
    assert float(sched(9 * spe - 1)) == pytest.approx(0.025, rel=1e-7)
    assert float(sched(9 * spe)) == pytest.approx(0.025 * 0.15, rel=1e-6)
    assert float(sched(18 * spe - 1)) == pytest.approx(0.025 * 0.15, rel=1e-6)
    assert float(sched(18 * spe)) == pytest.approx(0.025 * 0.15**2, rel=1e-6)
    g7 = recipes.schedule(recipes.recipe_for("gap7k"), spe)  # 0.02, x0.1 every 6
    assert [float(g7(e * spe)) for e in (0, 5, 6, 11, 12)] == pytest.approx(
        [0.02, 0.02, 0.002, 0.002, 0.0002], rel=1e-6
    )
    assert float(g7(6 * spe - 1)) == pytest.approx(0.02, rel=1e-7)
    g9 = recipes.schedule(recipes.recipe_for("gap9k"), spe)  # constant 0.1
    assert float(g9(0)) == float(g9(14 * spe)) == pytest.approx(0.1, rel=1e-7)
    assert fc19k is not None



@pytest.mark.parametrize("epochs,spe,pct", [(3, 10, 0.3), (15, 469, 0.2), (2, 7, 0.5)])
def test_onecycle_matches_torch(epochs, spe, pct):
    """lr and momentum at every step equal torch's OneCycleLR (defaults), and the optimiser
    built from them takes torch.optim.SGD's steps."""
    torch = pytest.importorskip("torch")
    recipe = recipes.recipe_for("gap7k").replace(schedule="onecycle", lr=0.05, pct_start=pct,
                                                  epochs=epochs, weight_decay=1e-4)
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=recipe.lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, epochs=epochs,
                                                steps_per_epoch=spe, pct_start=pct)
    want_lr, want_m = [], []
    for _ in range(epochs * spe):
        want_lr.append(opt.param_groups[0]["lr"])
        want_m.append(opt.param_groups[0]["momentum"])
        opt.step()
        sched.step()
    counts = jnp.arange(epochs * spe)
    got_lr = jax.vmap(recipes.schedule(recipe, spe))(counts)
    got_m = jax.vmap(recipes.momentum_schedule(recipe, spe))(counts)
    np.testing.assert_allclose(np.asarray(got_lr), want_lr, rtol=2e-5, atol=1e-9)
    np.testing.assert_allclose(np.asarray(got_m), want_m, rtol=1e-5)
    assert float(got_lr[round(pct * epochs * spe) - 1]) == pytest.approx(recipe.lr, rel=1e-4)

    steps = min(12, epochs * spe)
    tx = state_lib.make_optimizer(recipe, spe)
    p = jnp.array([1.0, -2.0, 0.5])
    grads = [jnp.array([0.1, 0.2, -0.3]) * (t + 1) for t in range(steps)]
    state, x = tx.init(p), p
    for g in grads:
        upd, state = tx.update(g, state, x)
        x = optax.apply_updates(x, upd)
    expected = torch_sgd(np.asarray(p), [np.asarray(g) for g in grads], want_lr.__getitem__,
                          want_m.__getitem__, recipe.nesterov, recipe.weight_decay)
    np.testing.assert_allclose(np.asarray(x), expected, rtol=1e-5)


def test_triangle_schedule_exact_values():
    """Linear 0 -> lr over round(pct_start * total) steps, then linear to 0 at the last step."""
    recipe = recipes.SPEED["gap8k"].replace(schedule="triangle", lr=0.2, epochs=2, pct_start=0.25)
    fn = recipes.schedule(recipe, 10)  # 20 steps: up over 5, down over 15
    got = np.asarray(jax.vmap(fn)(jnp.arange(21)))
    want = [0.2 * t / 5 for t in range(5)] + [0.2 * (1 - (t - 5) / 15) for t in range(5, 21)]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert recipes.momentum_schedule(recipe, 10) is None


def test_bad_schedule_is_refused():
    with pytest.raises(ValueError, match="--schedule"):
        recipes.recipe_for("gap7k").replace(schedule="cosine").validate()
    with pytest.raises(ValueError, match="--pct-start"):
        recipes.recipe_for("gap7k").replace(schedule="onecycle", pct_start=1.0).validate()



def test_rotation_warmup_grows_the_range_linearly_then_holds():
    """rotation_warmup = w: the range is rotation * t / round(w * total) up to that step,
    then rotation."""
    recipe = recipes.SPEED["gap8k"].replace(epochs=2, rotation_warmup=0.25)
    fn = recipes.rotation_schedule(recipe, 10)  # 20 steps: ramp over 5
    got = np.asarray(jax.vmap(fn)(jnp.arange(8)))
    np.testing.assert_allclose(got, [7.0 * t / 5 for t in range(5)] + [7.0] * 3, rtol=1e-6)
    assert recipes.rotation_schedule(recipes.SPEED["gap8k"], 10) is None
    with pytest.raises(ValueError, match="--rotation-warmup"):
        recipe.replace(rotation_warmup=1.5).validate()


@pytest.mark.slow
def test_rotation_warmup_steps_rotate_as_its_range_says(mnist):
    """A step at t = 0 of a warm-up trains on unrotated images, one past the ramp on the
    full range with the same angles as without the warm-up."""
    recipe = recipes.SPEED["gap8k"].replace(epochs=2, rotation_warmup=0.25)  # ramp over 5 steps

    images, labels = jnp.asarray(mnist.train.images[:64]), jnp.asarray(mnist.train.labels[:64])
    key = jax.random.PRNGKey(3)

    def one_step(r, at_step):
        state, _ = state_lib.init_models(r, (0,), 10)
        state = state.replace(step=jnp.asarray(at_step, jnp.int32))
        new, (loss, _) = step.train_step(state, images, labels, key, recipe=r, steps_per_epoch=10)
        return new.params, float(loss)

    for at_step, same_as in ((0, recipe.replace(rotation=0.0, rotation_warmup=0.0)),
                             (6, recipe.replace(rotation_warmup=0.0))):
        got, loss = one_step(recipe, at_step)
        want, want_loss = one_step(same_as, at_step)
        assert np.isclose(loss, want_loss, rtol=1e-6), (at_step, loss, want_loss)
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                               got, want)
    assert not np.isclose(one_step(recipe, 0)[1], one_step(recipe.replace(rotation_warmup=0.0), 0)[1])

