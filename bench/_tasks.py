"""Importable task functions for the benchmarks (so every contender pickles them by name)."""


def noop(i):
    return i


def echo(x):
    return x
