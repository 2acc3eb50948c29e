"""Helpers of the training tests: real MNIST subsets and a small recipe."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxmnist import data
from jaxmnist.rundir import RunDir
from jaxmnist.train import recipes, state as state_lib

SMALL = dict(n_train=1000, n_test=500, n_val=200)  # 1000 % 128 != 0: the tail batch is kept


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


def small_recipe(**kw):
    return recipes.recipe_for("gap9k").replace(**{"epochs": 3, "lr": 0.05, **kw})


def read_metrics(workdir):
    return RunDir(workdir).metrics()


def params_of(workdir, epoch=None):
    """The state tree of a workdir's checkpoint (latest, or `epoch`)."""
    rd = RunDir(workdir, read_only=True)
    ident = rd.identity()
    recipe = recipes.Recipe(**ident["recipe"])
    template = state_lib.checkpoint_template(recipe, tuple(ident["seeds"]), ident["train_examples"])
    tree, _ = rd.restore(epoch or rd.epochs()[-1], template)
    return tree


def torch_sgd(param, grads, lr_of_step, momentum, nesterov, wd):
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
