"""``python -m kxnet.eval``: PSNR/SSIM-Y of a model on the benchmark test sets (Tables 1-2).

    python -m kxnet.eval model.stages=0 setting=iso scale=2
    python -m kxnet.eval model.stages=0 setting=aniso scale=4 eval.noise=[0,5,15]

Degrades every HR image of ``eval.datasets`` (under ``paths.benchmark_dir``; missing ones are
skipped with a warning) by the setting's test kernels and ``eval.noise`` (cached under
``paths.cache_dir``), runs the model, prints the table in the paper's column order and writes
``results.json`` (one record per image, kernel and noise level, plus the averages) into the
run's output folder.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from kxnet import metrics
from kxnet.config import CONFIG_DIR, resolve_path
from kxnet.data.benchmarks import DATASETS, PROTOCOL_VERSION, BenchmarkSet, default_noise
from kxnet.nn import KXNet

__all__ = ["build_model", "evaluate", "summarize", "format_table", "run", "main"]

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"


def build_model(cfg: DictConfig) -> nn.Module:
    """The network to evaluate, from ``model.*`` and ``ckpt_path``.

    Without a checkpoint only ``model.stages=0`` makes sense: the bicubic initialisation X⁽⁰⁾,
    which has nothing learned (the paper's "Bicubic" rows and Table 3's S = 0).
    """
    if cfg.get("ckpt_path"):
        raise ValueError(
            f"ckpt_path={cfg.ckpt_path}: this version of kxnet.eval evaluates model.stages=0 "
            "(bicubic) only; leave ckpt_path=null"
        )
    if cfg.model.stages != 0:
        raise ValueError(
            f"model.stages={cfg.model.stages} without ckpt_path would evaluate an untrained "
            "network: set model.stages=0 for the bicubic baseline"
        )
    return KXNet(
        scale=cfg.scale,
        stages=0,
        kernel_size=cfg.model.kernel_size,
        setting=cfg.setting.name,
    )


@torch.inference_mode()
def evaluate(
    model: nn.Module, dataset: BenchmarkSet, device: torch.device | str, num_workers: int = 0
) -> list[dict]:
    """One record per item of ``dataset``: its keys and PSNR/SSIM on Y of the model's SR."""
    model = model.eval().to(device)
    loader = DataLoader(dataset, batch_size=1, num_workers=num_workers)
    records = []
    for batch in loader:
        sr = model(batch["lr"].to(device)).sr
        hr = batch["hr"].to(device)
        k = int(batch["kernel_index"][0])
        psnr_y, ssim_y = metrics.psnr_ssim(sr, hr, dataset.scale)
        records.append(
            {
                "dataset": batch["dataset"][0],
                "image": batch["image"][0],
                "setting": dataset.setting,
                "scale": dataset.scale,
                "noise": float(batch["noise"][0]),
                "kernel_index": k,
                "kernel": dataset.kernel_params[k],
                "psnr_y": psnr_y.item(),
                "ssim_y": ssim_y.item(),
            }
        )
    return records


def summarize(records: Iterable[dict]) -> list[dict]:
    """Averages per (setting, scale, noise, dataset) over every image and kernel."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["setting"], r["scale"], r["noise"], r["dataset"])].append(r)
    return [
        {
            "setting": setting,
            "scale": scale,
            "noise": noise,
            "dataset": dataset,
            "count": len(group),
            "psnr_y": sum(r["psnr_y"] for r in group) / len(group),
            "ssim_y": sum(r["ssim_y"] for r in group) / len(group),
        }
        for (setting, scale, noise, dataset), group in groups.items()
    ]


def format_table(summary: Sequence[dict]) -> str:
    """A text table in the paper's layout: one row per (setting, scale, noise), PSNR / SSIM."""
    paper_order = ("Urban100", "BSD100", "Set14", "Set5")
    names = sorted(
        {s["dataset"] for s in summary},
        key=lambda n: (paper_order.index(n) if n in paper_order else len(paper_order), n),
    )
    cells = {(s["setting"], s["scale"], s["noise"], s["dataset"]): s for s in summary}
    rows = sorted({key[:3] for key in cells})
    prefix = f"{'setting':8s} {'scale':>5s} {'noise':>5s} "
    lines = [
        prefix + "".join(f" {n:>16s}" for n in names),
        " " * len(prefix) + "".join(f" {'PSNR':>8s} {'SSIM':>7s}" for _ in names),
    ]
    for setting, scale, noise in rows:
        line = f"{setting:8s} {'x' + str(scale):>5s} {noise:5g} "
        for n in names:
            s = cells.get((setting, scale, noise, n))
            line += f" {s['psnr_y']:8.4f} {s['ssim_y']:7.5f}" if s else f" {'-':>8s} {'-':>7s}"
        lines.append(line)
    return "\n".join(lines)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def run(cfg: DictConfig) -> dict:
    """Evaluate as ``cfg`` says, print the table, write ``results.json``; returns its content."""
    benchmark_dir = resolve_path(cfg.paths.benchmark_dir)
    cache_dir = resolve_path(cfg.paths.cache_dir)
    output_dir = resolve_path(cfg.paths.output_dir)
    noise = cfg.eval.noise if cfg.eval.noise is not None else default_noise(cfg.setting.name)
    model = build_model(cfg)
    device = _device(cfg.eval.device)
    names = list(cfg.eval.datasets)
    present = [n for n in names if (benchmark_dir / n).is_dir()]
    for n in names:
        if n not in present:
            log.warning("skipping %s: no folder %s (set paths.benchmark_dir)", n, benchmark_dir / n)
    if not present:
        raise FileNotFoundError(
            f"none of eval.datasets={names} is under {benchmark_dir}: set paths.benchmark_dir to "
            f"a folder holding {', '.join(DATASETS)}"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    sets = [
        BenchmarkSet(benchmark_dir, n, cfg.setting.name, cfg.scale, noise, cache_dir)
        for n in present
    ]
    records = []
    for dataset in sets:
        log.info("evaluating %s (%d items) on %s", dataset.name, len(dataset), device)
        records += evaluate(model, dataset, device, cfg.eval.num_workers)
    summary = summarize(records)
    print(format_table(summary))
    payload = {
        "protocol": PROTOCOL_VERSION,
        "config": OmegaConf.to_container(cfg.model, resolve=True)
        | {"setting": cfg.setting.name, "scale": cfg.scale, "ckpt_path": cfg.get("ckpt_path")},
        "summary": summary,
        "records": records,
    }
    _write_json(output_dir / RESULTS_FILE, payload)
    log.info("results written to %s", output_dir / RESULTS_FILE)
    return payload


@hydra.main(config_path=CONFIG_DIR, config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
