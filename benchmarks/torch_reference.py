"""The five seed networks in plain PyTorch, as an independent reference for jaxmnist.

Written from the seed documents (../shared/seeds/00x_*.txt) in the seeds' own style
(NCHW, nn.Conv2d / nn.BatchNorm2d / nn.Dropout, F.relu, F.max_pool2d, log_softmax), with
the reconstruction choices documented in `jaxmnist.nets.archs` wherever a seed leaves
something open (ReLU/BN order, dropout rates, the 1x1 transitions, biases).

`load_jax_variables` copies a jaxmnist `variables` dict into one of these modules so the
two implementations can be compared value for value; `make_optimizer` and `train_step`
give benchmarks a seed-style PyTorch training step (SGD + NLL loss).

Only torch and numpy are imported at module level: benchmarks import this beside jax,
and jaxmnist itself never imports torch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Fc19k(nn.Module):
    """Seed 000 (18,970 params): seven biased 3x3 convs, each conv -> BN -> ReLU, FC 120->10.

    conv1-4 padded (28 -> pool 14 -> pool 7), conv5-7 unpadded (7 -> 5 -> 3 -> 1), dropout
    0.1 after each pool and after conv5 and conv6.
    """

    def __init__(self, dropout: float = 0.1):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(10)
        self.conv2 = nn.Conv2d(10, 20, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(20)
        self.conv3 = nn.Conv2d(20, 10, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(10)
        self.conv4 = nn.Conv2d(10, 10, 3, padding=1)
        self.bn4 = nn.BatchNorm2d(10)
        self.conv5 = nn.Conv2d(10, 10, 3)
        self.bn5 = nn.BatchNorm2d(10)
        self.conv6 = nn.Conv2d(10, 10, 3)
        self.bn6 = nn.BatchNorm2d(10)
        self.conv7 = nn.Conv2d(10, 120, 3)
        self.bn7 = nn.BatchNorm2d(120)
        self.fc = nn.Linear(120, 10)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.dropout(F.max_pool2d(x, 2, 2))
        x = F.relu(self.bn3(self.conv3(x)))
        x = F.relu(self.bn4(self.conv4(x)))
        x = self.dropout(F.max_pool2d(x, 2, 2))
        x = self.dropout(F.relu(self.bn5(self.conv5(x))))
        x = self.dropout(F.relu(self.bn6(self.conv6(x))))
        x = F.relu(self.bn7(self.conv7(x)))
        x = torch.flatten(x, 1)
        return F.log_softmax(self.fc(x), dim=1)


class Gap7k(nn.Module):
    """Seed 001 (7,416 params): bias-free convs, conv -> ReLU -> BN -> dropout, GAP, 1x1 head.

    Follows the seed's table; the 16->8 transition at 24x24 is 1x1 (the only size that
    gives the stated total), with nothing after it. Dropout 0.05 (rate not in the seed).
    """

    def __init__(self, dropout: float = 0.05):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, bias=False)      # 28 -> 26
        self.conv2 = nn.Conv2d(8, 16, 3, bias=False)     # 26 -> 24
        self.bn2 = nn.BatchNorm2d(16)
        self.trans = nn.Conv2d(16, 8, 1, bias=False)     # 24 -> 24, then pool -> 12
        self.conv3 = nn.Conv2d(8, 16, 3, bias=False)     # 12 -> 10
        self.bn3 = nn.BatchNorm2d(16)
        self.conv4 = nn.Conv2d(16, 8, 3, bias=False)     # 10 -> 8
        self.bn4 = nn.BatchNorm2d(8)
        self.conv5 = nn.Conv2d(8, 16, 3, bias=False)     # 8 -> 6
        self.bn5 = nn.BatchNorm2d(16)
        self.conv6 = nn.Conv2d(16, 16, 3, bias=False)    # 6 -> 4
        self.bn6 = nn.BatchNorm2d(16)
        self.gap = nn.AvgPool2d(4)
        self.head = nn.Conv2d(16, 10, 1, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = self.dropout(self.bn2(F.relu(self.conv2(x))))
        x = F.max_pool2d(self.trans(x), 2, 2)
        x = self.dropout(self.bn3(F.relu(self.conv3(x))))
        x = self.dropout(self.bn4(F.relu(self.conv4(x))))
        x = self.dropout(self.bn5(F.relu(self.conv5(x))))
        x = self.dropout(self.bn6(F.relu(self.conv6(x))))
        x = self.head(self.gap(x))
        x = torch.flatten(x, 1)
        return F.log_softmax(x, dim=1)


class Fc16k(nn.Module):
    """Seed 002 (16,146 params): biased padded 3x3 convs, conv -> BN -> ReLU, 1x1 to 8, FC.

    The torchsummary table fixes the layers; ReLUs (functional in the seed) go after each
    BN and after the 1x1 transition. Dropout 0.1 (rate not in the seed).
    """

    def __init__(self, dropout: float = 0.1):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.drop1 = nn.Dropout(dropout)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(16)
        self.conv4 = nn.Conv2d(16, 16, 3, padding=1)
        self.bn4 = nn.BatchNorm2d(16)
        self.drop2 = nn.Dropout(dropout)
        self.conv5 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn5 = nn.BatchNorm2d(32)
        self.trans = nn.Conv2d(32, 8, 1)
        self.fc = nn.Linear(8 * 7 * 7, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.drop1(F.relu(self.bn2(self.conv2(x))))
        x = F.max_pool2d(x, 2)
        x = F.relu(self.bn3(self.conv3(x)))
        x = self.drop2(F.relu(self.bn4(self.conv4(x))))
        x = F.max_pool2d(x, 2)
        x = F.relu(self.bn5(self.conv5(x)))
        x = F.relu(self.trans(x))
        x = torch.flatten(x, 1)  # (C, H, W) order: 8 * 7 * 7 = 392
        return F.log_softmax(self.fc(x), dim=1)


class Gap8k(nn.Module):
    """Seed 003 (7,776 params): bias-free convs, BN after every conv, dropout 0.01, GAP.

    8 -> 12 -> 1x1 transition to 10 (BN, no ReLU) -> pool -> 12 -> 16 -> 16 -> 10 (BN only)
    -> GAP over 4x4; all unpadded (28 -> 26 -> 24 -> 24 -> 12 -> 10 -> 8 -> 6 -> 4).
    """

    def __init__(self, dropout: float = 0.01):
        super().__init__()
        self.convblock1 = self._block(1, 8, dropout)
        self.convblock2 = self._block(8, 12, dropout)
        self.trans = nn.Sequential(nn.Conv2d(12, 10, 1, bias=False), nn.BatchNorm2d(10))
        self.pool = nn.MaxPool2d(2, 2)
        self.convblock3 = self._block(10, 12, dropout)
        self.convblock4 = self._block(12, 16, dropout)
        self.convblock5 = self._block(16, 16, dropout)
        self.out = nn.Sequential(nn.Conv2d(16, 10, 3, bias=False), nn.BatchNorm2d(10))
        self.gap = nn.AvgPool2d(4)

    @staticmethod
    def _block(cin, cout, dropout):
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Dropout(dropout),
        )

    def forward(self, x):
        x = self.convblock1(x)
        x = self.convblock2(x)
        x = self.pool(self.trans(x))
        x = self.convblock3(x)
        x = self.convblock4(x)
        x = self.convblock5(x)
        x = self.gap(self.out(x))
        x = torch.flatten(x, 1)
        return F.log_softmax(x, dim=-1)


class Gap9k(nn.Module):
    """Seed 004 (8,932 params): the torchsummary table layer for layer, bias-free convs."""

    def __init__(self, dropout: float = 0.05):
        super().__init__()

        def block(cin, cout, k=3, padding=0):
            return [
                nn.Conv2d(cin, cout, k, padding=padding, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.Dropout(dropout),
            ]

        self.features = nn.Sequential(
            *block(1, 4),                 # 26
            *block(4, 4),                 # 24
            *block(4, 8),                 # 22
            nn.MaxPool2d(2, 2),           # 11
            *block(8, 8, k=1),            # 11
            *block(8, 16),                # 9
            *block(16, 16),               # 7
            *block(16, 16, padding=1),    # 7
            *block(16, 16, padding=1),    # 7
            nn.Conv2d(16, 10, 1, bias=False),
            nn.AvgPool2d(7),
        )

    def forward(self, x):
        x = self.features(x)
        x = torch.flatten(x, 1)
        return F.log_softmax(x, dim=-1)


TORCH_ARCHS = {
    "fc19k": Fc19k,
    "gap7k": Gap7k,
    "fc16k": Fc16k,
    "gap8k": Gap8k,
    "gap9k": Gap9k,
}


def count_params(model: nn.Module) -> int:
    """Trainable parameters, as torchsummary counts them."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def set_dropout(model: nn.Module, p: float) -> nn.Module:
    """Set every nn.Dropout's rate (e.g. 0 to compare train-mode passes across frameworks)."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p
    return model


def _numbered(tree, kind):
    names = sorted((k for k in tree if k.startswith(kind) and k[len(kind):].isdigit()),
                   key=lambda k: int(k[len(kind):]))
    return [tree[k] for k in names]


def load_jax_variables(torch_model: nn.Module, variables) -> nn.Module:
    """Copy jaxmnist `variables` ({'params', 'batch_stats'}) into `torch_model` in place.

    jaxmnist numbers layers per kind in forward order (conv1.., bn1.., dense1..); every
    module here is defined in forward order too, so the i-th nn.Conv2d takes conv{i}, the
    i-th nn.BatchNorm2d bn{i}, the i-th nn.Linear dense{i}. Kernels go HWIO -> OIHW and
    (in, out) -> (out, in); the Linear's input order already matches because jaxmnist
    flattens in (C, H, W) order. Shapes, counts and bias presence must match exactly.
    Values are read with numpy only, so any tree of that layout works (e.g. gradients).
    """
    params = variables["params"]
    stats = variables.get("batch_stats", {})
    convs = [m for m in torch_model.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in torch_model.modules() if isinstance(m, nn.BatchNorm2d)]
    fcs = [m for m in torch_model.modules() if isinstance(m, nn.Linear)]
    jconvs, jbns, jfcs = (_numbered(params, k) for k in ("conv", "bn", "dense"))
    jstats = _numbered(stats, "bn")
    for kind, t, j in (("conv", convs, jconvs), ("bn", bns, jbns), ("dense", fcs, jfcs)):
        if len(t) != len(j):
            raise ValueError(f"{kind}: torch model has {len(t)} layers, jax variables {len(j)}")
    if len(jstats) != len(bns):
        raise ValueError(f"batch_stats: {len(jstats)} entries for {len(bns)} BatchNorm2d")

    def copy(dst: torch.Tensor, src, what):
        src = torch.from_numpy(np.array(src, dtype=np.float32))
        if tuple(src.shape) != tuple(dst.shape):
            raise ValueError(f"{what}: shape {tuple(src.shape)} != torch {tuple(dst.shape)}")
        dst.copy_(src)

    def copy_bias(module, p, what):
        if (module.bias is None) != ("bias" not in p):
            raise ValueError(f"{what}: bias presence differs between torch and jax")
        if module.bias is not None:
            copy(module.bias, p["bias"], f"{what}.bias")

    with torch.no_grad():
        for i, (m, p) in enumerate(zip(convs, jconvs), 1):
            copy(m.weight, np.transpose(np.asarray(p["kernel"]), (3, 2, 0, 1)), f"conv{i}.kernel")
            copy_bias(m, p, f"conv{i}")
        for i, (m, p) in enumerate(zip(fcs, jfcs), 1):
            copy(m.weight, np.asarray(p["kernel"]).T, f"dense{i}.kernel")
            copy_bias(m, p, f"dense{i}")
        for i, (m, p, s) in enumerate(zip(bns, jbns, jstats), 1):
            copy(m.weight, p["scale"], f"bn{i}.scale")
            copy(m.bias, p["bias"], f"bn{i}.bias")
            copy(m.running_mean, s["mean"], f"bn{i}.mean")
            copy(m.running_var, s["var"], f"bn{i}.var")
    return torch_model


def make_optimizer(model: nn.Module, lr: float, momentum: float = 0.9,
                   nesterov: bool = False, weight_decay: float = 0.0) -> torch.optim.SGD:
    """The seeds' optimiser: torch.optim.SGD (weight decay coupled, as torch does it)."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                           nesterov=nesterov, weight_decay=weight_decay)


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor) -> torch.Tensor:
    """One seed-style step: forward (train mode), NLL loss, backward, SGD step.

    `x` is NCHW float32 (N, 1, 28, 28), `y` int64 labels. Returns the (detached) loss.
    """
    model.train()
    opt.zero_grad()
    loss = F.nll_loss(model(x), y)
    loss.backward()
    opt.step()
    return loss.detach()
