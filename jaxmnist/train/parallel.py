"""How a run is spread over devices and hosts: one `jax.sharding` mesh, nothing home-made.

A run's devices form a mesh of two axes, `models` x `data`. The K models of a multi-seed
run are split over `models` (each device trains K/models of them) and each model's batch
over `data`; with one model the mesh is all `data` (data parallel). Parameters and
optimiser state are replicated over `data`, the whole dataset is placed once on every
device (60k uint8 images are 47 MB) and each step gathers its batch there from sharded
indices, so the only per-step host->device traffic is B int32 indices.

The step itself is the one-device step under `jax.jit`: XLA's partitioner (GSPMD) splits
it from the shardings of its inputs and inserts the collectives. BatchNorm therefore
normalises with the statistics of the GLOBAL batch, as one device would (SyncBatchNorm
semantics, not PyTorch DDP's per-device statistics), and the gradients are the global
batch's mean: N devices take the same steps as one, up to the order of float sums.

Several hosts: `jax.distributed.initialize` (flags below, or the environment JAX reads:
JAX_COORDINATOR_ADDRESS, and cluster auto-detection on SLURM, Open MPI and Cloud TPU
VMs). Every process loads the dataset itself and computes the same epoch plan from the
seeds, then feeds only its own part of each batch's indices
(`jax.make_array_from_process_local_data`); process 0 alone prints and writes the
workdir's files, and every process takes part in orbax's checkpoint saves.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from typing import Any

import numpy as np

MODELS, DATA = "models", "data"


class LayoutError(ValueError):
    """A device count or batch size that cannot be laid out; the message says what to do."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("devices and hosts")
    group.add_argument("--devices", default="all",
                       help="N or all (default): how many of this machine's devices (all of them "
                            "on every host in a multi-host run) train the run; 1 is one device")
    group.add_argument("--coordinator-address", default=None,
                       help="multi-host runs: host:port of process 0 (default: "
                            "$JAX_COORDINATOR_ADDRESS or auto-detected on SLURM/Open MPI/TPU VMs)")
    group.add_argument("--num-processes", type=int, default=None, help="multi-host runs: process count")
    group.add_argument("--process-id", type=int, default=None, help="multi-host runs: this process's rank")
    group.add_argument("--distributed", action="store_true",
                       help="call jax.distributed.initialize() with its cluster auto-detection "
                            "(implied by any of the three flags above or $JAX_COORDINATOR_ADDRESS)")


def initialize(args: argparse.Namespace) -> None:
    """jax.distributed.initialize when the command line or environment asks for several
    processes; must run before anything touches a JAX device."""
    wanted = (args.distributed or args.coordinator_address is not None
              or args.num_processes is not None or args.process_id is not None
              or bool(os.environ.get("JAX_COORDINATOR_ADDRESS")))
    if not wanted:
        return
    import jax

    jax.distributed.initialize(coordinator_address=args.coordinator_address,
                               num_processes=args.num_processes, process_id=args.process_id)
    _connect()


def _connect() -> None:
    """Sets up the processes' collectives while they are in step.

    CPU collectives (gloo) connect lazily, at a device group's first collective, and give
    up when a peer has not arrived within 30 s; processes that leave initialize() together
    but then compile at different speeds (two processes sharing a few cores) can miss
    that window at the first checkpoint barrier or the first train step. One barrier and
    one all-device reduction right away make both connections while nothing else runs."""
    import jax
    import jax.numpy as jnp
    from jax.experimental import multihost_utils
    from jax.sharding import NamedSharding, PartitionSpec

    multihost_utils.sync_global_devices("jaxmnist: processes connected")
    mesh = jax.make_mesh((jax.device_count(),), (DATA,),
                         axis_types=(jax.sharding.AxisType.Auto,))
    ones = jax.make_array_from_process_local_data(
        NamedSharding(mesh, PartitionSpec(DATA)), np.ones(jax.local_device_count(), np.float32))
    total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, PartitionSpec()))(ones)
    if float(total) != jax.device_count():
        raise RuntimeError(f"the {jax.process_count()} processes do not see each other's devices")


def is_primary() -> bool:
    """Process 0: the one that prints and writes files (always True on one host)."""
    import jax

    return jax.process_index() == 0


def primary_print():
    """print on process 0 of a multi-host run (every process runs the same CLI), else a no-op."""
    import builtins

    return builtins.print if is_primary() else (lambda *a, **k: None)


def parse_devices(value: Any) -> int | None:
    """--devices: a positive int, or None for all."""
    if value is None or value == "all":
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise LayoutError(f"--devices must be a positive number or 'all', got {value!r}") from None
    if n < 1:
        raise LayoutError(f"--devices must be a positive number or 'all', got {n}")
    return n


@dataclasses.dataclass(frozen=True)
class Layout:
    """The mesh a run trains on, or none (one device: the one-device code path, unchanged).

    `models` = gcd(K, devices) so every device holds the same number of models; the rest
    of the devices split each model's batch (`data`). K=4 on 4 devices: 4 x 1; K=1: 1 x 4;
    K=2: 2 x 2; K=5 on 4 devices: 1 x 4.
    """

    mesh: Any  # jax.sharding.Mesh | None
    n_models: int

    @property
    def size(self) -> int:
        return 1 if self.mesh is None else self.mesh.size

    @property
    def models(self) -> int:
        return 1 if self.mesh is None else self.mesh.shape[MODELS]

    @property
    def data(self) -> int:
        return 1 if self.mesh is None else self.mesh.shape[DATA]

    def describe(self) -> dict:
        import jax

        devices = [] if self.mesh is None else list(self.mesh.devices.flat)
        platform = devices[0].platform if devices else jax.devices()[0].platform
        return {
            "models": self.models,
            "data": self.data,
            "devices": self.size,
            "platform": platform,
            "processes": len({d.process_index for d in devices}) if devices else 1,
        }

    def line(self) -> str:
        d = self.describe()
        axes = (f"models={d['models']} " if d["models"] > 1 else "") + f"data={d['data']}"
        hosts = f" in {d['processes']} processes" if d["processes"] > 1 else ""
        return f"mesh: {axes} over {d['devices']} {d['platform']} device(s){hosts}"

    # -- shardings -----------------------------------------------------------------
    def _named(self, *spec):
        from jax.sharding import NamedSharding, PartitionSpec

        return NamedSharding(self.mesh, PartitionSpec(*spec))

    @property
    def replicated(self):
        return None if self.mesh is None else self._named()

    @property
    def state_sharding(self):
        """Every leaf of a (stacked) TrainState: split over `models` when K > 1."""
        if self.mesh is None:
            return None
        return self._named(MODELS) if self.n_models > 1 else self._named()

    def batch_sharding(self, idx_shape: tuple[int, ...], scanned: bool):
        """Batch indices (S?, K?, B): steps unsplit, models over `models`, examples over
        `data` when B divides (a last partial batch that does not is computed whole on
        every device of its models)."""
        lead = (None,) if scanned else ()
        model = (MODELS,) if self.n_models > 1 else ()
        data = DATA if idx_shape[-1] % self.data == 0 else None
        return self._named(*lead, *model, data)

    def key_sharding(self, scanned: bool):
        lead = (None,) if scanned else ()
        return self._named(*lead, MODELS) if self.n_models > 1 else self._named()

    # -- placement -----------------------------------------------------------------
    def put(self, x, sharding):
        """A host array (the same on every process) as a global array with `sharding`;
        each process supplies only the part its own devices hold."""
        import jax

        if self.mesh is None:
            return jax.numpy.asarray(x)
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(sharding, process_local(x, sharding), x.shape)

    def put_tree(self, tree, sharding):
        import jax

        if self.mesh is None:
            return tree
        return jax.tree_util.tree_map(lambda x: self.put(x, sharding), tree)

    def put_replicated(self, x):
        return self.put(x, self.replicated)

    def put_batch(self, idx, keys, scanned: bool):
        if self.mesh is None:
            return idx, keys
        return (self.put(idx, self.batch_sharding(np.shape(idx), scanned)),
                self.put(keys, self.key_sharding(scanned)))


def process_local(x: np.ndarray, sharding) -> np.ndarray:
    """The block of global array x that this process's devices hold under `sharding`."""
    index_map = sharding.addressable_devices_indices_map(x.shape)
    block = []
    for dim, size in enumerate(x.shape):
        starts = [ix[dim].indices(size)[0] for ix in index_map.values()]
        stops = [ix[dim].indices(size)[1] for ix in index_map.values()]
        block.append(slice(min(starts), max(stops)))
    return x[tuple(block)]


def make_layout(devices: Any, n_models: int, batch_size: int) -> Layout:
    """The Layout for `--devices` (an int, "all" or None) and a K-model run.

    One device gives no mesh at all, so `--devices 1` runs exactly the one-device program.
    Errors name the numbers and the fix; several processes need every device."""
    import jax
    from jax.sharding import AxisType

    wanted = parse_devices(devices)
    available = jax.devices()
    local = jax.local_device_count()
    if jax.process_count() > 1:
        if wanted is not None and wanted != local:
            raise LayoutError(
                f"--devices {wanted}: a multi-host run uses every device of every host "
                f"({local} here, {len(available)} in all); drop --devices or pass --devices all")
        n = len(available)
    else:
        if wanted is not None and wanted > len(available):
            raise LayoutError(
                f"--devices {wanted}, but this machine has {len(available)} "
                f"{available[0].platform} device(s); pass --devices {len(available)} or fewer "
                "(on CPU, JAX_NUM_CPU_DEVICES=N makes N devices out of the cores)")
        n = wanted or len(available)
    if n == 1:
        return Layout(None, n_models)
    models = math.gcd(n_models, n)
    data = n // models
    if batch_size % data:
        raise LayoutError(
            f"batch size {batch_size} does not split over the {data} devices of the data axis "
            f"({n} devices for {n_models} model(s)); use a --batch-size divisible by {data} "
            "or a --devices count that divides the batch")
    mesh = jax.make_mesh((models, data), (MODELS, DATA), devices=available[:n],
                         axis_types=(AxisType.Auto, AxisType.Auto))
    return Layout(mesh, n_models)
