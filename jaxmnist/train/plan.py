"""An epoch's plan: the shuffle, the per-step keys and the train calls, from the run keys.

Randomness is a pure function of (seed, epoch, step): epoch e of a model whose run key is
`key` shuffles with fold_in(fold_in(key, e), 0) and steps with fold_in(fold_in(key, e),
1) folded with the step's index, so a resumed epoch replays exactly.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def epoch_plan(run_keys, epoch: int, n: int, batch: int, n_models: int):
    """Shuffled batch indices and per-step keys for one epoch.

    Returns (full_idx, full_keys, tail_idx, tail_keys): full batches with a leading step
    axis, then the last partial batch (as PyTorch's DataLoader keeps it) or None.
    """

    def one(key):
        ekey = jax.random.fold_in(key, epoch)
        perm = jax.random.permutation(jax.random.fold_in(ekey, 0), n)
        skey = jax.random.fold_in(ekey, 1)
        steps = math.ceil(n / batch)
        keys = jax.vmap(lambda i: jax.random.fold_in(skey, i))(jnp.arange(steps))
        return perm, keys

    if n_models > 1:
        perm, keys = jax.vmap(one)(run_keys)  # (K, n), (K, steps, 2)
        keys = jnp.swapaxes(keys, 0, 1)
    else:
        perm, keys = one(run_keys)
        perm = perm[None]
    full = n // batch
    idx = perm[:, : full * batch].reshape(perm.shape[0], full, batch).swapaxes(0, 1)
    tail = perm[:, full * batch :]
    if n_models == 1:
        idx, tail = idx[:, 0], tail[0]
    tail_idx = tail[None] if tail.shape[-1] else None
    return idx, keys[:full], tail_idx, (keys[full:] if tail_idx is not None else None)


def epoch_calls(run_keys, epoch: int, n: int, batch: int, n_models: int,
                steps_per_call: int) -> list[tuple]:
    """One epoch's train calls as (idx, keys, steps): the full batches `steps_per_call`
    at a time (leading step axis) while they last, then one step per call, the last
    partial batch included."""
    full_idx, full_keys, tail_idx, tail_keys = epoch_plan(run_keys, epoch, n, batch, n_models)
    full_idx, full_keys = np.asarray(full_idx), np.asarray(full_keys)
    calls, full = [], full_idx.shape[0]
    scanned = full - full % steps_per_call if steps_per_call > 1 else 0
    for i in range(0, scanned, steps_per_call):
        calls.append((full_idx[i:i + steps_per_call], full_keys[i:i + steps_per_call],
                      steps_per_call))
    for i in range(scanned, full):
        calls.append((full_idx[i], full_keys[i], 1))
    if tail_idx is not None:
        calls.append((np.asarray(tail_idx)[0], np.asarray(tail_keys)[0], 1))
    return calls
