"""The end of a training run: the trained network beside bicubic on the benchmark test sets.

Evaluates as ``python -m kxnet.eval`` does (each item once, on one device), prints the two side
by side, and writes into ``<run folder>/eval/``: ``results.json`` (the trained network) and
``bicubic/results.json`` in the eval command's format, and ``pictures/`` (LR, bicubic, SR and HR
side by side, then the kernel of every stage beside the true one, for the first kernel of each
image).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from kxnet.checks import check_device
from kxnet.config import resolve_path
from kxnet.data.benchmarks import PROTOCOL_VERSION, BenchmarkSet
from kxnet.eval import evaluate, summarize
from kxnet.nn import KXNet
from kxnet.pictures import comparison_strip, kernel_strip

__all__ = ["evaluate_run", "comparison_table"]

log = logging.getLogger(__name__)


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(payload, indent=1))
    os.replace(partial, path)


def _save_png(path: Path, picture: torch.Tensor) -> None:
    array = (picture.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    partial = path.with_name(path.name + ".partial")
    Image.fromarray(array).save(partial, format="PNG")
    os.replace(partial, path)


def comparison_table(trained: Sequence[dict], bicubic: Sequence[dict], stages: int) -> str:
    """Per (setting, scale, noise, dataset): bicubic and the trained network, and the gain."""
    base = {(s["setting"], s["scale"], s["noise"], s["dataset"]): s for s in bicubic}
    lines = [f"{'':32s} {'PSNR-Y':>8s} {'SSIM-Y':>8s}"]
    for row in trained:
        key = (row["setting"], row["scale"], row["noise"], row["dataset"])
        setting = {"iso": "Setting 1", "aniso": "Setting 2"}.get(row["setting"], row["setting"])
        lines.append(f"{row['dataset']} x{row['scale']} {setting}, noise {row['noise']:g}:")
        if key in base:
            b = base[key]
            lines.append(f"  {'bicubic':30s} {b['psnr_y']:8.2f} {b['ssim_y']:8.4f}")
        gain = f"   {row['psnr_y'] - base[key]['psnr_y']:+.2f} dB" if key in base else ""
        name = f"KXNet (this run, S = {stages})"
        lines.append(f"  {name:30s} {row['psnr_y']:8.2f} {row['ssim_y']:8.4f}{gain}")
    return "\n".join(lines)


@torch.inference_mode()
def _pictures(net: KXNet, dataset: BenchmarkSet, folder: Path, device: torch.device) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, (_, noise, kernel_index) in enumerate(dataset.items):
        if kernel_index != 0 or noise != dataset.noise[0]:
            continue
        item = dataset[index]
        output = net(item["lr"][None].to(device))
        stem = f"{item['dataset']}_{item['image']}_k{kernel_index}_noise{noise:g}"
        strip = comparison_strip(item["lr"], output.images[0][0], output.sr[0], item["hr"])
        _save_png(folder / f"{stem}.png", strip)
        kernels_row = kernel_strip([k[0] for k in output.kernels], item["kernel"])
        _save_png(folder / f"{stem}_kernels.png", kernels_row)


def evaluate_run(
    net: KXNet, eval_cfg: Any, paths: Any, output_dir: str | os.PathLike
) -> dict[str, list[dict]]:
    """Evaluate ``net`` and bicubic on ``eval_cfg.datasets`` at ``eval_cfg.noise`` (the
    setting and scale are the network's); returns both summaries."""
    device = check_device(str(eval_cfg.get("device") or "auto"), "eval.device")
    out = Path(output_dir) / "eval"
    bicubic = KXNet(scale=net.scale, stages=0, kernel_size=net.kernel_size, setting=net.setting)
    sets = [
        BenchmarkSet(
            resolve_path(paths.benchmark_dir),
            name,
            net.setting,
            net.scale,
            list(eval_cfg.noise) if eval_cfg.noise is not None else None,
            resolve_path(paths.cache_dir),
        )
        for name in eval_cfg.datasets
    ]
    summaries = {}
    for name, model, folder in (("kxnet", net, out), ("bicubic", bicubic, out / "bicubic")):
        records = []
        for dataset in sets:
            records += evaluate(model, dataset, device, eval_cfg.num_workers)
        summaries[name] = summarize(records)
        config = {
            "scale": net.scale,
            "stages": model.num_stages,
            "kernel_size": net.kernel_size,
            "setting": net.setting,
        }
        payload = {"protocol": PROTOCOL_VERSION, "config": config, "records": records}
        _write_json(folder / "results.json", payload | {"summary": summaries[name]})
    for dataset in sets:
        _pictures(net.to(device), dataset, out / "pictures", device)
    table = comparison_table(summaries["kxnet"], summaries["bicubic"], net.num_stages)
    print(table, flush=True)
    log.info("evaluation written to %s (results.json, bicubic/, pictures/)", out)
    return summaries
