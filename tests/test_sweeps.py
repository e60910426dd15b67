"""Sweeps beyond plain multirun: the Optuna search of `hparams_search`, and the SLURM preset's
jobs launched on this machine through submitit's local executor, each job its own process."""

from __future__ import annotations

import pickle
import re

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from trainhelp import compose_train, run_train

SEARCHED = {"optim.optimizer.lr", "model.loss.kernel_stage_weight", "model.loss.image_stage_weight"}
# Each job tiny: 4 steps of a 2-stage network, validated at steps 2 and 4 on two small crops.
TINY = [
    "debug=default",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.detect_anomaly=false",
]
# Two jobs at once on 2 cores: one thread each.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SHARED_KEYS = ("name", "timeout_min", "cpus_per_task", "mem_gb", "gpus_per_node", "submitit_folder")


def test_hparams_search_is_an_optuna_multirun_over_keys_of_the_quick_preset(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cfg = compose_train(tmp_path, "hparams_search=quick_optuna", "experiment=quick", hydra=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert set(sweeper.params) == SEARCHED
    for key, space in sweeper.params.items():
        assert OmegaConf.select(cfg, key) is not None and space.startswith("tag(log, interval(")
    # What it maximises is what train() returns and the best checkpoint is chosen on.
    assert cfg.optimized_metric == cfg.callbacks.model_checkpoint.monitor == "val/psnr"
    assert cfg.task_name == "quick" and cfg.eval is None and cfg.model.net.stages == 2


def test_local_launcher_mirrors_the_slurm_preset(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    args = ("trainer=ddp", "trainer.devices=4", "task_name=sweep", f"hydra.sweep.dir={tmp_path}")
    slurm = compose_train(tmp_path, "hydra/launcher=slurm", *args, hydra=True).hydra.launcher
    local = compose_train(tmp_path, "hydra/launcher=local", *args, hydra=True).hydra.launcher
    assert local._target_.endswith("LocalLauncher")
    for key in SHARED_KEYS:
        assert local[key] == slurm[key], key
    assert local.name == "kxnet-sweep" and local.gpus_per_node == 4
    # One task per job here: the job starts its own DDP ranks (no scheduler sets them).
    assert (local.tasks_per_node, local.nodes, slurm.tasks_per_node) == (1, 1, 4)
    assert instantiate(local).__class__.__name__ == "LocalLauncher"


def _validations(log: str) -> list[float]:
    return [float(v) for v in re.findall(r"validation at step 4: val/psnr ([0-9.]+)", log)]


@pytest.mark.slow
def test_optuna_search_runs_two_trials_and_keeps_the_best(tmp_path, tiny_benchmark):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "sweep"
    result = run_train(
        [
            *tiny_benchmark,
            "hparams_search=quick_optuna",
            "experiment=quick",
            *TINY,
            "hydra.sweeper.n_trials=2",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        timeout=540,
        env=ONE_THREAD,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    values, params = [], []
    for job in ("0", "1"):
        overrides = OmegaConf.load(sweep / job / ".hydra" / "overrides.yaml")
        sampled = dict(o.split("=", 1) for o in overrides if o.split("=")[0] in SEARCHED)
        assert set(sampled) == SEARCHED
        assert 2e-4 <= float(sampled["optim.optimizer.lr"]) <= 5e-3
        config = OmegaConf.load(sweep / job / ".hydra" / "config.yaml")
        assert config.model.optimizer.lr == float(sampled["optim.optimizer.lr"])
        assert config.model.loss.kernel_stage_weight == float(
            sampled["model.loss.kernel_stage_weight"]
        )
        (value,) = _validations((sweep / job / "train.log").read_text())
        values.append(value)
        params.append({k: float(v) for k, v in sampled.items()})
    assert params[0] != params[1]
    best = OmegaConf.to_container(OmegaConf.load(sweep / "optimization_results.yaml"))
    assert best["best_value"] == pytest.approx(max(values), abs=1e-3)
    assert best["best_params"] == pytest.approx(params[values.index(max(values))])


@pytest.mark.slow
def test_local_launcher_runs_each_job_as_a_process_of_its_own(tmp_path, tiny_benchmark):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    result = run_train(
        [
            *tiny_benchmark,
            "-m",
            "hydra/launcher=local",
            *TINY,
            "model.net.stages=1,2",
            "optimized_metric=val/psnr",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        timeout=540,
        env=ONE_THREAD,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Submitit 'local' sweep output dir" in output
    # submitit's folders: one per job, named by the job id (the pid of the job's own process).
    folders = {p.name: p for p in (sweep / ".submitit").iterdir() if p.name.isdigit()}
    assert len(folders) == 2
    job_ids = []
    for job, stages in (("0", 1), ("1", 2)):
        hydra_cfg = OmegaConf.load(sweep / job / ".hydra" / "hydra.yaml").hydra
        assert hydra_cfg.launcher._target_.endswith("LocalLauncher")
        job_id = str(hydra_cfg.job.id)
        job_ids.append(job_id)
        folder = folders[job_id]
        log = (folder / f"{job_id}_0_log.out").read_text()
        assert f"JobEnvironment(job_id={job_id}" in log and "Job completed successfully" in log
        with open(folder / f"{job_id}_0_result.pkl", "rb") as f:
            status, job_return = pickle.load(f)
        assert status == "success"
        assert job_return.return_value == pytest.approx(
            _validations((sweep / job / "train.log").read_text())[0], abs=1e-3
        )
        assert OmegaConf.load(sweep / job / ".hydra" / "config.yaml").model.net.stages == stages
        assert (sweep / job / "weights.pt").is_file()
    assert len(set(job_ids)) == 2
