"""A trained network as an ONNX graph, written from its layer specs.

The five networks are a short list of standard layers (`jaxmnist.nets.layers`: conv,
BatchNorm, ReLU, 2x2 max pool, global average pool, flatten, dense, dropout), each of
which is one ONNX operator, so the graph is built here with the `onnx` package's helper
API rather than by converting a traced program: jax2onnx, the converter for JAX, pins an
orbax-checkpoint older than ours and pulls in equinox and huggingface-hub.

The graph takes uint8 MNIST-format images, (N, 28, 28, 1) (`layout="nhwc"`, as jaxmnist
feeds them) or (N, 1, 28, 28) (`"nchw"`, as PyTorch does), N dynamic; it normalises them
with the recipe's mean and std inside, runs the eval-mode network (dropout off, BatchNorm
with the running statistics, the recipe's weight average where it keeps one), and
returns (N, 10) log-probabilities. The dense heads read the features in PyTorch's
(C, H, W) order, which is ONNX's Flatten of an NCHW tensor. Opset OPSET.
"""

from __future__ import annotations

import numpy as np

from jaxmnist.nets.layers import BatchNorm, Conv, Dense, Dropout, Flatten, GlobalAvgPool, MaxPool, ReLU

OPSET = 17
LAYOUTS = ("nhwc", "nchw")
BN_EPSILON = 1e-5  # jaxmnist.nets.layers.TorchBatchNormBase.epsilon


class Graph:
    """The nodes and initialisers being built; names are made unique by a counter."""

    def __init__(self):
        self.nodes, self.weights, self.count = [], [], 0

    def name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}_{self.count}"

    def weight(self, kind: str, array) -> str:
        from onnx import numpy_helper

        name = self.name(kind)
        self.weights.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    def op(self, op_type: str, inputs: list, **attrs) -> str:
        from onnx import helper

        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def _layer(g: Graph, layer, x: str, params: dict, stats: dict, names) -> str:
    """One spec's operator(s) after `x`; `names(kind)` yields conv1, bn1, ... in order."""
    if isinstance(layer, Conv):
        p = params[names("conv")]
        kernel = np.transpose(np.asarray(p["kernel"]), (3, 2, 0, 1))  # HWIO -> OIHW
        inputs = [x, g.weight("W", kernel)] + ([g.weight("B", p["bias"])] if layer.bias else [])
        pad = layer.padding
        return g.op("Conv", inputs, kernel_shape=[layer.kernel] * 2, pads=[pad] * 4)
    if isinstance(layer, BatchNorm):
        name = names("bn")
        p, s = params[name], stats[name]
        return g.op("BatchNormalization", [x, g.weight("scale", p["scale"]),
                                           g.weight("bias", p["bias"]), g.weight("mean", s["mean"]),
                                           g.weight("var", s["var"])], epsilon=BN_EPSILON)
    if isinstance(layer, ReLU):
        return g.op("Relu", [x])
    if isinstance(layer, MaxPool):
        return g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    if isinstance(layer, GlobalAvgPool):
        return g.op("GlobalAveragePool", [x])
    if isinstance(layer, Flatten):
        return g.op("Flatten", [x], axis=1)
    if isinstance(layer, Dense):
        p = params[names("dense")]
        inputs = [x, g.weight("W", p["kernel"])] + ([g.weight("B", p["bias"])] if layer.bias else [])
        return g.op("Gemm", inputs)
    if isinstance(layer, Dropout):
        return x  # eval mode
    raise TypeError(f"no ONNX operator for layer spec {layer!r}")


def build(spec: tuple, variables: dict, mean: float, std: float, layout: str = "nhwc"):
    """The onnx.ModelProto of the eval-mode network `spec` with `variables` (params and
    batch_stats), normalising uint8 input by (x / 255 - mean) / std."""
    from onnx import TensorProto, helper

    from jaxmnist.nets.layers import LayerNames

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    g, names = Graph(), LayerNames()
    shape = ["N", 28, 28, 1] if layout == "nhwc" else ["N", 1, 28, 28]
    x = g.op("Cast", ["images"], to=TensorProto.FLOAT)
    if layout == "nhwc":
        x = g.op("Transpose", [x], perm=[0, 3, 1, 2])
    x = g.op("Sub", [g.op("Mul", [x, g.weight("inv255", np.float32(1.0 / 255.0))]),
                     g.weight("mean", np.float32(mean))])
    x = g.op("Mul", [x, g.weight("inv_std", np.float32(1.0 / std))])
    for layer in spec:
        x = _layer(g, layer, x, variables["params"], variables["batch_stats"], names)
    out = g.op("LogSoftmax", [x], axis=1)
    graph = helper.make_graph(
        g.nodes, "jaxmnist", [helper.make_tensor_value_info("images", TensorProto.UINT8, shape)],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", 10])], g.weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="jaxmnist")
    model.ir_version = 8  # what onnxruntime releases of the last years all read
    return model


def from_model(model, layout: str = "nhwc"):
    """The ONNX graph of a `jaxmnist.use.inference.Model` (a restored checkpoint)."""
    from jaxmnist import nets

    recipe = model.recipe
    if recipe.tta_rotation:
        raise ValueError("this recipe evaluates with test-time rotations (tta_rotation), which "
                         "the ONNX graph does not include; export it with --format jax")
    variables = {k: _numpy(v) for k, v in model.variables.items()}
    return build(nets.spec_of(recipe.arch, recipe.dropout), variables, recipe.mean, recipe.std,
                 layout)


def _numpy(tree):
    return {k: _numpy(v) if isinstance(v, dict) else np.asarray(v) for k, v in tree.items()}
