"""Helpers shared by the benchmarks: machine description, timing summaries, tables, and
the PyTorch-side random rotation.

Imports only the standard library, numpy and `jaxmnist.machine` (which imports nothing
heavy) at module level: `time_to_accuracy.py`'s PyTorch worker must not pull in JAX.
jax and torch are imported lazily, inside the functions that need them.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from jaxmnist import machine

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "torch")
MEAN, STD = 0.1307, 0.3081  # the seeds' Normalize((0.1307,), (0.3081,))


cpu_model, cpu_id = machine.cpu_model, machine.cpu_id


def cpu_label(machine: dict[str, Any]) -> str:
    """The model name, with vendor family/model/stepping and ISA extensions when known."""
    ident = machine.get("cpu_id") or {}
    extra = "/".join(ident[k] for k in ("family", "model", "stepping") if k in ident)
    if ident.get("isa"):
        extra = f"{extra}; {' '.join(ident['isa'])}" if extra else " ".join(ident["isa"])
    return f"{machine['cpu']} ({extra})" if extra else machine["cpu"]


def n_cores() -> int:
    """CPUs this process may run on (the affinity mask), else os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def versions(packages: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state() -> str | None:
    """`git describe --always --dirty` of the repository (jaxmnist/ changes under us)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True, text=True, timeout=10, check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info(with_jax: bool = True) -> dict[str, Any]:
    """What a reader needs to compare two result files: `jaxmnist.machine.describe()`
    (which imports jax, with `with_jax`) and the benchmark's own context."""
    info: dict[str, Any] = machine.describe(with_jax=with_jax)
    info.update({
        "versions": versions(),
        "os_cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "JAXMNIST_TUNE": os.environ.get("JAXMNIST_TUNE", "1"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "git": git_state(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average": load_average(),
    })
    return info


# cross_core_ratio() above this: moving cache lines between the first two CPUs is slow.
SLOW_CROSS_CORE = 2.5


def slow_phase(ratio: float) -> bool:
    """Whether a cross_core_ratio() reading falls in one of the VM's slow phases."""
    return ratio > SLOW_CROSS_CORE


def cross_core_ratio(megabytes: int = 8, rounds: int = 5) -> float | None:
    """How much longer one CPU takes to overwrite a buffer another CPU has just read than one
    it read itself (median over rounds); None with fewer than two CPUs or no affinity API.

    This project's 2-vCPU VM has phases, seconds to minutes long, in which moving cache
    lines between its two CPUs costs ~4x: this ratio reads 1.0-1.2 normally and 6-7 then
    (checked against a C probe of the line round-trip time: 80-130 ns vs 320-420 ns). Those
    phases cost the jaxmnist step 20-25% and PyTorch's less, so the benchmark records the
    ratio before every repeat. Uses numpy (np.copyto releases the GIL) and two threads,
    each pinned to one CPU; ~50 ms.
    """
    import numpy as np

    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None
    if len(cpus) < 2:
        return None
    buf = np.zeros(megabytes * 2**18, np.float32)
    src = np.ones_like(buf)
    meet = threading.Barrier(2)
    own: list[float] = []
    other: list[float] = []
    failed: list[BaseException] = []

    def pinned(cpu, body):
        """A thread target running body() on one CPU; an error ends the probe, not the run."""
        def target():
            try:
                os.sched_setaffinity(0, {cpu})  # this thread only
                for _ in range(rounds):
                    body()
            except BaseException as exc:  # noqa: BLE001 - reported below, never raised in a thread
                failed.append(exc)
                meet.abort()
        return target

    def read():
        meet.wait()
        float(buf.sum())
        meet.wait()
        meet.wait()

    def write():
        meet.wait()
        meet.wait()  # the other CPU has read buf
        t = time.perf_counter()
        np.copyto(buf, src)
        other.append(time.perf_counter() - t)
        float(buf.sum())
        t = time.perf_counter()
        np.copyto(buf, src)
        own.append(time.perf_counter() - t)
        meet.wait()

    threads = [threading.Thread(target=pinned(cpus[1], read)),
               threading.Thread(target=pinned(cpus[0], write))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed or not own:
        return None
    return statistics.median(other) / statistics.median(own)


def busy_warning(load: Sequence[float] | None, cores: int) -> str | None:
    """A note when the 1-minute load average says other work shares the cores."""
    if load and load[0] > 0.5 * cores:
        return (
            f"load average {load[0]:.2f} on {cores} cores: other processes were running, "
            "these numbers are not a clean measurement (multi-threaded PyTorch suffers most)"
        )
    return None


def summarize(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def fmt_num(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
                   right: Sequence[bool] | None = None) -> str:
    right = right or [False] * len(headers)
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]

    def line(values):
        return "| " + " | ".join(
            v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)
        ) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if r else ("-" * (w + 2))
                         for w, r in zip(widths, right)) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in cells)])


def write_json(path: str | os.PathLike, obj: Any) -> None:
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def default_data_dir() -> str | None:
    """$JAXMNIST_DATA_DIR, else ../shared/datasets/mnist beside the repo if present."""
    env = os.environ.get("JAXMNIST_DATA_DIR")
    if env:
        return env
    shared = REPO.parent / "shared" / "datasets" / "mnist"
    return str(shared) if shared.is_dir() else None


# --- PyTorch side --------------------------------------------------------------------


def torch_rotate_nearest(x, angles_deg):
    """torchvision RandomRotation's geometry with torch ops, for a batch with per-image angles.

    x: (N, C, H, W) float; angles_deg: (N,) counter-clockwise degrees (PIL's convention).
    torchvision rotates PIL images (`Image.rotate(angle, NEAREST, expand=False,
    center=None, fillcolor=0)`): centre (W/2, H/2), each output pixel centre mapped back
    through the inverse rotation, nearest source pixel, 0 outside. Here: affine_grid +
    grid_sample(mode='nearest', padding_mode='zeros', align_corners=False), which maps
    the same way; nearest rounds half-to-even where PIL floors, so a pixel can differ
    where a source coordinate lands exactly on a pixel edge (measure zero; the tests
    check agreement with jaxmnist.data.augment.rotate). Square images only (MNIST).
    """
    import math

    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    if h != w:
        raise ValueError("torch_rotate_nearest handles square images only")
    a = angles_deg.to(torch.float32) * (math.pi / 180.0)
    cos, sin = torch.cos(a), torch.sin(a)
    zero = torch.zeros_like(a)
    # output (x, y) in normalised coords (y down) -> source: PIL's inverse rotation.
    theta = torch.stack(
        [torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def torch_augment(images_u8, angles_deg, rotation: float):
    """uint8 (N, 1, H, W) -> rotated (if rotation > 0), ToTensor-scaled, normalised float."""
    x = images_u8.float().div_(255.0)
    if rotation > 0:
        x = torch_rotate_nearest(x, angles_deg)
    return x.sub_(MEAN).div_(STD)


def to_nchw(images_nhwc):
    """numpy uint8 (N, H, W, C) -> contiguous torch uint8 (N, C, H, W)."""
    import numpy as np
    import torch

    return torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def publish_run(report: dict, table: str, json_path: str | None, load_before,
                notes: Sequence[str] = ()) -> dict:
    """publish() under a machine line, the notes, and the busy warning if the load average
    taken before the run calls for it (kept as the machine's load_average; the one after
    the run, which the run itself raised, as load_average_after)."""
    machine = report["machine"]
    machine["load_average"], machine["load_average_after"] = load_before, machine["load_average"]
    lines = [f"Machine: {cpu_label(machine)}, {machine['cores']} cores; git {machine.get('git')}.",
             *notes]
    warning = busy_warning(load_before, machine["cores"])
    if warning:
        lines.append(warning)
    return publish(report, table + "\n\n" + "\n".join(lines), json_path)


def publish(report: dict, table: str, json_path: str | None) -> dict:
    """Prints the markdown table and, when asked, writes the JSON report."""
    print(table, flush=True)
    if json_path:
        write_json(json_path, report)
        log(f"wrote {json_path}")
    return report
