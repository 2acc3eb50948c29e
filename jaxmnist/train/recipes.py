"""Each seed's training recipe as a frozen dataclass, its variants, and its schedules.

A recipe is what a run is: two runs with equal recipes (and seeds) are the same run,
which is how a workdir recognises a resumed run and refuses a different one.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import optax

from jaxmnist.nets import check_arch


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Defaults are PyTorch's and the seeds' common ground; each arch overrides its own."""

    arch: str
    epochs: int = 15
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0  # coupled L2, added to the gradient as torch.optim.SGD does
    step_size: int = 0  # StepLR step in epochs; 0 = constant learning rate
    gamma: float = 1.0
    # "step": StepLR(step_size, gamma) stepped per epoch, as every seed does. "onecycle":
    # torch's OneCycleLR(max_lr=lr, epochs, steps_per_epoch, pct_start) with its defaults
    # (cosine annealing, div_factor 25, final_div_factor 1e4, momentum cycled
    # 0.95 -> 0.85 -> 0.95 in place of `momentum`), stepped per batch. "triangle":
    # airbench's triangular schedule, stepped per batch: linear from 0 to lr over the first
    # pct_start of the steps, then linear down, reaching 0 at the end; momentum stays `momentum`.
    schedule: str = "step"
    pct_start: float = 0.3
    rotation: float = 7.0  # RandomRotation((-r, r)), nearest, fill 0
    # Less rotation early: the range grows linearly from 0 to +-rotation over this fraction
    # of the training steps (then stays). 0 = the full range from the first step, as the
    # seeds train.
    rotation_warmup: float = 0.0
    mean: float = 0.1307
    std: float = 0.3081
    init: str = "torch"
    # Rate of every Dropout layer; None keeps the architecture's own rates. For seeds that
    # do not state their rate (001, 002), so it can be chosen on validation like any
    # other value a seed leaves out.
    dropout: float | None = None
    # Label smoothing: the loss is (1 - e) * NLL + e * (mean over the 10 classes of
    # -log p), i.e. cross-entropy against optax.smooth_labels(one_hot, e). 0 = the seeds'
    # plain NLL (computed without the smoothing term, so those runs are unchanged).
    label_smoothing: float = 0.0
    # Learning-rate multiplier on the BatchNorm scales and biases (airbench's BN-bias
    # multiplier): their SGD update, weight decay included, is scaled by it. 1 = the seeds'.
    bn_lr: float = 1.0
    # Test-time augmentation: evaluation scores the image and its rotations by -a and +a
    # degrees (nearest, fill 0, as training's rotation) and averages the three views'
    # class probabilities. It costs 3x the evaluation, not the training. 0 = the image
    # alone, as the seeds evaluate.
    tta_rotation: float = 0.0
    # Exponential moving average of the weights, evaluated in their place (every epoch's
    # evaluation, the checkpoint's predictions and exports): after each step
    # ema = d * ema + (1 - d) * params, starting from the initial weights; the BatchNorm
    # running statistics stay the network's own. 0 = no average.
    ema: float = 0.0
    variant: str = "seed"

    def replace(self, **changes) -> "Recipe":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self, train_examples: int | None = None) -> None:
        """Raises ValueError with a one-line fix for values no run can use."""
        for field in ("epochs", "batch_size"):
            if getattr(self, field) <= 0:
                raise ValueError(f"--{field.replace('_', '-')} must be positive, got {getattr(self, field)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"--lr must be a positive number, got {self.lr}")
        if self.step_size < 0 or self.gamma <= 0:
            raise ValueError("--step-size must be >= 0 and --gamma > 0")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0.0 < self.pct_start < 1.0:
            raise ValueError(f"--pct-start must be in (0, 1), got {self.pct_start}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if not (self.bn_lr > 0 and math.isfinite(self.bn_lr)):
            raise ValueError(f"--bn-lr must be a positive number, got {self.bn_lr}")
        if not 0.0 <= self.tta_rotation <= 180.0:
            raise ValueError(f"--tta-rotation must be in [0, 180] degrees, got {self.tta_rotation}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"--ema must be in [0, 1) (a decay per step), got {self.ema}")
        if self.rotation < 0:
            raise ValueError(f"--rotation must be >= 0 degrees, got {self.rotation}")
        if not 0.0 <= self.rotation_warmup <= 1.0:
            raise ValueError(f"--rotation-warmup must be in [0, 1] (a fraction of the steps), "
                             f"got {self.rotation_warmup}")
        if train_examples is not None and self.batch_size > train_examples:
            raise ValueError(
                f"--batch-size {self.batch_size} is larger than the {train_examples} training "
                "examples; lower --batch-size or raise --train-examples"
            )


SCHEDULES = ("step", "onecycle", "triangle")


def with_defaults(recipe_dict: dict) -> dict:
    """A recipe dict as written by an older jaxmnist, with fields added since at their
    defaults (which reproduce the older behaviour), so its workdirs still resume."""
    defaults = {f.name: f.default for f in dataclasses.fields(Recipe)
                if f.default is not dataclasses.MISSING}
    return {**defaults, **recipe_dict}

# torch.optim.lr_scheduler.OneCycleLR's defaults
ONECYCLE_DIV, ONECYCLE_FINAL_DIV = 25.0, 1e4
ONECYCLE_MOMENTUM = (0.85, 0.95)  # (base, max)


def lr_at_epoch(recipe: Recipe, epoch) -> jnp.ndarray:
    """StepLR: lr * gamma ** (epoch // step_size), epoch counted from 0."""
    if recipe.step_size <= 0:
        return jnp.asarray(recipe.lr, jnp.float32) + 0.0 * epoch
    return recipe.lr * recipe.gamma ** (jnp.asarray(epoch) // recipe.step_size)


def _cos_anneal(start, end, pct):
    return end + (start - end) / 2.0 * (1.0 + jnp.cos(jnp.pi * pct))


def _onecycle(count, total_steps: int, pct_start: float, start, peak, end):
    """OneCycleLR's two phases: start -> peak over the first pct_start of the steps,
    then peak -> end; torch's phase boundaries (step pct_start*total - 1, total - 1)."""
    count = jnp.asarray(count, jnp.float32)
    up_end = float(pct_start * total_steps) - 1.0
    down_end = float(total_steps - 1)
    rising = count <= up_end
    pct_up = count / max(up_end, 1e-12)
    pct_down = (count - up_end) / max(down_end - up_end, 1e-12)
    return jnp.where(rising, _cos_anneal(start, peak, pct_up),
                     _cos_anneal(peak, end, jnp.minimum(pct_down, 1.0)))


def _onecycle_fn(recipe: Recipe, steps_per_epoch: int, start, peak, end):
    total = recipe.epochs * steps_per_epoch

    def fn(count):
        return _onecycle(count, total, recipe.pct_start, start, peak, end).astype(jnp.float32)

    return fn


def schedule(recipe: Recipe, steps_per_epoch: int):
    """optax learning-rate schedule over optimizer steps (count = steps taken so far)."""
    if recipe.schedule == "onecycle":
        start = recipe.lr / ONECYCLE_DIV
        return _onecycle_fn(recipe, steps_per_epoch, start, recipe.lr, start / ONECYCLE_FINAL_DIV)
    if recipe.schedule == "triangle":
        total = recipe.epochs * steps_per_epoch
        up = max(round(recipe.pct_start * total), 1)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, recipe.lr, up),
             optax.linear_schedule(recipe.lr, 0.0, max(total - up, 1))], [up])

    def fn(count):
        return lr_at_epoch(recipe, count // steps_per_epoch).astype(jnp.float32)

    return fn


def rotation_schedule(recipe: Recipe, steps_per_epoch: int):
    """The rotation range in degrees at optimizer step `count` (0 -> rotation, linear, over
    rotation_warmup of the steps); None when the range is constant, so those runs draw
    their angles exactly as before."""
    if not recipe.rotation_warmup:
        return None
    ramp = max(round(recipe.rotation_warmup * recipe.epochs * steps_per_epoch), 1)
    return optax.linear_schedule(0.0, recipe.rotation, ramp)


def momentum_schedule(recipe: Recipe, steps_per_epoch: int):
    """OneCycleLR's momentum cycle (max -> base -> max, opposite to the lr); None when the
    recipe's momentum is constant."""
    if recipe.schedule != "onecycle":
        return None
    base, peak = ONECYCLE_MOMENTUM
    return _onecycle_fn(recipe, steps_per_epoch, peak, base, peak)


RECIPES: dict[str, Recipe] = {
    # Seed 000: SGD(0.025, 0.9), StepLR(9, 0.15), batch 128, up to 20 epochs, +-7 deg.
    # Tuned variant below.
    "fc19k": Recipe("fc19k", epochs=20, lr=0.025, step_size=9, gamma=0.15),
    # Seed 001: SGD(0.02, 0.9), StepLR(6, 0.1), 15 epochs, +-7 deg; batch size is not
    # stated: 128, the size every other seed of this course uses. Tuned variant below.
    "gap7k": Recipe("gap7k", epochs=15, lr=0.02, step_size=6, gamma=0.1),
    # Seed 002 gives the network, batch 512 (118 batches/epoch in its log) and ~19-20
    # epochs, but not the optimiser, schedule or transforms. Filled with the course's
    # common recipe (SGD 0.9 momentum, +-7 deg rotation) scaled for batch 512: lr 0.05,
    # x0.1 every 8 epochs, 20 epochs (the issue budget).
    "fc16k": Recipe("fc16k", epochs=20, batch_size=512, lr=0.05, step_size=8, gamma=0.1),
    # Seed 003: SGD Nesterov(0.01, 0.9), weight decay 1e-4, StepLR with an unstated step,
    # 15 epochs, batch 128, +-7 deg. Step size 6 with gamma 0.1 (the course default).
    "gap8k": Recipe(
        "gap8k", epochs=15, lr=0.01, nesterov=True, weight_decay=1e-4, step_size=6, gamma=0.1
    ),
    # Seed 004: SGD(0.1, 0.9), no schedule, 15 epochs, batch 128, +-35 deg.
    "gap9k": Recipe("gap9k", epochs=15, lr=0.1, rotation=35.0),
}


def recipe_for(arch: str) -> Recipe:
    return RECIPES[check_arch(arch)]


# Improved recipes within each seed's constraints (same network, same or fewer epochs,
# no extra data), chosen on the validation split (55k train / 5k val) by final-epoch
# validation accuracy, then reported on test after retraining on all 60k; only where the
# seed's own recipe falls short. Every candidate's figures: experiments/search/SEARCH.md.
TUNED: dict[str, Recipe] = {
    # lr 0.05 with the seed's StepLR(9, 0.15): 99.13% validation (2 seeds) against the
    # seed's 99.12%, with a lower final validation loss (0.0268 vs 0.0300).
    "fc19k": RECIPES["fc19k"].replace(lr=0.05, variant="tuned"),
    # OneCycleLR peaking at 0.1: 99.22% validation (4 seeds) against the seed's 99.12%.
    "gap7k": RECIPES["gap7k"].replace(schedule="onecycle", lr=0.1, step_size=0, gamma=1.0,
                                      variant="tuned"),
    # lr 0.05, StepLR(6): 99.27% validation (3 seeds) against the seed's lr 0.01, 99.07%.
    "gap8k": RECIPES["gap8k"].replace(lr=0.05, variant="tuned"),
    # OneCycleLR peaking at 0.2 at +-7 deg: 99.17% validation (4 seeds) against the seed's
    # constant lr 0.1 at +-35 deg, 98.73% (3 seeds).
    "gap9k": RECIPES["gap9k"].replace(schedule="onecycle", lr=0.2, rotation=7.0, variant="tuned"),
}

# Speedrun recipes: the same networks, the fewest epochs whose FINAL-epoch test accuracy
# is meant to average >= 99.40% over 10 seeds; chosen on validation
# (experiments/search/speed/SEARCH.md, which also holds every trick measured and not
# adopted), reported on test after retraining on all 60k (experiments/results/ARCH-speed.json).
SPEED: dict[str, Recipe] = {
    # 4 epochs of OneCycleLR peaking at 0.2 (the seed's Nesterov, wd 1e-4, batch 128,
    # +-7 deg): 99.14% validation over 12 seeds; 3 epochs reach at most 99.10%.
    "gap8k": RECIPES["gap8k"].replace(epochs=4, schedule="onecycle", lr=0.2, step_size=0,
                                      gamma=1.0, variant="speed"),
    # The tuned OneCycleLR cut to 8 epochs: 99.16% validation (2 seeds); 6 epochs 99.07%.
    "gap7k": TUNED["gap7k"].replace(epochs=8, variant="speed"),
}

VARIANTS = ("seed", "tuned", "speed")


def default_variant(arch: str) -> str:
    """What `python -m jaxmnist.train --arch ARCH` trains: the tuned recipe where the seed's
    own falls short of its claim (chosen on validation, as above), else the seed's. The
    seed's recipe stays one flag away (--variant seed), and experiments/ reports both."""
    return "tuned" if check_arch(arch) in TUNED else "seed"


def variant(arch: str, name: str | None = None) -> Recipe:
    check_arch(arch)
    name = name or default_variant(arch)
    if name == "seed":
        return RECIPES[arch]
    if name == "tuned" and arch in TUNED:
        return TUNED[arch]
    if name == "speed" and arch in SPEED:
        return SPEED[arch]
    have = ["seed"] + (["tuned"] if arch in TUNED else []) + (["speed"] if arch in SPEED else [])
    raise ValueError(f"no recipe variant {name!r} for {arch}; available: {', '.join(have)}")
