"""``python -m kxnet.predict ckpt_path=… input=FILE_OR_DIR output=DIR``: SR of real LR images.

Exit status: 0 when every image was written, 1 when some could not be (they are listed at the
end; the others are written), 2 when nothing could start (one line says why; set
``HYDRA_FULL_ERROR=1`` for the traceback).
"""

from __future__ import annotations

import sys

from kxnet.config import command
from kxnet.predict.prediction import run
from kxnet.schema.commands import PredictConfig


@command("predict")
def main(config: PredictConfig) -> None:
    """Predict with the composed config (checked, typed); exits with the run's status."""
    sys.exit(run(config))


if __name__ == "__main__":
    main()
