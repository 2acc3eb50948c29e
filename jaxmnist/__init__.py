"""jaxmnist: the small, fast MNIST convnets of ../shared/seeds in JAX/Flax.

The package is laid out by what each part does: `nets` (the five networks, their plain
and CPU lowerings), `data` (MNIST and Fashion-MNIST, augmentation), `train` (recipes,
step, loop, devices and hosts), `rundir` (a run's directory: identity, records,
checkpoints, lock), `use` (inference, preprocessing, predict, export, serve). The
commands are `python -m jaxmnist.train|evaluate|summary|predict|export|serve`.

Importing jaxmnist or any of its modules changes nothing in the process: the commands
tune it explicitly (`jaxmnist.machine.prepare_command`).
"""

__version__ = "0.3.0"
