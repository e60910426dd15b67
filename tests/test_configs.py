"""Every training config composes and instantiates: each group option, experiment and debug
preset, the SLURM launcher; `scale` drives the per-scale values; the defaults are the paper's."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from kxnet.config import project_root
from kxnet.instantiation import build_group
from kxnet.train.module import KXNetModule
from trainhelp import compose_train

CONF = project_root() / "conf" / "train"
SHARED = project_root() / "conf" / "shared"
GROUPS = [
    "data",
    "data/degradation",
    "trainer",
    "logger",
    "callbacks",
    "optim",
    "setting",
    "model",
    "paths",
]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _instantiate(cfg) -> pl.Trainer:
    """Instantiate the whole run as train() does (a GPU trainer on the CPU where none exists)."""
    datamodule = instantiate(cfg.data, _convert_="all")
    module = instantiate(cfg.model, _recursive_=False)
    assert isinstance(datamodule, pl.LightningDataModule)
    assert isinstance(module, KXNetModule)
    callbacks = build_group("callbacks", cfg.get("callbacks"))
    loggers = build_group("logger", cfg.get("logger"))
    trainer_cfg = cfg.trainer
    if trainer_cfg.accelerator == "gpu" and not torch.cuda.is_available():
        trainer_cfg = OmegaConf.merge(trainer_cfg, {"accelerator": "cpu"})
    trainer = instantiate(trainer_cfg, callbacks=callbacks, logger=loggers or False)
    module.configure_optimizers()
    return trainer


@pytest.mark.parametrize(
    "group,option", [(g, o) for g in GROUPS for o in _options(g)], ids=lambda v: str(v)
)
def test_every_group_option_instantiates(tmp_path, group, option):
    cfg = compose_train(tmp_path, f"{group}={option}", "model.net.stages=1")
    _instantiate(cfg)


@pytest.mark.parametrize("preset", _options("experiment"))
def test_every_experiment_instantiates(tmp_path, preset):
    cfg = compose_train(tmp_path, f"experiment={preset}")
    assert cfg.task_name == preset
    trainer = _instantiate(cfg)
    assert trainer.max_steps == cfg.trainer.max_steps


@pytest.mark.parametrize("preset", _options("debug"))
def test_every_debug_preset_is_cpu_tiny_and_silent(tmp_path, preset):
    cfg = compose_train(tmp_path, f"debug={preset}", "setting=aniso", "scale=4")
    trainer = _instantiate(cfg)
    assert cfg.get("logger") is None and trainer.loggers == []
    assert cfg.trainer.accelerator == "cpu" and cfg.model.net.stages <= 2


def test_scale_and_setting_drive_the_per_scale_values(tmp_path):
    cfg = compose_train(tmp_path, "setting=aniso", "scale=3")
    assert cfg.setting.kernel_size == 15 and list(cfg.setting.sigma_range) == [0.6, 5.0]
    module = instantiate(cfg.model, _recursive_=False)
    assert module.hparams.net == {
        "_target_": "kxnet.nn.KXNet",
        "scale": 3,
        "stages": 19,
        "kernel_size": 15,
        "setting": "aniso",
        "checkpoint_stages": False,
        "recompute_data_terms": True,
        "channels_last": True,
        "compile": False,
    }
    iso = compose_train(tmp_path, "setting=iso", "scale=4")
    assert iso.setting.kernel_size == 21 and list(iso.setting.sigma_range) == [0.2, 4.0]


def test_the_whole_config_resolves_in_place(tmp_path):
    """As ``python -m kxnet.train --cfg job --resolve``: every resolved value is storable."""
    cfg = compose_train(tmp_path, "setting=aniso", "scale=2")
    OmegaConf.resolve(cfg)
    assert list(cfg.data.sigma_range) == [0.6, 5.0] and cfg.data.kernel_size == 11


def test_defaults_are_the_paper_recipe(tmp_path):
    cfg = compose_train(tmp_path, "setting=aniso", "scale=4")
    assert cfg.model.net.stages == 19 and cfg.model.net.kernel_size == 21
    assert (cfg.data.lr_patch_size, cfg.data.batch_size) == (64, 12)
    assert list(cfg.data.sigma_range) == [0.6, 5.0] and cfg.data.noise_max == 25
    assert cfg.trainer.max_steps == 800_000 and cfg.trainer.val_check_interval == 5_000
    assert dict(cfg.model.loss) == {
        "kernel_stage_weight": 0.1,
        "kernel_final_weight": 1.0,
        "image_stage_weight": 0.1,
        "image_final_weight": 1.0,
    }
    optimizer = cfg.model.optimizer
    assert optimizer._target_ == "torch.optim.Adam" and optimizer.lr == 2e-4
    assert list(optimizer.betas) == [0.9, 0.99]
    scheduler = cfg.model.scheduler
    assert scheduler._target_.endswith("StepLR")
    assert (scheduler.step_size, scheduler.gamma) == (200_000, 0.5)
    # lr at the end of training: 2e-4 halved three times (the last halving at 8e5 ends it)
    assert optimizer.lr * scheduler.gamma ** (cfg.trainer.max_steps // scheduler.step_size - 1) == (
        2.5e-5
    )


def test_stage_ablation_is_a_multirun_over_the_papers_stage_counts(tmp_path):
    cfg = compose_train(tmp_path, "experiment=stage_ablation", hydra=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.hydra.sweeper.params["model.net.stages"] == "0,5,10,17,19,21"
    assert (cfg.setting.name, cfg.scale) == ("aniso", 2)
    assert list(cfg.data.test_datasets) == ["Set14"] and list(cfg.data.test_noise) == [0]


def test_slurm_launcher_runs_each_jobs_ranks_as_tasks(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose_train(
        tmp_path,
        "hydra/launcher=slurm",
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        hydra=True,
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (4, 4, 2)
    assert instantiate(launcher).__class__.__name__ == "SlurmLauncher"


def test_run_and_sweep_folders_are_per_task_under_the_project(tmp_path):
    cfg = compose_train(None, "experiment=setting2_x4", hydra=True)
    root = cfg.paths.root_dir
    assert cfg.hydra.run.dir.startswith(f"{root}/outputs/setting2_x4/runs/")
    assert cfg.hydra.sweep.dir.startswith(f"{root}/outputs/setting2_x4/multirun/")


def test_runs_started_in_the_same_second_get_folders_of_their_own(monkeypatch):
    import datetime

    import hydra.core.utils

    class Frozen(datetime.datetime):  # both runs start at the same instant
        @classmethod
        def now(cls, tz=None):
            return datetime.datetime(2026, 1, 2, 3, 4, 5)

    monkeypatch.setattr(hydra.core.utils, "datetime", Frozen)  # what ${now:…} reads
    first, second = (compose_train(None, hydra=True) for _ in range(2))
    assert first.hydra.run.dir != second.hydra.run.dir
    assert "2026-01-02_03-04-05_" in first.hydra.run.dir
    # Read again, and in the sweep folder, a run's name stays the same.
    assert first.hydra.run.dir == first.hydra.run.dir
    assert first.hydra.sweep.dir.rsplit("_", 1)[1] == first.hydra.run.dir.rsplit("_", 1)[1]
    assert first.hydra.sweep.dir != second.hydra.sweep.dir


def test_relative_data_paths_resolve_against_the_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    datamodule = instantiate(compose_train(tmp_path).data, _convert_="all")
    full = project_root() / "data" / "full"
    assert datamodule.train_dir == full / "DIV2K_Flickr2K_prepared"
    assert datamodule.val_dir == full / "DIV2K_valid"
    quick = instantiate(compose_train(tmp_path, "experiment=quick").data, _convert_="all")
    assert quick.train_dir == project_root() / "data" / "train" and quick.val_dir is None
    assert datamodule.benchmark_dir == project_root() / "data" / "benchmarks"
