"""``python -m kxnet.train``: train KXNet, test it, export its bare weights.

    python -m kxnet.train setting=aniso scale=4              # the paper's recipe
    python -m kxnet.train experiment=quick                   # a short run on a CPU
    python -m kxnet.train -m model.net.stages=5,10 trainer=ddp   # a sweep, each job on 2 devices
    python -m kxnet.train ckpt_path=…/checkpoints/last.ckpt  # resume exactly

A run that cannot succeed (missing or unreadable data, inconsistent sizes, a checkpoint of
another model, an output folder that cannot be written, a mistyped option) stops before training
with one line saying why and exit status 2 (``HYDRA_FULL_ERROR=1`` shows the traceback).
"""

from __future__ import annotations

from kxnet.config import command
from kxnet.schema.train import TrainConfig


@command("train")
def main(config: TrainConfig) -> float | None:
    """Train with the composed config (checked, typed); returns ``optimized_metric``."""
    from kxnet.train.run import train  # Lightning: after the options are checked

    return train(config)


if __name__ == "__main__":
    main()
