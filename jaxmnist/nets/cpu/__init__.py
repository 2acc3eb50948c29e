"""The CPU lowering: the networks of `jaxmnist.nets.archs` with kernels written for XLA:CPU.

These 4-32 channel networks are bound on a few CPU cores by memory traffic and by
XLA:CPU's generic lowering of backward passes, not by arithmetic. This package holds
what is done about it: 2x2 pixel blocks, fused conv/BatchNorm/ReLU/pool stages with
hand-written VJPs, deferred conv biases, gather-based padding, int8 pool winners and
hashed dropout (`ops`), the per-layer planning of where they apply (`net.CpuNet`), and
a vmap rule that runs K models as K copies of the one-model step (`models_side_by_side`).
Each is measured in docs/cpu-lowering.md and tested against the plain definition
(`jaxmnist.nets.Net`): the same parameter and batch_stats trees, the same function.
On GPU and TPU the plain lowering is used instead (`jaxmnist.nets.lowering`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmnist.nets.cpu.net import CpuNet


def models_side_by_side(fn):
    """fn with a vmap rule that runs each model's slice through fn on its own.

    jax.vmap(fn) then trains K models in one XLA program as K independent copies of the
    one-model computation, instead of carrying a model axis through every activation.
    On CPU the model axis costs more than it saves: the K per-model convolutions' outputs
    get stacked, the first layer's matmul needs transposes, and the stacked activations
    share cache (gap8k, batch 128, K=2: 20% fewer images/s than one model; with this rule
    as many or more, benchmarks/models_per_step.py). Each model computes exactly what the
    K=1 step computes.
    Arguments without the model axis are shared by every model.
    """
    batched_fn = jax.custom_batching.custom_vmap(fn)

    @batched_fn.def_vmap
    def rule(axis_size, in_batched, *args):
        leaves, treedef = jax.tree_util.tree_flatten(args)
        batched = jax.tree_util.tree_leaves(in_batched)
        outs = []
        for m in range(axis_size):
            model_leaves = [x[m] if b else x for x, b in zip(leaves, batched)]
            outs.append(fn(*jax.tree_util.tree_unflatten(treedef, model_leaves)))
        stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *outs)
        return stacked, jax.tree_util.tree_map(lambda _: True, stacked)

    return batched_fn


__all__ = ["CpuNet", "models_side_by_side"]
