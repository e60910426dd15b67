import atexit
import os
import shutil
import tempfile

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# The degraded test sets are cached in a temporary folder of this test session (its workers share
# it), not in the checkout's .cache/: the tests that check that a command leaves the checkout as it
# was can run beside the others (pytest-xdist).
if "KXNET_BENCHMARK_CACHE" not in os.environ:
    _CACHE, _OWNER = tempfile.mkdtemp(prefix="kxnet-test-cache-"), os.getpid()
    os.environ["KXNET_BENCHMARK_CACHE"] = _CACHE

    def _remove_the_cache() -> None:
        if os.getpid() == _OWNER:  # not in a forked child that exits through Python
            shutil.rmtree(_CACHE, ignore_errors=True)

    atexit.register(_remove_the_cache)
# Under pytest-xdist (`make test`: one worker per core), the cores are shared out among the
# workers and the processes they start: two workers of two threads each on two cores would
# oversubscribe them.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    _threads = max(1, (_cores or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    torch.set_num_threads(_threads)


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
