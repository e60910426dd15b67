import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory):
    """Overrides that validate, test and evaluate on "Tiny": two 96×96 crops of Set5 images,
    with their degraded LR images cached in the same temporary folder."""
    from PIL import Image

    from kxnet.config import project_root

    root = tmp_path_factory.mktemp("benchmarks")
    (root / "Tiny").mkdir()
    for name in ("baby", "bird"):
        image = Image.open(project_root() / "data" / "benchmarks" / "Set5" / f"{name}.png")
        image.convert("RGB").crop((100, 100, 196, 196)).save(root / "Tiny" / f"{name}.png")
    return [
        f"paths.benchmark_dir={root}",
        f"paths.cache_dir={root / 'cache'}",
        "data.val_datasets=[Tiny]",
        "data.test_datasets=[Tiny]",
    ]
