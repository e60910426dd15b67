"""``python -m kxnet.bench``: speed and memory of KXNet against the authors' formulation.

:mod:`~kxnet.bench.runner` runs a benchmark: :mod:`~kxnet.bench.plan` checks its options and
plans its phases, :mod:`~kxnet.bench.variants` builds and measures each variant in a process of
its own (:mod:`~kxnet.bench.measure` times and profiles one call; :mod:`~kxnet.bench.profile`
splits the training step into its parts; :mod:`~kxnet.bench.backends` runs the inference
backends), :mod:`~kxnet.bench.tables` computes the ratios and prints the tables.
:mod:`~kxnet.bench.authors` is the authors' formulation of the operators.
"""
