"""Where the train step's CPU time goes, by XLA:CPU kernel: perf samples named after the fusions.

    python benchmarks/profile_step.py --arch fc19k [--seconds 10] [--top 30] [--json out.json]

jax's profiler inflated the step 4-6x on a 2-vCPU Intel Xeon, so its per-op times are no
guide there. This runs the trainer's step (`step_throughput.JaxTrain`, the
function the trainer and the throughput benchmark run) in a loop under Linux `perf record
-e cpu-clock -g` (a software clock: no hardware counters needed, which VMs often lack) and
names every sample. XLA:CPU registers each compiled kernel with the GDB JIT interface
(`__jit_debug_descriptor`), and the in-memory object files it lists carry the kernels'
names and addresses, so a sample inside a kernel gets the name of its fusion as in the
compiled HLO (`jax.jit(...).lower(...).compile().as_text()`). Other samples are classed by
their call stack: oneDNN's JIT-generated gemm code (the convolutions' and dots'
arithmetic), Eigen's convolution code around it (image-patch packing), YNNPACK (the
reductions), the thread pool waiting for work, the kernel. Needs `perf` on PATH
(Debian: `apt-get install linux-perf`) and permission to profile this process.
"""

from __future__ import annotations

from jaxmnist import machine  # process tuning (first: before JAX starts)

if __name__ == "__main__":
    machine.prepare_command()

import argparse
import bisect
import collections
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable, NamedTuple

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import step_throughput  # noqa: E402

from jaxmnist import nets
from jaxmnist.train import recipes

_SYM = np.dtype([("name", "<u4"), ("info", "u1"), ("other", "u1"), ("shndx", "<u2"),
                 ("value", "<u8"), ("size", "<u8")])
_SHDR = np.dtype([("name", "<u4"), ("type", "<u4"), ("flags", "<u8"), ("addr", "<u8"),
                  ("offset", "<u8"), ("size", "<u8"), ("link", "<u4"), ("info", "<u4"),
                  ("addralign", "<u8"), ("entsize", "<u8")])
_SHT_SYMTAB, _STT_FUNC, _ET_REL = 2, 2, 1
_KERNEL = "xla kernel: "


class Kernel(NamedTuple):
    start: int
    size: int
    name: str


def _sections(buf) -> np.ndarray:
    if bytes(buf[:4]) != b"\x7fELF" or buf[4] != 2 or buf[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF image")
    shoff = int.from_bytes(buf[0x28:0x30], "little")
    shnum = int.from_bytes(buf[0x3C:0x3E], "little")
    return np.frombuffer(buf, _SHDR, count=shnum, offset=shoff)


def _symtab(buf, sections: np.ndarray):
    """(symbols, their string table) of the image's .symtab, or None."""
    for sec in sections:
        if sec["type"] == _SHT_SYMTAB:
            syms = np.frombuffer(buf, _SYM, count=int(sec["size"]) // _SYM.itemsize,
                                 offset=int(sec["offset"]))
            strtab = sections[sec["link"]]
            return syms, (int(strtab["offset"]), int(strtab["size"]))
    return None


def elf_functions(image: bytes) -> list[Kernel]:
    """The named functions of an ELF image held in memory (an object file XLA:CPU loaded):
    addresses as loaded (sections of a relocatable object carry their load address)."""
    sections = _sections(image)
    found = _symtab(image, sections)
    if found is None:
        return []
    syms, (stroff, _) = found
    relocatable = int.from_bytes(image[0x10:0x12], "little") == _ET_REL
    out = []
    for s in syms[((syms["info"] & 0xF) == _STT_FUNC) & (syms["size"] > 0)]:
        end = image.index(b"\0", stroff + int(s["name"]))
        name = image[stroff + int(s["name"]):end].decode(errors="replace")
        start = int(s["value"])
        if relocatable and s["shndx"] < len(sections):
            start += int(sections[s["shndx"]]["addr"])
        out.append(Kernel(start, int(s["size"]), name))
    return out


def symbol_offset(path: str, name: str) -> int:
    """The value of symbol `name` in the .symtab of the shared library at `path` (its offset
    from the load address); local symbols included, which the dynamic table lacks."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            raise LookupError(f"{path} is not a 64-bit little-endian ELF file")
        shoff = int.from_bytes(head[0x28:0x30], "little")
        shnum = int.from_bytes(head[0x3C:0x3E], "little")
        f.seek(shoff)
        sections = np.frombuffer(f.read(shnum * _SHDR.itemsize), _SHDR)
        symtabs = sections[sections["type"] == _SHT_SYMTAB]
        if not len(symtabs):
            raise LookupError(f"{path} has no .symtab")
        strtab = sections[symtabs[0]["link"]]
        f.seek(int(strtab["offset"]))
        strings = f.read(int(strtab["size"]))
        at = strings.find(b"\0" + name.encode() + b"\0")
        if at < 0:
            raise LookupError(f"no symbol {name} in {path}")
        f.seek(int(symtabs[0]["offset"]))
        syms = np.frombuffer(f.read(int(symtabs[0]["size"])), _SYM)
    match = syms[syms["name"] == at + 1]
    if not len(match):
        raise LookupError(f"no symbol {name} in {path}")
    return int(match[0]["value"])


def _library_with(symbol: str) -> tuple[str, int]:
    """(path, load address) of the mapped jaxlib library that defines `symbol`."""
    seen = set()
    for line in open("/proc/self/maps"):
        parts = line.split()
        if len(parts) < 6 or "jaxlib" not in parts[5] or parts[5] in seen or int(parts[2], 16):
            continue
        seen.add(parts[5])
        try:
            return parts[5], int(parts[0].split("-")[0], 16) + symbol_offset(parts[5], symbol)
        except (LookupError, ValueError):
            continue
    raise LookupError(f"no loaded jaxlib library defines {symbol}")


def jit_kernels() -> list[Kernel]:
    """Every function XLA:CPU has JIT-compiled in this process so far, sorted by address,
    read from the GDB JIT interface's list of in-memory object files."""
    _, descriptor = _library_with("__jit_debug_descriptor")
    # struct jit_descriptor { uint32 version, action; entry *relevant, *first; }
    # struct jit_code_entry { entry *next, *prev; const char *symfile; uint64 size; }
    entry = ctypes.c_uint64.from_address(descriptor + 16).value
    kernels = []
    while entry:
        symfile = ctypes.c_uint64.from_address(entry + 16).value
        size = ctypes.c_uint64.from_address(entry + 24).value
        kernels += elf_functions(ctypes.string_at(symfile, size))
        entry = ctypes.c_uint64.from_address(entry).value
    return sorted(kernels)


class KernelIndex:
    def __init__(self, kernels: Iterable[Kernel]):
        self.kernels = sorted(kernels)
        self.starts = [k.start for k in self.kernels]

    def name(self, ip: int) -> str | None:
        i = bisect.bisect_right(self.starts, ip) - 1
        if i >= 0 and ip < self.kernels[i].start + self.kernels[i].size:
            return self.kernels[i].name
        return None


def classify(frames: list[tuple[int, str]], index: KernelIndex) -> str:
    """A sample's label from its call stack (leaf first): the XLA kernel it ran in, else
    the library code by what called it."""
    leaf_ip, leaf = frames[0]
    kernel = index.name(leaf_ip)
    if kernel:
        return _KERNEL + kernel
    stack = " ".join(sym for _, sym in frames)
    if leaf.startswith("[unknown]") and "perf-" in leaf:
        return "oneDNN JIT gemm (convolution / dot arithmetic)"
    if "ConvolutionThunk" in stack:
        return "Eigen convolution (patch packing, blocking)"
    if "DotThunk" in stack:
        return "Eigen dot"
    if "ynn" in stack.lower() or "xnn" in stack.lower():
        return "YNNPACK (reductions)"
    if "WorkerLoop" in stack:
        return "thread pool: waiting for work"
    if "[kernel" in stack:
        return "kernel"
    if "_PyEval" in stack or "Py" in stack:
        return "python"
    return "other"


def parse_perf_script(text: str) -> Iterable[list[tuple[int, str]]]:
    """Samples of `perf script -F ip,sym,dso` with call graphs: lists of (ip, symbol)."""
    frames: list[tuple[int, str]] = []
    for line in text.splitlines() + [""]:
        s = line.strip()
        if not s:
            if frames:
                yield frames
            frames = []
            continue
        head, _, rest = s.partition(" ")
        try:
            frames.append((int(head, 16), rest.strip()))
        except ValueError:
            pass


def profile(arch: str, seconds: float, frequency: int = 2000) -> dict:
    perf = shutil.which("perf")
    if perf is None:
        raise SystemExit("error: perf not found on PATH; install Linux perf (Debian: apt-get "
                         "install linux-perf) to profile the step")
    # Executables loaded from the persistent compilation cache do not register their
    # kernels with the GDB JIT interface: compile afresh.
    jax.config.update("jax_enable_compilation_cache", False)
    recipe = recipes.recipe_for(arch)
    images, labels = step_throughput.synthetic_data(0)
    runner = step_throughput.JaxTrain(recipe, jax.device_put(images), jax.device_put(labels),
                                      np.random.default_rng(0))
    runner.timed(5)  # compile and warm up
    index = KernelIndex(jit_kernels())
    if not index.kernels:
        raise SystemExit("error: found no XLA:CPU kernels through the GDB JIT interface")
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        rec = subprocess.Popen([perf, "record", "-e", "cpu-clock", "-F", str(frequency), "-g",
                                "-p", str(os.getpid()), "-o", data, "--", "sleep", str(seconds)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        steps, t0 = 0, time.perf_counter()
        while rec.poll() is None:
            runner.timed(5)
            steps += 5
        wall = time.perf_counter() - t0
        if rec.returncode != 0 or not os.path.exists(data):
            raise SystemExit(f"error: perf record failed: {rec.stderr.read().strip()[-300:]} "
                             "(is /proc/sys/kernel/perf_event_paranoid too strict?)")
        script = subprocess.run([perf, "script", "-i", data, "-F", "ip,sym,dso"],
                                capture_output=True, text=True).stdout
    counts = collections.Counter(classify(f, index) for f in parse_perf_script(script))
    total = sum(counts.values())
    return {"arch": arch, "batch_size": recipe.batch_size, "steps": steps,
            "ms_per_step": 1e3 * wall / max(steps, 1), "samples": total,
            "jit_kernels": len(index.kernels),
            "shares": {k: v / total for k, v in counts.most_common()} if total else {}}


def table(result: dict, top: int) -> str:
    groups = collections.Counter()
    for label, share in result["shares"].items():
        groups["XLA:CPU kernels (fusions, listed below)" if label.startswith(_KERNEL) else label] += share
    rows = [[label, f"{100 * share:.1f}%"] for label, share in groups.most_common()]
    kernels = [[label[len(_KERNEL):], f"{100 * share:.1f}%"]
               for label, share in result["shares"].items() if label.startswith(_KERNEL)][:top]
    return (f"{result['arch']} batch {result['batch_size']}: {result['steps']} steps, "
            f"{result['ms_per_step']:.1f} ms per step under perf, {result['samples']} samples\n\n"
            + common.markdown_table(["where", "share of samples"], rows) + "\n\n"
            + common.markdown_table(["XLA kernel (fusion)", "share of samples"], kernels))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="fc19k", choices=list(nets.ARCHS))
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--top", type=int, default=30, help="how many kernels to list")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    if args.seconds <= 0:
        p.error("--seconds must be > 0")
    result = profile(args.arch, args.seconds)
    result["machine"] = common.machine_info()
    print(table(result, args.top))
    if args.json:
        common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
