"""``python -m kxnet.bench``: speed and memory of KXNet against the authors' formulation.

:mod:`~kxnet.bench.runner` plans and prints a benchmark, :mod:`~kxnet.bench.measure` times and
profiles one call, :mod:`~kxnet.bench.authors` is the authors' formulation of the operators.
"""
