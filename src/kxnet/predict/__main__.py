"""``python -m kxnet.predict ckpt_path=… input=FILE_OR_DIR output=DIR``: SR of real LR images.

Exit status: 0 when every image was written, 1 when some could not be (they are listed at the
end; the others are written), 2 when nothing could start (one line says why; set
``HYDRA_FULL_ERROR=1`` for the traceback).
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from kxnet.config import config_path
from kxnet.predict.prediction import run


@hydra.main(version_base="1.3", config_path=config_path("predict"), config_name="predict")
def main(cfg: DictConfig) -> None:
    sys.exit(run(cfg, HydraConfig.get().overrides.task))


if __name__ == "__main__":
    main()
