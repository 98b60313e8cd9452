"""Experiments built from many training runs: the data-efficiency curve, hyperparameter sweeps and
the benchmark.

Depends on `core.training` and below.
"""
