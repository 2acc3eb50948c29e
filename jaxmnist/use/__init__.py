"""Using a trained network: the one checkpoint loader (`inference`), images to MNIST format
(`preprocess`), and the commands built on them: `evaluate`, `predict`, `export` (with the
jax-and-numpy loader of its artifact, `exported`) and `serve` (with its page, `web/`).
Importing this package imports nothing heavy: `exported` loads with jax and numpy alone.
"""
