"""The DDP launcher starts a job's ranks from the job itself, never from the sweep."""

from __future__ import annotations

import importlib.machinery
import os
import sys

import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

import __main__
from kxnet.train import ddp
from trainhelp import compose_train


def _set_job(tmp_path, output_dir):
    """The Hydra state of job 1 of `python -m kxnet.train -m model.net.stages=3,5 …`."""
    cfg = compose_train(
        None,
        "model.net.stages=5",
        "trainer=ddp",
        f"hydra.sweep.dir={tmp_path}",
        "hydra/job_logging=disabled",
        f"hydra.searchpath=[pkg://kxnet.conf.shared,file://{tmp_path}]",
        hydra=True,
    )
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.overrides.hydra.append("hydra.mode=MULTIRUN")
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def sweep_job(tmp_path, monkeypatch):
    cfg = _set_job(tmp_path, tmp_path / "1")
    spec = importlib.machinery.ModuleSpec("kxnet.train", None)
    monkeypatch.setattr(__main__, "__spec__", spec, raising=False)
    yield cfg
    HydraConfig.instance().cfg = None


def test_job_command_reruns_the_job_not_the_sweep(sweep_job, tmp_path):
    command = ddp.job_command(local_rank=1)
    assert command[:3] == [sys.executable, "-m", "kxnet.train"]
    assert "--multirun" not in command and command.count("-m") == 1
    assert command[command.index("--config-name") + 1] == "train"
    assert command[command.index("--config-path") + 1] == "pkg://kxnet.conf.train"
    overrides = command[command.index("--config-name") + 2 :]
    assert overrides[: len(sweep_job.hydra.overrides.task)] == list(sweep_job.hydra.overrides.task)
    assert "model.net.stages=5" in overrides
    assert f"hydra.run.dir='{tmp_path / '1'}'" in overrides
    assert "hydra.mode=RUN" in overrides and "hydra.output_subdir=null" in overrides
    assert f"hydra.job.name={sweep_job.hydra.job.name}_rank1" in overrides
    assert "hydra/job_logging=disabled" in overrides
    assert any(o.startswith("hydra.searchpath=") for o in overrides)
    assert not any(o.startswith(("hydra.sweep", "hydra.mode=MULTIRUN")) for o in overrides)


def test_output_dir_with_quotes_stays_one_value(sweep_job, tmp_path):
    _set_job(tmp_path, "/runs/it's here")
    assert "hydra.run.dir='/runs/it\\'s here'" in ddp.job_command(local_rank=1)


def test_release_restores_the_environment_for_the_next_job(monkeypatch):
    from lightning.fabric.plugins.environments import LightningEnvironment

    for key in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    launcher = ddp.HydraJobLauncher(LightningEnvironment(), num_processes=1, num_nodes=1)
    launcher._call_children_scripts()
    assert os.environ["LOCAL_RANK"] == "0" and os.environ["WORLD_SIZE"] == "1"
    launcher.release()
    assert "LOCAL_RANK" not in os.environ and "MASTER_PORT" not in os.environ
    assert os.environ["OMP_NUM_THREADS"] == "2"


def test_ddp_tests_run_under_the_default_timeout(request):
    """A hung rank or gloo collective fails the test after pytest-timeout's limit (no DDP test
    sets a longer one of its own)."""
    assert float(request.config.getini("timeout")) == 600
    assert request.config.getini("timeout_method") == "thread"
    ddp_tests = [
        item
        for item in request.session.items
        if "ddp" in item.name and item.get_closest_marker("timeout") is not None
    ]
    assert ddp_tests == []
