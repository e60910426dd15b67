"""``python -m kxnet.eval``: a model on the benchmark test sets, in the paper's table layout.

    python -m kxnet.eval ckpt_path=outputs/train/runs/…/weights.pt
    python -m kxnet.eval ckpt_path=KXNet_setting2_x4.pth setting=aniso eval.true_kernel=true
    python -m kxnet.eval model.stages=0 setting=aniso scale=4      # the Bicubic rows
    python -m kxnet.eval paper=table2 model.stages=0               # Table 2 (a multirun)

With ``ckpt_path`` (a Lightning checkpoint, exported weights or the authors' ``.pth``) the scale,
stage count, kernel size and setting are the checkpoint's; a ``scale``, ``setting``,
``model.stages`` or ``model.kernel_size`` given on the command line must agree with it. Every
(image, kernel, noise) item of the setting's test sets is run once, one image per batch, and
the run folder receives ``results.json`` (every per-image value and the averages),
``table.md``, ``table.csv``, ``stages.csv`` and ``kernels.csv``.

Exit status: 0 on success; 2 when a start-up check fails (one line says what and how to fix
it; ``HYDRA_FULL_ERROR=1`` raises it with its traceback).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from contextlib import nullcontext

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from kxnet import report
from kxnet.checkpoint import CheckpointError, load_model
from kxnet.checks import (
    MODEL_OPTIONS,
    StartupError,
    asked_properties,
    check_device,
    check_writable,
)
from kxnet.config import CONFIG_DIR, resolve_path
from kxnet.data.benchmarks import PROTOCOL_VERSION, BenchmarkSet
from kxnet.evaluation import (
    EvalError,
    check_benchmarks,
    check_true_kernel,
    device_name,
    evaluate,
    method_name,
    summarize,
)
from kxnet.nn import KXNet

__all__ = ["build_model", "evaluate", "summarize", "run", "main"]


def _asked(cfg: DictConfig, overrides: Sequence[str]) -> dict:
    """The checkpoint properties set on the command line or named in ``eval.require``."""
    required = list(cfg.eval.get("require") or [])
    unknown = [name for name in required if name not in MODEL_OPTIONS]
    if unknown:
        raise EvalError(
            f"eval.require={required} names {', '.join(unknown)}: use scale, setting, stages "
            "or kernel_size"
        )
    return asked_properties(cfg, overrides, required)


def build_model(cfg: DictConfig, overrides: Sequence[str] = (), device="cpu") -> KXNet:
    """The network of ``ckpt_path`` (checked against the command line), or bicubic for
    ``model.stages=0`` without a checkpoint; raises CheckpointError or EvalError."""
    if cfg.get("ckpt_path"):
        path = resolve_path(cfg.ckpt_path)
        return load_model(path, map_location=device, **_asked(cfg, overrides))
    if cfg.model.stages != 0:
        raise EvalError(
            f"model.stages={cfg.model.stages} without ckpt_path would evaluate an untrained "
            "network: pass ckpt_path=… or set model.stages=0 for the bicubic baseline"
        )
    return KXNet(cfg.scale, 0, kernel_size=cfg.model.kernel_size, setting=cfg.setting.name)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("PSNR-Y {task.fields[psnr]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _benchmark_sets(cfg, benchmark_dir, names, model: KXNet, cache_dir) -> list[BenchmarkSet]:
    """The test sets of the model's setting and scale (LR images generated into the cache)."""
    noise = list(cfg.eval.noise) if cfg.eval.noise is not None else None
    try:
        return [
            BenchmarkSet(benchmark_dir, n, model.setting, model.scale, noise, cache_dir)
            for n in names
        ]
    except (ValueError, OSError) as err:
        raise EvalError(f"{err} (eval.noise={noise}, paths.benchmark_dir={benchmark_dir})") from err


def run(cfg: DictConfig, overrides: Sequence[str] = ()) -> int:
    """Check everything that can be checked, evaluate, write the tables; the exit status."""
    console = Console(stderr=True)
    try:
        device = check_device(str(cfg.eval.device), "eval.device")
        benchmark_dir = resolve_path(cfg.paths.benchmark_dir)
        datasets = cfg.eval.datasets
        names = check_benchmarks(benchmark_dir, None if datasets is None else list(datasets))
        model = build_model(cfg, overrides, device)
        if cfg.eval.true_kernel:
            check_true_kernel(model, model.setting, model.scale)
        output_dir = resolve_path(cfg.paths.output_dir)
        check_writable(output_dir, "paths.output_dir")
        cache_dir = resolve_path(cfg.paths.cache_dir)
        check_writable(cache_dir, "paths.cache_dir")
        sets = _benchmark_sets(cfg, benchmark_dir, names, model, cache_dir)
    except (StartupError, CheckpointError) as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    true_kernel = bool(cfg.eval.true_kernel)
    method = cfg.eval.method or method_name(model, true_kernel)
    console.print(
        f"Evaluating {method}: {model.setting} x{model.scale}, {model.num_stages} stages, on "
        f"{', '.join(names)} at noise {', '.join(f'{n:g}' for n in sets[0].noise)} ({device})",
        markup=False,
    )
    records: list[dict] = []
    progress = _progress(console) if cfg.eval.progress else None
    with progress or nullcontext():
        for dataset in sets:
            advance = None
            if progress is not None:
                task = progress.add_task(dataset.name, total=len(dataset), psnr="–")
                done: list[float] = []

                def advance(record: dict, task=task, done=done) -> None:
                    done.append(record["psnr_y"])
                    progress.update(task, advance=1, psnr=f"{sum(done) / len(done):.2f}")

            records += evaluate(
                model,
                dataset,
                device,
                cfg.eval.num_workers,
                true_kernel=true_kernel,
                warmup=cfg.eval.warmup,
                on_record=advance,
            )
    config = {
        "scale": model.scale,
        "stages": model.num_stages,
        "kernel_size": model.kernel_size,
        "setting": model.setting,
        "parameters": model.paper_parameter_count(),
        "ckpt_path": str(resolve_path(cfg.ckpt_path)) if cfg.get("ckpt_path") else None,
        "true_kernel": true_kernel,
    }
    payload = {
        "protocol": PROTOCOL_VERSION,
        "method": method,
        "config": config,
        "noise": list(sets[0].noise),
        "device": device_name(device),
        "command": shlex.join(["python", "-m", "kxnet.eval", *overrides]),
        "eval": OmegaConf.to_container(cfg.eval, resolve=True),
        "summary": summarize(records),
        "records": records,
    }
    files = report.run_files(payload)
    written = report.write_files(output_dir, files)
    print(report.results_markdown(report.result_rows(payload)), flush=True)
    print(f"Wrote {', '.join(p.name for p in written)} to {output_dir}", flush=True)
    return 0


@hydra.main(config_path=CONFIG_DIR, config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    status = run(cfg, HydraConfig.get().overrides.task)
    if status:
        sys.exit(status)


if __name__ == "__main__":
    main()
