"""Real LR photos without ground truth (``eval.photos=DIR``, e.g. RealSRSet): NIQE of the SR
image of every photo and on average (:mod:`kxnet.niqe`; lower is more natural), for the model
and for bicubic, written as ``results.json`` and ``table.md``."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kxnet.data.images import list_images, read_image
from kxnet.errors import EvalError
from kxnet.eval import report
from kxnet.hardware import inference_autocast
from kxnet.niqe import BLOCK, niqe
from kxnet.nn import KXNet

__all__ = ["check_photos", "evaluate_photos", "photos_markdown", "write_photos"]


def check_photos(folder: Path) -> list[Path]:
    """The images directly in ``folder``; EvalError when there is none."""
    images = list_images(folder) if folder.is_dir() else []
    if not images:
        raise EvalError(
            f"eval.photos={folder} is not a folder of images: point it at LR photos (RealSRSet)"
        )
    return images


def _niqe(sr: torch.Tensor) -> float | None:
    """NIQE of a 3×H×W image, None when it is smaller than one 96×96 block."""
    return niqe(sr.float().cpu()) if min(sr.shape[-2:]) >= BLOCK else None


@torch.inference_mode()
def evaluate_photos(
    model: nn.Module,
    images: Sequence[Path],
    device: torch.device,
    method: str,
    precision: str = "32",
) -> dict[str, Any]:
    """Per photo: its size, the NIQE of the model's and of bicubic's SR image, the seconds of the
    model's forward pass; and the averages (``summary``)."""
    model = model.eval().to(device)
    bicubic = KXNet(model.scale, 0, kernel_size=model.kernel_size)
    cast = inference_autocast(device, precision)
    records = []
    for path in images:
        lr = read_image(path)[None].to(device)
        start = time.perf_counter()
        with cast:
            sr = model(lr, keep_stages=False).sr
        seconds = time.perf_counter() - start
        records.append(
            {
                "image": path.stem,
                "lr_size": list(lr.shape[-2:]),
                "niqe": _niqe(sr[0]),
                "niqe_bicubic": _niqe(bicubic.initial_image(lr.cpu())[0]),
                "seconds": seconds,
            }
        )

    def mean(key: str) -> float | None:
        values = [r[key] for r in records if r[key] is not None]
        return sum(values) / len(values) if values else None

    return {
        "method": method,
        "scale": model.scale,
        "summary": {key: mean(key) for key in ("niqe", "niqe_bicubic", "seconds")},
        "records": records,
    }


def photos_markdown(payload: dict[str, Any]) -> str:
    """NIQE per photo and the average, bicubic beside the model (lower is better); one column
    when the model is bicubic."""

    def cell(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    keys = ["niqe_bicubic"] + ([] if payload["method"] == "Bicubic" else ["niqe"])
    names = ["Bicubic", payload["method"]][: len(keys)]
    lines = [f"| Image | {' | '.join(names)} |", "|---" * (len(keys) + 1) + "|"]
    for r in payload["records"]:
        lines.append(f"| {r['image']} | {' | '.join(cell(r[k]) for k in keys)} |")
    means = " | ".join(f"**{cell(payload['summary'][k])}**" for k in keys)
    lines.append(f"| **average** | {means} |")
    return "\n".join(lines)


def write_photos(output_dir: str | os.PathLike, payload: dict[str, Any]) -> list[Path]:
    """``results.json`` and ``table.md`` (NIQE, x{scale}) into ``output_dir``, all or none."""
    title = f"# NIQE on real photos, x{payload['scale']} (no ground truth; lower is better)"
    return report.write_files(
        output_dir,
        {
            "results.json": json.dumps(payload, indent=2) + "\n",
            "table.md": f"{title}\n\n{photos_markdown(payload)}\n",
        },
    )
