"""Training: recipes, the optimiser and state, the train step, the loop, and the devices
and hosts a run spreads over.

`recipes` (what a run is), `state` (TrainState, optimiser, K models, checkpoint trees),
`step` (the jitted train step and evaluation), `plan` (an epoch's shuffle and calls),
`loop` (`train_and_evaluate`), `parallel` (mesh and hosts), `plots`, and `command` (the
`python -m jaxmnist.train` command line).
"""
