"""The train step and the evaluation: losses, test-time augmentation, what a step changes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmnist import nets
from jaxmnist.data import augment
from jaxmnist.train import loop, recipes, state as state_lib, step
from cases import slow
from runs import subset

pytestmark = pytest.mark.lowering


def test_label_smoothing_is_cross_entropy_against_smoothed_labels():
    logits = jax.random.normal(jax.random.PRNGKey(0), (6, 10)) * 3
    labels = jnp.array([0, 3, 9, 2, 2, 7])
    log_probs = jax.nn.log_softmax(logits)
    recipe = recipes.recipe_for("gap8k")
    # off: exactly the seeds' NLL
    np.testing.assert_array_equal(step.loss_of(log_probs, labels, recipe), step.nll(log_probs, labels))
    for e in (0.05, 0.1, 0.3):
        want = optax.softmax_cross_entropy(logits, optax.smooth_labels(jax.nn.one_hot(labels, 10), e))
        got = step.loss_of(log_probs, labels, recipe.replace(label_smoothing=e))
        np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.raises(ValueError, match="--label-smoothing"):
        recipe.replace(label_smoothing=1.0).validate()




def test_tta_is_the_mean_of_the_views_probabilities():
    """tta_rotation = a: log of the mean of the probabilities of the image and of it rotated
    by +a and -a degrees (augment.rotate, as training rotates); 0: the image alone."""
    net = nets.build("gap8k", lowering="plain")
    v = nets.init_variables(net, jax.random.PRNGKey(1))
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (5, 28, 28, 1), np.uint8))
    plain = recipes.SPEED["gap8k"]
    tta = plain.replace(tta_rotation=6.0)

    def logp(recipe, x):
        return step.eval_logits(net.apply, v["params"], v["batch_stats"], x, recipe)

    views = [images] + [augment.rotate(images, jnp.full((5,), a)) for a in (6.0, -6.0)]
    want = np.log(np.mean([np.exp(logp(plain, x)) for x in views], axis=0))
    got = logp(tta, images)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.exp(got).sum(-1), 1.0, rtol=1e-5)
    assert not np.allclose(got, logp(plain, images), atol=1e-4)
    with pytest.raises(ValueError, match="--tta-rotation"):
        plain.replace(tta_rotation=-1.0).validate()




def test_one_train_step_changes_everything_it_should(mnist):
    recipe = recipes.recipe_for("gap9k")
    state, keys = state_lib.init_models(recipe, (0,), 10)
    fn = step.make_train_fn(recipe, 1)
    images, labels = jnp.asarray(mnist.train.images[:256]), jnp.asarray(mnist.train.labels[:256])
    before = jax.tree_util.tree_map(np.asarray, (state.params, state.batch_stats))
    new, (loss, correct) = fn(state, images, labels, np.arange(64, dtype=np.int32), keys)
    assert np.isfinite(float(loss)) and 0 <= int(correct) <= 64
    assert int(new.step) == 1
    for old, cur in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves((new.params, new.batch_stats))):
        assert not np.array_equal(old, np.asarray(cur))


@pytest.mark.parametrize("arch", [a if a == "gap8k" else slow(a) for a in nets.ARCHS])
def test_few_steps_lower_the_loss(arch, mnist):
    """Twelve steps on one real batch of 128: the loss on that batch drops steadily."""
    recipe = recipes.recipe_for(arch).replace(rotation=0.0, lr=0.1)
    state, keys = state_lib.init_models(recipe, (0,), 10)
    fn = step.make_train_fn(recipe, 1)
    images, labels = jnp.asarray(mnist.train.images[:128]), jnp.asarray(mnist.train.labels[:128])
    idx = np.arange(128, dtype=np.int32)
    losses = []
    for i in range(12):
        state, (loss, _) = fn(state, images, labels, idx, jax.random.fold_in(keys, i))
        losses.append(float(loss))
    assert losses[-1] < 0.9 * losses[0] and losses[-1] < losses[-5], losses


# --- the loop on real data -----------------------------------------------------------


