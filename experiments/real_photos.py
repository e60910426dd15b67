"""Trained models on real photos: NIQE on RealSRSet beside bicubic, and the kernel map of one photo
(``kernel=tiled``).

    python experiments/real_photos.py --weights paper=outputs/degradation_modes/paper/weights.pt \
        realistic=outputs/degradation_modes/realistic/weights.pt [--photo dped_crop00061]

(the weights of ``experiments/degradation_modes.py``, or of ``make train`` as one ``NAME=FILE``).
Writes into ``--out`` (default ``experiments/results/real_photos/``): ``niqe.md`` (per photo,
bicubic and each model), ``<photo>_kernel_map.png`` (the first model, tiles of
``--tile`` LR pixels with ``--overlap``), ``results.json`` and ``command.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from kxnet.checkpoint import load_model
from kxnet.config import project_root
from kxnet.data.images import list_images
from kxnet.eval.no_reference import evaluate_photos
from kxnet.predict.prediction import PredictOptions, predict_images


def _shared_data() -> Path:
    return Path(os.environ.get("KXNET_SHARED_DATA", project_root().parent / "shared" / "data"))


def niqe_table(models: dict, photos: list[Path]) -> tuple[str, dict]:
    """NIQE per photo: bicubic, then each model (lower is better)."""
    payloads = {
        name: evaluate_photos(model, photos, torch.device("cpu"), name)
        for name, model in models.items()
    }
    first = next(iter(payloads.values()))
    lines = [f"| Image | Bicubic | {' | '.join(payloads)} |", "|---" * (len(payloads) + 2) + "|"]
    for i, record in enumerate(first["records"]):
        cells = [record["niqe_bicubic"], *(p["records"][i]["niqe"] for p in payloads.values())]
        lines.append(f"| {record['image']} | " + " | ".join(_cell(c) for c in cells) + " |")
    means = [first["summary"]["niqe_bicubic"], *(p["summary"]["niqe"] for p in payloads.values())]
    lines.append("| **average** | " + " | ".join(f"**{_cell(c)}**" for c in means) + " |")
    return "\n".join(lines), payloads


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def kernel_map(model, photo: Path, tile: int, overlap: int, out: Path) -> Path:
    """``kxnet.predict kernel=tiled`` on one photo; its kernel map copied into ``out``."""
    options = PredictOptions(tile_size=tile, overlap=overlap, kernel="tiled")
    with tempfile.TemporaryDirectory() as folder:
        results, failures = predict_images(model, [photo], Path(folder), options)
        if failures:
            raise SystemExit(f"prediction failed: {failures}")
        target = out / f"{photo.stem}_kernel_map.png"
        shutil.copyfile(Path(folder) / f"{photo.stem}_kernel.png", target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", required=True, help="NAME=FILE, one per model")
    parser.add_argument("--realsr", type=Path, default=_shared_data() / "RealSRSet")
    parser.add_argument("--photo", default="dped_crop00061", help="the RealSRSet photo mapped")
    parser.add_argument("--tile", type=int, default=96)
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument(
        "--out", type=Path, default=project_root() / "experiments/results/real_photos"
    )
    args = parser.parse_args()

    models = {}
    for entry in args.weights:
        name, _, path = entry.partition("=")
        models[name] = load_model(path).eval()
    args.out.mkdir(parents=True, exist_ok=True)
    first = next(iter(models.values()))
    photo = args.realsr / f"{args.photo}.png"
    picture = kernel_map(first, photo, args.tile, args.overlap, args.out)
    print(f"kernel map: {picture}", flush=True)
    niqe, payloads = niqe_table(models, list_images(args.realsr))
    (args.out / "niqe.md").write_text(niqe + "\n")
    print(niqe, flush=True)
    report = {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "niqe": payloads,
    }
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    command = " ".join(["python", "experiments/real_photos.py", *sys.argv[1:]])
    (args.out / "command.txt").write_text(command + "\n")


if __name__ == "__main__":
    main()
