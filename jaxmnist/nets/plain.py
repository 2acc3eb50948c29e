"""The plain lowering, and the definition of every network: one standard op per spec.

XLA's GPU and TPU compilers optimise these ops well (cuDNN convolutions, reduce_window
pooling, fused BatchNorm, a plain vmap for K models). The CPU lowering
(`jaxmnist.nets.cpu.CpuNet`) computes the same function from the same spec with the same
parameter and batch_stats trees.
"""

from __future__ import annotations

import jax.numpy as jnp
import flax.linen as nn

from jaxmnist.nets.layers import (
    BatchNorm,
    BatchNormLayer,
    Conv,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    LayerNames,
    MaxPool,
    ReLU,
    initializers,
    torch_flatten,
)


class Net(nn.Module):
    """A spec as a Flax network; returns log-probabilities (N, 10) like the seeds'
    log_softmax."""

    spec: tuple
    init_scheme: str = "torch"

    @nn.compact
    def __call__(self, x, train: bool = False):
        name = LayerNames()
        for layer in self.spec:
            if isinstance(layer, Conv):
                k, p = layer.kernel, layer.padding
                kinit, binit = initializers(self.init_scheme, x.shape[-1] * k * k)
                x = nn.Conv(layer.features, (k, k), padding=[(p, p), (p, p)], use_bias=layer.bias,
                            kernel_init=kinit, bias_init=binit, name=name("conv"))(x)
            elif isinstance(layer, BatchNorm):
                x = BatchNormLayer(name=name("bn"))(x, train)
            elif isinstance(layer, ReLU):
                x = nn.relu(x)
            elif isinstance(layer, MaxPool):
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            elif isinstance(layer, Dropout):
                x = nn.Dropout(layer.rate, deterministic=not train)(x)
            elif isinstance(layer, GlobalAvgPool):
                x = jnp.mean(x, axis=(1, 2), keepdims=True)
            elif isinstance(layer, Flatten):
                x = torch_flatten(x)
            elif isinstance(layer, Dense):
                kinit, binit = initializers(self.init_scheme, x.shape[-1])
                x = nn.Dense(layer.features, use_bias=layer.bias, kernel_init=kinit,
                             bias_init=binit, name=name("dense"))(x)
            else:  # pragma: no cover - specs are closed
                raise TypeError(f"unknown layer spec {layer!r}")
        return nn.log_softmax(x, axis=-1)
