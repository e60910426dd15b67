"""`kxnet.train` end to end on the CPU: fast_dev_run for every setting and scale, exact resume,
the bicubic S = 0 job, pictures for each logger, W&B offline by default, the paper command under
a debug limit (its offline W&B run holding the exported weights as a model artifact), DDP with
two gloo processes, and (slow) a two-job multirun with DDP."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import struct
import time
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from wandb.proto import wandb_internal_pb2

from kxnet import KXNet
from kxnet.atomic import SHARED_AGE_S
from kxnet.config import checked
from kxnet.data.benchmarks import BenchmarkSet
from kxnet.errors import ImageFolderError, StartupError
from kxnet.eval import run as evaluation_run
from kxnet.metrics import psnr
from kxnet.pictures import comparison_strip
from kxnet.schema import typed
from kxnet.train import train
from kxnet.train.finish import own_best
from kxnet.train.loggers import default_wandb_mode
from kxnet.train.module import KXNetModule
from test_atomic import dead_pid, leftover
from trainhelp import QUIET, compose_train, run_train


def _weights(run: Path) -> dict:
    weights = torch.load(run / "weights.pt", weights_only=True)
    assert weights["format"] == "kxnet-weights"
    return weights


def _loads(weights: dict) -> KXNet:
    net = KXNet(**weights["config"])
    net.load_state_dict(weights["state_dict"])
    return net


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("setting", ["iso", "aniso"])
def test_fast_dev_run_for_every_setting_and_scale(tmp_path, tiny_benchmark, setting, scale):
    cfg = compose_train(
        tmp_path,
        "debug=fdr",
        f"setting={setting}",
        f"scale={scale}",
        "model.net.stages=1",
        *tiny_benchmark,
        *QUIET,
    )
    assert train(typed(cfg, "train")) is not None
    weights = _weights(tmp_path)
    assert weights["config"]["scale"] == scale and weights["config"]["setting"] == setting
    assert _loads(weights).kernel_size == cfg.setting.kernel_size


def _run(out: Path, bench: list[str], *overrides: str) -> float:
    """Steps of 2 patches, 4 patches an epoch, a checkpoint every 2 steps, a test at the end."""
    cfg = compose_train(
        out,
        "debug=default",
        "trainer.detect_anomaly=false",
        "trainer.deterministic=true",
        "trainer.limit_val_batches=0",
        "data.samples_per_epoch=4",
        "callbacks.model_checkpoint.monitor=null",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        "optimized_metric=test/psnr",
        *bench,
        *QUIET,
        *overrides,
    )
    return train(typed(cfg, "train"))


def _spy_on_loading(monkeypatch) -> list[tuple[str, object, object]]:
    """Record (method, weights_only, ckpt_path) of every Trainer.fit and Trainer.test call."""
    calls = []
    for name in ("fit", "test"):
        real = getattr(pl.Trainer, name)

        def spy(self, *args, _real=real, _name=name, **kwargs):
            calls.append((_name, kwargs.get("weights_only"), kwargs.get("ckpt_path")))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(pl.Trainer, name, spy)
    return calls


@pytest.mark.parametrize("degradation", ["paper", "realistic"])
def test_resume_equals_the_uninterrupted_run(tmp_path, tiny_benchmark, monkeypatch, degradation):
    # The first run stops after one epoch; the second resumes from it for the next epoch.
    mode = f"data/degradation={degradation}"
    whole = _run(tmp_path / "whole", tiny_benchmark, mode, "trainer.max_steps=4")
    _run(tmp_path / "first", tiny_benchmark, mode, "trainer.max_steps=2", "test=false")
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2
    calls = _spy_on_loading(monkeypatch)
    resumed = _run(
        tmp_path / "resumed", tiny_benchmark, mode, "trainer.max_steps=4", f"ckpt_path={last}"
    )
    assert resumed == whole
    # Every checkpoint Lightning loads is read weights-only; the test is of the final weights
    # (export=last), which it loads from no file.
    assert calls == [("fit", True, str(last)), ("test", True, None)]
    a, b = (torch.load(tmp_path / r / "checkpoints" / "last.ckpt") for r in ("whole", "resumed"))
    assert a["global_step"] == b["global_step"] == 4
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0)
    (opt_a,), (opt_b,) = a["optimizer_states"], b["optimizer_states"]
    torch.testing.assert_close(opt_b["state"], opt_a["state"], rtol=0, atol=0)
    assert opt_a["param_groups"] == opt_b["param_groups"]
    assert a["lr_schedulers"] == b["lr_schedulers"]
    half = torch.load(last)["state_dict"]
    assert any(not torch.equal(half[k], v) for k, v in a["state_dict"].items())


def test_only_a_best_checkpoint_of_this_run_is_loaded(tmp_path, caplog):
    own = tmp_path / "run" / "checkpoints"

    def trainer(best):
        callback = SimpleNamespace(best_model_path=str(best), dirpath=str(own))
        return SimpleNamespace(checkpoint_callback=callback)

    assert own_best(trainer(own / "step0000004.ckpt")) == str(own / "step0000004.ckpt")
    assert own_best(trainer("")) == ""
    # A resumed checkpoint's record can name any file: another run's, or one planted elsewhere.
    for elsewhere in (tmp_path / "other" / "checkpoints" / "best.ckpt", own / ".." / "x.ckpt"):
        assert own_best(trainer(elsewhere)) == ""
    assert "is not in this run's" in caplog.text
    assert own_best(SimpleNamespace(checkpoint_callback=None)) == ""


def test_the_leftovers_of_killed_runs_are_removed_from_the_folders_a_run_writes(
    tmp_path, tiny_benchmark
):
    cache = tmp_path / "cache"
    cfg = compose_train(
        tmp_path / "run", "debug=limit", *tiny_benchmark, f"paths.cache_dir={cache}", *QUIET
    )
    dead = dead_pid()
    checkpoints = tmp_path / "run" / "checkpoints"
    for folder in (checkpoints, tmp_path / "run" / "eval" / "pictures", cache / "Set5"):
        folder.mkdir(parents=True)
    killed = [
        leftover(checkpoints, "last.ckpt", dead),
        leftover(tmp_path / "run", "weights.pt", dead),
        leftover(tmp_path / "run" / "eval" / "pictures", "baby.png", dead),
    ]
    cached, old = (leftover(cache / "Set5", f"{name}_k0.png", dead) for name in ("baby", "bird"))
    aged = time.time() - 2 * SHARED_AGE_S
    os.utime(old, (aged, aged))
    live = leftover(checkpoints, "last.ckpt", os.getppid())
    train(typed(cfg, "train"))
    assert not any(p.exists() for p in killed) and live.exists()
    assert cached.exists(), "the shared cache: only leftovers untouched for a while"
    assert not old.exists()


def test_zero_stages_is_tested_without_training(tmp_path, tiny_benchmark):
    cfg = compose_train(tmp_path, "debug=limit", "model.net.stages=0", *tiny_benchmark, *QUIET)
    assert train(typed(cfg, "train")) is None
    assert not (tmp_path / "checkpoints").exists()
    assert _loads(_weights(tmp_path)).num_stages == 0


def test_csv_and_tensorboard_loggers_get_the_pictures_and_histograms(tmp_path, tiny_benchmark):
    cfg = compose_train(
        tmp_path,
        "debug=limit",
        "logger=many",
        "logger.wandb=null",
        "data/degradation=realistic",
        *tiny_benchmark,
        *QUIET,
    )
    train(typed(cfg, "train"))
    pngs = sorted(p.name for p in (tmp_path / "csv" / "version_0" / "images").glob("*.png"))
    assert pngs == [
        "test_kernels_0_step0000002.png",
        "test_pictures_0_step0000002.png",
        "val_kernels_0_step0000002.png",
        "val_pictures_0_step0000002.png",
    ]
    images, scalars, histograms = set(), set(), set()
    for events in (tmp_path / "tensorboard").rglob("events.out.tfevents.*"):
        tags = EventAccumulator(str(events)).Reload().Tags()
        images |= set(tags["images"])
        scalars |= set(tags["scalars"])
        histograms |= set(tags["histograms"])
    drawn = {"kernel_sigma_x", "kernel_sigma_y", "kernel_theta", "noise", "jpeg_quality"}
    assert {f"train/degradation/{name}" for name in drawn} <= histograms
    assert {"val/pictures/0", "val/kernels/0", "test/pictures/0"} <= images
    assert {"val/psnr", "val/stage_psnr/02", "val/kernel_l1/01", "val/Tiny/ssim"} <= scalars
    assert {"perf/wall_time_s", "perf/step_time_s", "perf/peak_memory_gib"} <= scalars


def test_wandb_is_offline_unless_logged_in(tmp_path, monkeypatch):
    for key in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert default_wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert default_wandb_mode() == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    assert default_wandb_mode() == "online"


def _wandb_runs(run: Path) -> list[Path]:
    return sorted((run / "wandb").glob("offline-run-*"))


def _wandb_records(run_file: Path) -> list[wandb_internal_pb2.Record]:
    """The records of an offline W&B run file (``run-<id>.wandb``): a 7-byte header, then
    LevelDB's log format (32 KiB blocks of chunks, each with a 7-byte header: CRC, length and
    type, 1 = whole, 2/3/4 = first/middle/last part) holding one protobuf ``Record`` each."""
    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending, records = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_paper_command_runs_a_step_and_checkpoints(tmp_path, tiny_benchmark):
    result = run_train(
        [
            "setting=aniso",
            "scale=4",
            "debug=limit",
            "logger=wandb",
            f"hydra.run.dir={tmp_path}",
            *tiny_benchmark,
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoints = {p.name for p in (tmp_path / "checkpoints").glob("*.ckpt")}
    assert "last.ckpt" in checkpoints and len(checkpoints) == 2
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    assert ckpt["hyper_parameters"]["net"] == {
        "_target_": "kxnet.nn.KXNet",
        "scale": 4,
        "stages": 2,
        "kernel_size": 21,
        "setting": "aniso",
        "checkpoint_stages": False,
        "recompute_data_terms": True,
        "channels_last": True,
        "compile": False,
    }
    module = KXNetModule.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert module.net.num_stages == 2
    (wandb_run,) = _wandb_runs(tmp_path)
    images = {p.parent.name + "/" + p.name.split("_")[0] for p in wandb_run.rglob("*.png")}
    assert {"pictures/0", "kernels/0"} <= images
    # The exported weights are the run's model artifact, their properties and figures with them.
    (run_file,) = wandb_run.glob("run-*.wandb")
    records = _wandb_records(run_file)
    (artifact,) = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    assert (artifact.type, artifact.name) == ("model", "kxnet-debug-aniso-x4-S2")
    metadata = json.loads(artifact.metadata)
    assert {k: metadata[k] for k in ("scale", "stages", "kernel_size", "setting")} == {
        "scale": 4,
        "stages": 2,
        "kernel_size": 21,
        "setting": "aniso",
    }
    assert metadata["metrics"]["val/psnr"] > 0 and metadata["parameters"] > 0
    (entry,) = artifact.manifest.contents
    md5 = base64.b64encode(hashlib.md5((tmp_path / "weights.pt").read_bytes()).digest())
    assert (entry.path, entry.digest) == ("weights.pt", md5.decode())


def _launches(output: str) -> int:
    return len(re.findall(r"Launching \d+ jobs", output))


def test_a_batch_that_does_not_divide_over_the_ranks_is_refused(tmp_path, tiny_benchmark):
    cfg = compose_train(
        tmp_path,
        "debug=limit",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "data.batch_size=5",
        *tiny_benchmark,
        *QUIET,
    )
    with pytest.raises(StartupError, match=r"data\.batch_size=5 .* 2 DDP ranks"):
        train(typed(cfg, "train"))


@pytest.mark.slow
def test_multirun_with_ddp_runs_each_job_once_over_two_gloo_processes(tmp_path, tiny_benchmark):
    sweep = tmp_path / "sweep"
    result = run_train(
        [
            *tiny_benchmark,
            "-m",
            "model.net.stages=1,2",
            "debug=limit",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "data.batch_size=12",
            "data.samples_per_epoch=24",
            "logger=wandb",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        timeout=540,  # fails alone, before pytest-timeout (600 s) ends the session
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert _launches(output) == 1 and "Starting with 2 processes" in output
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    assert not (tmp_path / "outputs").exists()
    for job, stages in (("0", 1), ("1", 2)):
        run = sweep / job
        assert len(_wandb_runs(run)) == 1
        # data.batch_size is the global batch: 6 patches a step on each rank, and the logs say so
        for rank, log in ((0, "train.log"), (1, "train_rank1.log")):
            text = (run / log).read_text()
            assert f"rank {rank} of 2: 6 patches a step of the global batch of 12" in text
        best = [p for p in (run / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
        module = KXNetModule.load_from_checkpoint(best[0])
        assert module.net.num_stages == stages
        assert _loads(_weights(run)).num_stages == stages


def test_evaluation_after_training_beside_bicubic(tmp_path, tiny_benchmark, capsys, monkeypatch):
    titled = []

    def spy(*args, **kwargs):
        titled.append(kwargs)
        return comparison_strip(*args, **kwargs)

    monkeypatch.setattr(evaluation_run, "comparison_strip", spy)
    eval_cfg = "eval={datasets: [Tiny], noise: [0], device: cpu, num_workers: 0}"
    cfg = compose_train(tmp_path, "debug=limit", eval_cfg, *tiny_benchmark, *QUIET)
    train(typed(cfg, "train"))
    table = capsys.readouterr().out
    assert "Tiny x2 Setting 1, noise 0:" in table and "bicubic" in table and " dB" in table
    ours = json.loads((tmp_path / "eval" / "results.json").read_text())
    bicubic = json.loads((tmp_path / "eval" / "bicubic" / "results.json").read_text())
    assert ours["config"]["stages"] == 2 and bicubic["config"]["stages"] == 0
    assert len(ours["records"]) == len(bicubic["records"]) == 2 * 8
    assert {"dataset", "image", "setting", "scale", "noise", "psnr_y", "ssim_y"} <= set(
        ours["records"][0]
    )
    net = _loads(_weights(tmp_path)).eval()
    item = next(r for r in ours["records"] if r["image"] == "bird" and r["kernel_index"] == 3)
    bench = BenchmarkSet(cfg.paths.benchmark_dir, "Tiny", "iso", 2, [0], cfg.paths.cache_dir)
    index = next(
        i for i, (img, _, k) in enumerate(bench.items) if bench.files[img].stem == "bird" and k == 3
    )
    sample = bench[index]
    with torch.no_grad():
        sr = net(sample["lr"][None]).sr
    assert item["psnr_y"] == pytest.approx(psnr(sr, sample["hr"][None], 2).item(), abs=1e-6)
    # The pictures' titles carry the PSNR-Y of the tables' records (kernel 0 of each image).
    for kwargs, image in zip(titled, ("baby", "bird"), strict=True):
        ours_k0, bicubic_k0 = (
            next(r for r in p["records"] if r["image"] == image and r["kernel_index"] == 0)
            for p in (ours, bicubic)
        )
        assert kwargs["sr_psnr"] == pytest.approx(ours_k0["psnr_y"], abs=1e-6)
        assert kwargs["bicubic_psnr"] == pytest.approx(bicubic_k0["psnr_y"], abs=1e-6)
    pictures = sorted(p.name for p in (tmp_path / "eval" / "pictures").glob("*.png"))
    assert pictures == [
        "Tiny_baby_k0_noise0.png",
        "Tiny_baby_k0_noise0_kernels.png",
        "Tiny_bird_k0_noise0.png",
        "Tiny_bird_k0_noise0_kernels.png",
    ]
    # The same weights through `python -m kxnet.eval`: the same engine, the same figures.
    with initialize_config_module("kxnet.conf.eval", version_base="1.3"):
        eval_cfg = compose(
            "eval",
            overrides=[
                f"ckpt_path={tmp_path / 'weights.pt'}",
                f"paths.output_dir={tmp_path / 'kxnet-eval'}",
                f"paths.benchmark_dir={cfg.paths.benchmark_dir}",
                f"paths.cache_dir={cfg.paths.cache_dir}",
                "eval.datasets=[Tiny]",
                "eval.noise=[0]",
                "eval.device=cpu",
                "eval.num_workers=0",
                "eval.warmup=0",
                "eval.progress=false",
            ],
        )
    assert evaluation_run.run(checked(eval_cfg)) == 0
    command = json.loads((tmp_path / "kxnet-eval" / "results.json").read_text())
    figures = ("dataset", "image", "kernel_index", "noise", "psnr_y", "ssim_y", "psnr_rgb")
    assert [[r[k] for k in figures] for r in command["records"]] == [
        [r[k] for k in figures] for r in ours["records"]
    ]
    assert [{k: s[k] for k in ("psnr_y", "ssim_y")} for s in command["summary"]] == [
        {k: s[k] for k in ("psnr_y", "ssim_y")} for s in ours["summary"]
    ]


PAPER_PRESETS = ["setting1_x2", "setting1_x3", "setting1_x4", "setting2_x2", "setting2_x3",
                 "setting2_x4"]  # fmt: skip


@pytest.mark.parametrize("preset", PAPER_PRESETS)
def test_paper_presets_refuse_the_bundled_t91(tmp_path, preset):
    cfg = compose_train(
        tmp_path, f"experiment={preset}", "paths.train_dir=${paths.bundled_train_dir}"
    )
    with pytest.raises(StartupError, match=r"bundled T91 .*paper's.*`make data`"):
        train(typed(cfg, "train"))
    # by default they train on the prepared DIV2K + Flickr2K, which `make data` makes
    elsewhere = [f"paths.data_dir={tmp_path}/data", "paths.benchmark_dir=data/benchmarks"]
    missing = compose_train(tmp_path, f"experiment={preset}", *elsewhere)
    with pytest.raises(ImageFolderError, match=r"_prepared does not exist.*make data"):
        train(typed(missing, "train"))


def test_a_training_folder_given_on_the_command_line_is_used_with_a_warning(tmp_path):
    result = run_train(
        [
            "experiment=setting1_x2",
            "paths.train_dir=data/train",
            "logger=csv",
            "model.net.stages=1",
            "data.lr_patch_size=16",
            "data.batch_size=2",
            "data.num_workers=0",
            "data.val_images=0",
            "trainer=cpu",
            "trainer.max_steps=1",
            "+trainer.limit_val_batches=0",
            "test=false",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = (tmp_path / "train.log").read_text()
    assert "holds 91 usable images; the paper trains on 3450" in log
    assert (tmp_path / "weights.pt").is_file()


def test_the_quick_preset_runs_on_the_bundled_data_and_validates_on_held_out_images(
    tmp_path, tiny_benchmark
):
    cfg = compose_train(
        tmp_path,
        "experiment=quick",
        *tiny_benchmark[:2],
        "logger=csv",
        "model.net.stages=1",
        "data.val_images=3",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "eval=null",
        *QUIET,
    )
    assert train(typed(cfg, "train")) is not None
    metrics = (next((tmp_path / "csv").rglob("metrics.csv"))).read_text()
    assert "val/train_heldout/psnr" in metrics and "val/Set5" not in metrics


def test_the_last_checkpoint_is_exported_and_tested_not_the_best(tmp_path, tiny_benchmark):
    # Noise added to the weights after step 4 makes the validation at step 6 worse.
    cfg = compose_train(
        tmp_path,
        "debug=default",
        "trainer.detect_anomaly=false",
        "trainer.max_steps=6",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1.0",
        "+callbacks.spoil._target_=faultinject.SpoilAt",
        "+callbacks.spoil.step=4",
        "callbacks.last_checkpoint.every_n_train_steps=6",
        *tiny_benchmark,
        *QUIET,
    )
    assert cfg.export == "last"
    train(typed(cfg, "train"))
    best_path = next(p for p in (tmp_path / "checkpoints").glob("step*.ckpt"))
    assert not best_path.name.startswith("step0000006"), "validation did not get worse"
    weights = _weights(tmp_path)["state_dict"]
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 6
    last = last["state_dict"]
    best = torch.load(best_path, weights_only=True)["state_dict"]
    assert all(torch.equal(v, last[f"net.{k}"]) for k, v in weights.items())
    assert not all(torch.equal(v, best[f"net.{k}"]) for k, v in weights.items())
    # export=best exports (and tests) the best on validation instead
    cfg.paths.output_dir = str(tmp_path / "best")
    with open_dict(cfg):
        cfg.callbacks.model_checkpoint.dirpath = str(tmp_path / "best" / "checkpoints")
        cfg.callbacks.last_checkpoint.dirpath = str(tmp_path / "best" / "checkpoints")
        cfg.export = "best"
    train(typed(cfg, "train"))
    best_path = next(p for p in (tmp_path / "best" / "checkpoints").glob("step*.ckpt"))
    best = torch.load(best_path, weights_only=True)["state_dict"]
    exported = _weights(tmp_path / "best")["state_dict"]
    assert all(torch.equal(v, best[f"net.{k}"]) for k, v in exported.items())


def _validate(module, datamodule, devices: int) -> dict:
    strategy = {"strategy": "ddp_spawn"} if devices > 1 else {}
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **strategy,
    )
    (results,) = trainer.validate(module, datamodule=datamodule)
    return results


@pytest.mark.slow
def test_validation_with_one_or_two_ranks_gives_the_same_figures(tmp_path, tiny_benchmark):
    """Three held-out images (an odd count: the ranks take 2 and 1): every item once."""
    extra = ["data.val_images=3", "data.val_datasets=[]"]
    cfg = compose_train(tmp_path, "debug=limit", *tiny_benchmark, *extra, *QUIET)
    train(typed(cfg, "train"))
    module = KXNetModule.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    datamodule = instantiate(cfg.data, _convert_="all")
    one = _validate(module, datamodule, devices=1)
    two = _validate(module, instantiate(cfg.data, _convert_="all"), devices=2)
    assert one["val/train_heldout/psnr"] > 20
    for key in ("val/psnr", "val/ssim", "val/train_heldout/psnr"):
        assert two[key] == pytest.approx(one[key], rel=1e-12, abs=1e-12), key
