"""``python -m kxnet.eval``: a model on the benchmark test sets, as the paper's tables measure it.

:mod:`~kxnet.eval.per_image` measures (per image, per kernel), :mod:`~kxnet.eval.run` runs
an evaluation and writes its files (for the command and for the end of training),
:mod:`~kxnet.eval.report` lays results out as the paper's tables.
"""
