"""``python -m kxnet.eval``: a model on the benchmark test sets, in the paper's table layout.

    python -m kxnet.eval ckpt_path=outputs/train/runs/…/weights.pt
    python -m kxnet.eval ckpt_path=KXNet_setting2_x4.pth setting=aniso eval.true_kernel=true
    python -m kxnet.eval model.net.stages=0 setting=aniso scale=4  # the Bicubic rows
    python -m kxnet.eval paper=table2 model.net.stages=0           # Table 2 (a multirun)
    python -m kxnet.eval paper=table1 weights=official             # on the authors' models

With ``ckpt_path`` (a Lightning checkpoint, exported weights or the authors' ``.pth``), or
``weights`` (a model name: ``official/setting2_x4``, ``official``, ``latest``), the scale,
stage count, kernel size and setting are the checkpoint's: ``scale``, ``setting``,
``model.net.stages`` and ``model.net.kernel_size`` are null (unset) by default, and one that is
set must agree with it.
Every (image, kernel, noise) item of the setting's test sets is run once, one image per batch, and
the run folder receives ``results.json`` (every per-image value and the averages),
``table.md``, ``table.csv``, ``stages.csv`` and ``kernels.csv``.

Exit status: 0 on success; 2 when a start-up check fails (one line says what and how to fix
it; ``HYDRA_FULL_ERROR=1`` raises it with its traceback).
"""

from __future__ import annotations

import sys

from hydra.core.hydra_config import HydraConfig

from kxnet.config import command
from kxnet.eval.run import run
from kxnet.schema.commands import EvalConfig


@command("eval")
def main(config: EvalConfig) -> None:
    """Evaluate with the composed config (checked, typed); exits with the run's status."""
    status = run(config, HydraConfig.get().overrides.task)
    if status:
        sys.exit(status)


if __name__ == "__main__":
    main()
