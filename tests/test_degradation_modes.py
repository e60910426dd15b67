import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from kxnet.config import project_root

ROOT = project_root()
REALSR = os.environ.get("KXNET_SHARED_DATA", str(ROOT.parent / "shared" / "data")) + "/RealSRSet"


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(REALSR), reason="needs RealSRSet (KXNET_SHARED_DATA)")
def test_the_experiment_trains_both_modes_and_writes_the_labelled_picture(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "experiments/degradation_modes.py",
            "--steps=2",
            "--images",
            "chip",
            "comic1",
            "--crop=32",
            f"--runs={tmp_path / 'runs'}",
            f"--out={tmp_path / 'out'}",
            "--override",
            "eval=null",
            "data.num_workers=0",
            "data.val_images=2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert report["steps"] == 2 and set(report["modes"]) == {"paper", "realistic"}
    assert "data/degradation=realistic" in report["modes"]["realistic"]["command"]
    for mode in ("paper", "realistic"):
        assert (tmp_path / "runs" / mode / "realsr" / "chip.png").is_file()
    picture = Image.open(tmp_path / "out" / "degradation_modes.png")
    assert picture.width > picture.height  # two rows of three panels
    assert (tmp_path / "out" / "command.txt").read_text().startswith("python experiments/")
