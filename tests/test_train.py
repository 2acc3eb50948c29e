"""The train step, schedules, the loop on real data, resume, evaluate, and bad input."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmnist import augment, checkpoint, data, evaluate, inference, loop, models, recipes, step, train


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return data.load("mnist", mnist_dir, val_examples=0)


def subset(ds, n_train, n_test=None, n_val=0):
    tr, te = ds.train, ds.test
    val = data.Split(tr.images[n_train:n_train + n_val], tr.labels[n_train:n_train + n_val])
    n_test = n_test or len(te)
    return dataclasses.replace(
        ds,
        train=data.Split(tr.images[:n_train], tr.labels[:n_train]),
        val=val,
        test=data.Split(te.images[:n_test], te.labels[:n_test]),
    )


# --- schedules and optimiser ----------------------------------------------------------


def test_default_recipe_is_the_tuned_one_where_it_exists():
    for arch in models.ARCHS:
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
    net = models.build("gap7k", dropout=0.1)
    rates = {layer.rate for layer in net.spec if type(layer).__name__ == "Dropout"}
    assert rates == {0.1}
    assert {layer.rate for layer in models.build("gap7k").spec
            if type(layer).__name__ == "Dropout"} == {0.05}
    params = lambda m: models.count_params(models.init_variables(m, jax.random.PRNGKey(0))["params"])
    assert params(net) == params(models.build("gap7k")) == models.EXPECTED_PARAMS["gap7k"]


def test_step_lr_at_boundaries():
    spe = 469
    fc19k = step.make_optimizer(recipes.recipe_for("fc19k"), spe)  # 0.025, x0.15 every 9
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


def _torch_sgd(param, grads, lr_of_step, momentum, nesterov, wd):
    """torch.optim.SGD's update rule, written out (dampening 0). `momentum` may be a
    function of the step (what OneCycleLR's cycle_momentum sets)."""
    momentum_of_step = momentum if callable(momentum) else (lambda t: momentum)
    buf = None
    for t, g in enumerate(grads):
        m = momentum_of_step(t)
        g = g + wd * param
        buf = g if buf is None else m * buf + g
        d = g + m * buf if nesterov else buf
        param = param - lr_of_step(t) * d
    return param


@pytest.mark.parametrize("arch", ["gap8k", "fc19k"])
def test_optimizer_matches_torch_sgd(arch):
    recipe = recipes.recipe_for(arch).replace(step_size=1, gamma=0.5)
    spe = 2
    tx = step.make_optimizer(recipe, spe)
    p = jnp.array([1.0, -2.0, 0.5])
    grads = [jnp.array([0.1, 0.2, -0.3]) * (t + 1) for t in range(5)]
    state, x = tx.init(p), p
    for g in grads:
        upd, state = tx.update(g, state, x)
        x = optax.apply_updates(x, upd)
    expected = _torch_sgd(
        np.asarray(p), [np.asarray(g) for g in grads],
        lambda t: recipe.lr * 0.5 ** (t // spe), recipe.momentum, recipe.nesterov, recipe.weight_decay,
    )
    np.testing.assert_allclose(np.asarray(x), expected, rtol=1e-6)


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
    tx = step.make_optimizer(recipe, spe)
    p = jnp.array([1.0, -2.0, 0.5])
    grads = [jnp.array([0.1, 0.2, -0.3]) * (t + 1) for t in range(steps)]
    state, x = tx.init(p), p
    for g in grads:
        upd, state = tx.update(g, state, x)
        x = optax.apply_updates(x, upd)
    expected = _torch_sgd(np.asarray(p), [np.asarray(g) for g in grads], want_lr.__getitem__,
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


def test_bn_lr_scales_the_batchnorm_updates_only():
    """bn_lr = c: the BatchNorm scales' and biases' updates (momentum, Nesterov and weight
    decay included) are c times those of bn_lr = 1; every other parameter's are unchanged."""
    recipe = recipes.SPEED["gap8k"]
    params = {"bn1": {"scale": jnp.ones(3), "bias": jnp.zeros(3)},
              "conv1": {"kernel": jnp.full((2, 3), 0.5)}}
    grads = [jax.tree_util.tree_map(lambda p, t=t: jnp.cos(p + t) + t, params) for t in range(4)]

    def updates(bn_lr):
        tx = step.make_optimizer(recipe.replace(bn_lr=bn_lr), 10)
        state, out = tx.init(params), []
        for g in grads:
            u, state = tx.update(g, state, params)
            out.append(u)
        return out

    for base, scaled in zip(updates(1.0), updates(3.0)):
        for name in ("scale", "bias"):
            np.testing.assert_allclose(scaled["bn1"][name], 3.0 * base["bn1"][name], rtol=1e-6)
        np.testing.assert_array_equal(scaled["conv1"]["kernel"], base["conv1"]["kernel"])
    tree = models.init_variables(models.build("gap8k"), jax.random.PRNGKey(0))["params"]
    masked = {k for k, v in step.batchnorm_mask(tree).items() if all(jax.tree_util.tree_leaves(v))}
    assert masked == {f"bn{i}" for i in range(1, 8)}
    with pytest.raises(ValueError, match="--bn-lr"):
        recipe.replace(bn_lr=0.0).validate()


def test_tta_is_the_mean_of_the_views_probabilities():
    """tta_rotation = a: log of the mean of the probabilities of the image and of it rotated
    by +a and -a degrees (augment.rotate, as training rotates); 0: the image alone."""
    net = models.build("gap8k", kernels="plain")
    v = models.init_variables(net, jax.random.PRNGKey(1))
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


def test_ema_keeps_the_average_of_the_weights_after_each_step():
    """ema = d: after step t, ema_t = d * ema_(t-1) + (1 - d) * params_t, ema_0 = the initial
    weights; the updates (so the training) are those without it; evaluation reads the average."""
    recipe, d = recipes.SPEED["gap8k"], 0.75
    params = {"bn1": {"scale": jnp.ones(3)}, "conv1": {"kernel": jnp.full((2, 3), 0.5)}}
    with_ema = step.make_optimizer(recipe.replace(ema=d), 10)
    without = step.make_optimizer(recipe, 10)
    s_ema, s_plain, p, want = with_ema.init(params), without.init(params), params, params
    for t in range(4):
        g = jax.tree_util.tree_map(lambda x: jnp.sin(x + t) + t, p)
        u_ema, s_ema = with_ema.update(g, s_ema, p)
        u, s_plain = without.update(g, s_plain, p)
        jax.tree_util.tree_map(np.testing.assert_array_equal, u_ema, u)
        p = optax.apply_updates(p, u)
        want = jax.tree_util.tree_map(lambda e, x: d * e + (1 - d) * x, want, p)
        got = step.weights_for_eval(p, s_ema)
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, want)
    assert step.weights_for_eval(p, s_plain) is p
    with pytest.raises(ValueError, match="--ema"):
        recipe.replace(ema=1.0).validate()


def test_rotation_warmup_grows_the_range_linearly_then_holds(mnist):
    """rotation_warmup = w: the range is rotation * t / round(w * total) up to that step,
    then rotation; a step at t = 0 trains on unrotated images, one past the ramp on the full
    range with the same angles as without the warm-up."""
    recipe = recipes.SPEED["gap8k"].replace(epochs=2, rotation_warmup=0.25)
    fn = recipes.rotation_schedule(recipe, 10)  # 20 steps: ramp over 5
    got = np.asarray(jax.vmap(fn)(jnp.arange(8)))
    np.testing.assert_allclose(got, [7.0 * t / 5 for t in range(5)] + [7.0] * 3, rtol=1e-6)
    assert recipes.rotation_schedule(recipes.SPEED["gap8k"], 10) is None

    images, labels = jnp.asarray(mnist.train.images[:64]), jnp.asarray(mnist.train.labels[:64])
    key = jax.random.PRNGKey(3)

    def one_step(r, at_step):
        state, _ = loop.init_models(loop.RunConfig(recipe=r), 10)
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
    with pytest.raises(ValueError, match="--rotation-warmup"):
        recipe.replace(rotation_warmup=1.5).validate()


def test_workdir_from_before_a_new_recipe_field_still_resumes(tmp_path):
    """run.json written without a field added since (its default reproduces the old run)."""
    ident = {"arch": "gap8k", "recipe": recipes.recipe_for("gap8k").to_dict(), "seeds": [0]}
    old = {**ident, "recipe": {k: v for k, v in ident["recipe"].items() if k != "label_smoothing"}}
    (tmp_path / "run.json").write_text(json.dumps(old))
    assert loop.prepare_workdir(str(tmp_path), ident) is True
    changed = {**ident, "recipe": {**ident["recipe"], "label_smoothing": 0.1}}
    with pytest.raises(loop.RunError, match="label_smoothing=0.1"):
        loop.prepare_workdir(str(tmp_path), changed)


# --- one step ------------------------------------------------------------------------


def test_one_train_step_changes_everything_it_should(mnist):
    recipe = recipes.recipe_for("gap9k")
    state, keys = loop.init_models(loop.RunConfig(recipe=recipe), 10)
    fn = step.make_train_fn(recipe, 1)
    images, labels = jnp.asarray(mnist.train.images[:256]), jnp.asarray(mnist.train.labels[:256])
    before = jax.tree_util.tree_map(np.asarray, (state.params, state.batch_stats))
    new, (loss, correct) = fn(state, images, labels, np.arange(64, dtype=np.int32), keys)
    assert np.isfinite(float(loss)) and 0 <= int(correct) <= 64
    assert int(new.step) == 1
    for old, cur in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves((new.params, new.batch_stats))):
        assert not np.array_equal(old, np.asarray(cur))


@pytest.mark.parametrize("arch", list(models.ARCHS))
def test_few_steps_lower_the_loss(arch, mnist):
    """Twelve steps on one real batch of 128: the loss on that batch drops steadily."""
    recipe = recipes.recipe_for(arch).replace(rotation=0.0, lr=0.1)
    state, keys = loop.init_models(loop.RunConfig(recipe=recipe), 10)
    fn = step.make_train_fn(recipe, 1)
    images, labels = jnp.asarray(mnist.train.images[:128]), jnp.asarray(mnist.train.labels[:128])
    idx = np.arange(128, dtype=np.int32)
    losses = []
    for i in range(12):
        state, (loss, _) = fn(state, images, labels, idx, jax.random.fold_in(keys, i))
        losses.append(float(loss))
    assert losses[-1] < 0.9 * losses[0] and losses[-1] < losses[-5], losses


# --- the loop on real data -----------------------------------------------------------


@pytest.mark.slow
def test_three_epochs_on_10k_real_examples_learn(mnist, mnist_dir, tmp_path):
    # After one epoch on 10k images the test accuracy still swings 88-97% with the seed
    # (BatchNorm running statistics lag); three epochs with one lr drop land at 98.5-98.7%
    # for seeds 0-2, so 97.5% is a margin, not a tuned pass mark.
    recipe = recipes.recipe_for("gap8k").replace(epochs=3, batch_size=64, lr=0.05, step_size=2, gamma=0.1)
    history = loop.run(
        loop.RunConfig(recipe=recipe, workdir=str(tmp_path / "w"), progress=False),
        subset(mnist, 10_000),
        log=lambda s: None,
    )
    assert history[-1]["test_accuracy"] > 97.5, history
    assert (tmp_path / "w" / "curves.png").stat().st_size > 0
    assert (tmp_path / "w" / "misclassified.png").stat().st_size > 0
    # every one of the 10,000 test images was scored
    report, preds = evaluate.evaluate_workdir(str(tmp_path / "w"), data_dir=mnist_dir)
    assert preds.shape == (1, 10_000)
    assert report["models"][0]["test_accuracy"] == pytest.approx(history[-1]["test_accuracy"], abs=1e-9)
    assert sum(map(sum, report["models"][0]["confusion_matrix"])) == 10_000


SMALL = dict(n_train=1000, n_test=500, n_val=200)  # 1000 % 128 != 0: the tail batch is kept


def small_recipe(**kw):
    return recipes.recipe_for("gap9k").replace(**{"epochs": 3, "lr": 0.05, **kw})


def params_of(workdir, epoch=None):
    ident = json.load(open(os.path.join(workdir, "run.json")))
    recipe = recipes.Recipe(**ident["recipe"])
    state, keys = loop.init_models(loop.RunConfig(recipe=recipe, seeds=tuple(ident["seeds"])), 8)
    mgr = checkpoint.open_manager(os.path.join(workdir, "checkpoints"), read_only=True)
    tree, _ = checkpoint.restore(mgr, epoch or mgr.latest_step(), checkpoint.state_tree(state, keys))
    return tree


def test_weight_average_and_tta_are_what_every_evaluation_reads(mnist, mnist_dir, tmp_path):
    """A run with ema and tta_rotation: training's test accuracy, `evaluate` and the
    inference model (predict, export, serve) all score the average weights with the views."""
    wd = str(tmp_path / "w")
    history = loop.run(loop.RunConfig(recipe=small_recipe(epochs=1, ema=0.9, tta_rotation=5.0),
                                      workdir=wd, progress=False, plots=False),
                       subset(mnist, 1000), log=lambda s: None)
    report, preds = evaluate.evaluate_workdir(wd, data_dir=mnist_dir)
    assert report["models"][0]["test_accuracy"] == pytest.approx(history[-1]["test_accuracy"], abs=1e-9)
    tree = params_of(wd)
    average = step.weights_for_eval(tree["params"], tree["opt_state"])
    assert not np.allclose(average["conv1"]["kernel"], tree["params"]["conv1"]["kernel"])
    model = inference.load(wd)
    jax.tree_util.tree_map(np.testing.assert_array_equal, model.variables["params"], average)
    agree = np.mean(model.log_probs(mnist.test.images).argmax(-1) == preds[0])
    assert agree >= 0.9995, agree


@pytest.mark.slow
def test_kill_and_resume_is_bitwise_identical(mnist, tmp_path):
    ds = subset(mnist, **SMALL)
    full = loop.run(loop.RunConfig(recipe=small_recipe(), workdir=str(tmp_path / "a"), progress=False,
                                   plots=False, chunk_steps=2), ds, log=lambda s: None)

    class Killed(Exception):
        pass

    def kill(epoch, steps):
        if epoch == 1 and steps >= 4:  # mid-way through the second epoch
            raise Killed

    cfg = loop.RunConfig(recipe=small_recipe(), workdir=str(tmp_path / "b"), progress=False,
                         plots=False, chunk_steps=2)
    with pytest.raises(Killed):
        loop.run(cfg, ds, log=lambda s: None, on_chunk=kill)
    assert len(loop.read_metrics(str(tmp_path / "b"))) == 1
    messages = []
    resumed = loop.run(cfg, ds, log=messages.append)
    assert any("resumed" in m and "epoch 1" in m for m in messages)
    strip = lambda h: [{k: v for k, v in r.items() if "seconds" not in k and "per_s" not in k} for r in h]
    assert strip(resumed) == strip(full)
    a, b = params_of(str(tmp_path / "a")), params_of(str(tmp_path / "b"))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

    # restoring a checkpoint reproduces the accuracy training reported for that epoch
    # (this run's test set is a 500-image subset, so evaluate through the loop's scorer)
    tree = params_of(str(tmp_path / "b"), 3)
    state, _ = loop.init_models(loop.RunConfig(recipe=small_recipe()), 8)
    state = state.replace(params=tree["params"], batch_stats=tree["batch_stats"])
    ev = loop.evaluate(step.make_eval_fn(small_recipe(), 1), state, ds.test)
    assert float(ev.accuracy(ds.test.labels)) == full[-1]["test_accuracy"]


def test_best_checkpoint_is_chosen_by_validation(mnist, tmp_path):
    ds = subset(mnist, **SMALL)
    wd = str(tmp_path / "w")
    hist = loop.run(loop.RunConfig(recipe=small_recipe(epochs=5), workdir=wd, progress=False, plots=False),
                    ds, log=lambda s: None)
    mgr = checkpoint.open_manager(os.path.join(wd, "checkpoints"), read_only=True)
    best = max(hist, key=lambda r: (r["val_accuracy"], -r["epoch"]))["epoch"]
    kept = set(mgr.all_steps())
    assert {3, 4, 5} <= kept and best in kept and kept <= {3, 4, 5, best}
    assert checkpoint.best_epoch(mgr) == best


# --- bad input ---------------------------------------------------------------------------


def cli_error(capsys, argv, module=train):
    with pytest.raises(SystemExit) as exc:
        module.main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code != 0
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--arch", "lenet"], "valid: fc19k"),
        (["--arch", "gap8k", "--epochs", "0"], "--epochs"),
        (["--arch", "gap8k", "--batch-size", "-1"], "--batch-size"),
        (["--arch", "gap8k", "--lr", "0"], "--lr"),
        (["--arch", "gap7k", "--dropout", "1.5"], "--dropout"),
        (["--arch", "gap8k", "--train-examples", "100", "--batch-size", "128"], "larger than the 100"),
    ],
)
def test_cli_rejects_bad_values(capsys, tmp_path, mnist_dir, argv, needle):
    err = cli_error(capsys, argv + ["--workdir", str(tmp_path / "w"), "--data-dir", mnist_dir])
    assert needle in err
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_cli_missing_data_dir(capsys, tmp_path):
    err = cli_error(capsys, ["--arch", "gap8k", "--data-dir", str(tmp_path / "nowhere"),
                             "--workdir", str(tmp_path / "w")])
    assert "nowhere" in err


def test_workdir_of_another_run_is_refused(mnist, tmp_path):
    ds = subset(mnist, **SMALL)
    wd = str(tmp_path / "w")
    loop.run(loop.RunConfig(recipe=small_recipe(epochs=1), workdir=wd, progress=False, plots=False),
             ds, log=lambda s: None)
    before = sorted(os.listdir(wd))
    with pytest.raises(loop.RunError, match="lr=0.07"):
        loop.run(loop.RunConfig(recipe=small_recipe(epochs=1, lr=0.07), workdir=wd, progress=False),
                 ds, log=lambda s: None)
    assert sorted(os.listdir(wd)) == before
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(loop.RunError, match="no run.json"):
        loop.run(loop.RunConfig(recipe=small_recipe(epochs=1), workdir=str(foreign), progress=False),
                 ds, log=lambda s: None)
    assert os.listdir(foreign) == ["notes.txt"]


def test_corrupt_checkpoint_falls_back_to_previous(mnist, tmp_path):
    ds = subset(mnist, **SMALL)
    wd = str(tmp_path / "w")
    cfg = loop.RunConfig(recipe=small_recipe(epochs=2), workdir=wd, progress=False, plots=False)
    loop.run(cfg, ds, log=lambda s: None)
    # damage the newest checkpoint's array data
    state_dir = os.path.join(wd, "checkpoints", "2", "state")
    for root, _, files in os.walk(state_dir):
        for f in files:
            path = os.path.join(root, f)
            with open(path, "r+b") as fh:
                fh.truncate(max(os.path.getsize(path) // 3, 1))
    longer = dataclasses.replace(cfg, recipe=cfg.recipe)
    messages = []
    hist = loop.run(longer, ds, log=messages.append)
    assert any("unreadable" in m and "epoch 2" in m for m in messages), messages
    assert any("resumed" in m and "epoch 1" in m for m in messages), messages
    assert [r["epoch"] for r in hist] == [1, 2]
    assert os.listdir(os.path.join(wd, "corrupt"))  # moved aside, not deleted


def test_nan_loss_stops_and_keeps_last_good_checkpoint(mnist, tmp_path):
    ds = subset(mnist, **SMALL)
    wd = str(tmp_path / "w")
    # epoch 1 at lr 0.05, then x1e30: the second epoch blows up
    recipe = small_recipe(epochs=3, step_size=1, gamma=1e30)
    with pytest.raises(loop.NaNLoss, match=r"step \d+ \(epoch 2\)"):
        loop.run(loop.RunConfig(recipe=recipe, workdir=wd, progress=False, plots=False), ds, log=lambda s: None)
    mgr = checkpoint.open_manager(os.path.join(wd, "checkpoints"), read_only=True)
    assert mgr.all_steps() == [1]
    assert len(loop.read_metrics(wd)) == 1


def test_evaluate_cli_errors(capsys, tmp_path):
    err = cli_error(capsys, ["--workdir", str(tmp_path)], module=evaluate)
    assert "run.json" in err
