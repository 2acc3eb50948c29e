"""`python -m jaxmnist.summary --arch gap8k`: a torchsummary-style table of a network.

Computed from the architecture's spec tuple alone (no JAX needed): output shapes,
trainable parameters as PyTorch counts them, receptive field and jump (input-pixel
stride) after each layer, and multiply-accumulates per image (convs and dense layers).

Receptive fields use the standard recurrence r_out = r_in + (k - 1) * j_in and
j_out = j_in * stride. Seed 002's own table was made with r_in + (k - 1) * j_out, which
overstates every layer after the first pool (its 11/15/19/27 are 10/14/16/24 here).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from jaxmnist.nets import layers as L
from jaxmnist.nets import ARCHS, UnknownArch, check_arch

_TORCH_NAMES = {
    L.Conv: "Conv2d",
    L.BatchNorm: "BatchNorm2d",
    L.ReLU: "ReLU",
    L.MaxPool: "MaxPool2d",
    L.Dropout: "Dropout",
    L.GlobalAvgPool: "AvgPool2d",
    L.Flatten: "Flatten",
    L.Dense: "Linear",
}


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    spec: object
    shape: tuple  # (C, H, W) or (features,)
    params: int
    rf: int
    jump_in: int
    jump_out: int
    macs: int
    kernel: int  # window size in input pixels of this layer (1 for pointwise layers)


def layer_rows(arch: str, size: int = 28) -> list[Row]:
    spec = ARCHS[check_arch(arch)]()
    c, h, w = 1, size, size
    features = None
    rf, jump = 1, 1
    rows = []
    for i, layer in enumerate(spec, 1):
        params, macs, k, jump_in = 0, 0, 1, jump
        if isinstance(layer, L.Conv):
            k = layer.kernel
            h = h + 2 * layer.padding - k + 1
            w = w + 2 * layer.padding - k + 1
            params = k * k * c * layer.features + (layer.features if layer.bias else 0)
            macs = h * w * k * k * c * layer.features
            c = layer.features
        elif isinstance(layer, L.BatchNorm):
            params = 2 * c
        elif isinstance(layer, L.MaxPool):
            k = 2
            h, w = h // 2, w // 2
            jump *= 2
        elif isinstance(layer, (L.GlobalAvgPool,)):
            k = h
            jump *= h
            h = w = 1
        elif isinstance(layer, L.Flatten):
            features = c * h * w
        elif isinstance(layer, L.Dense):
            k = h  # a dense layer over an h x h map sees all of it
            params = features * layer.features + (layer.features if layer.bias else 0)
            macs = features * layer.features
            features = layer.features
            jump *= h
            h = w = 1
        rf += (k - 1) * jump_in
        shape = (features,) if features is not None else (c, h, w)
        rows.append(Row(f"{_TORCH_NAMES[type(layer)]}-{i}", layer, shape, params, rf, jump_in, jump, macs, k))
    return rows


def format_table(arch: str) -> str:
    rows = layer_rows(arch)
    line = "-" * 86
    out = [line, f"{'Layer (type)':>22} {'Output Shape':>20} {'Param #':>10} {'RF':>6} {'Jump in':>8} {'Jump out':>9}", "=" * 86]
    for r in rows:
        shape = "[-1, " + ", ".join(str(s) for s in r.shape) + "]"
        out.append(f"{r.name:>22} {shape:>20} {r.params:>10,} {r.rf:>6} {r.jump_in:>8} {r.jump_out:>9}")
    total = sum(r.params for r in rows)
    macs = sum(r.macs for r in rows)
    out += [
        "=" * 86,
        f"Total params: {total:,}",
        f"Trainable params: {total:,}",
        "Non-trainable params: 0 (BatchNorm running statistics are state, not parameters)",
        f"Multiply-accumulates per image: {macs:,} ({macs / 1e6:.2f} M)",
        f"Final receptive field: {rows[-1].rf} pixels",
        line,
    ]
    return "\n".join(out)


def one_line(arch: str) -> str:
    rows = layer_rows(arch)
    return (f"{arch:<7} params {sum(r.params for r in rows):>7,}   "
            f"MACs {sum(r.macs for r in rows):>10,}   receptive field {rows[-1].rf}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jaxmnist.summary", description=__doc__)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--arch", help=f"one of: {', '.join(ARCHS)}")
    which.add_argument("--all", action="store_true", help="one line per architecture")
    args = parser.parse_args(argv)
    try:
        if args.all:
            print("\n".join(one_line(a) for a in ARCHS))
        else:
            print(format_table(args.arch))
    except UnknownArch as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
