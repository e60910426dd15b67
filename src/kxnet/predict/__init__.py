"""``python -m kxnet.predict``: super-resolving real LR photos with a trained model.

:mod:`~kxnet.predict.prediction` restores image files (kernel once per image, then X-net tile by
tile, :mod:`~kxnet.predict.tiling`), streaming rows into PNG files (:mod:`~kxnet.predict.png`).
"""
