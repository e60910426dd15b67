"""The two training degradations side by side on real photos: the quick preset trained once with
``data/degradation=paper`` and once with ``data/degradation=realistic`` (same budget, seed and
everything else), then both models on RealSRSet images as ``python -m kxnet.predict`` runs them.

    python experiments/degradation_modes.py [--steps 600] [--images oldphoto2 chip ...]

Writes into ``--out`` (default ``experiments/results/degradation_modes/``):
``degradation_modes.png`` (per image, a central crop: the LR pixels enlarged, the paper-mode and
the realistic-mode SR images), ``results.json`` (steps, training seconds and each model's Set5
figures beside bicubic, from the runs' evaluation) and ``command.txt``. The runs themselves go to
``--runs`` (default ``outputs/degradation_modes/``).

NIQE on RealSRSet for the two models: ``experiments/real_photos.py --weights paper=… realistic=…``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import matplotlib
import torch

from kxnet.checkpoint import load_model
from kxnet.config import project_root
from kxnet.data.images import read_image
from kxnet.predict.prediction import PredictOptions, predict_images

MODES = ("paper", "realistic")
IMAGES = ("oldphoto2", "chip", "dped_crop00061", "comic1")


def _shared_data() -> Path:
    return Path(os.environ.get("KXNET_SHARED_DATA", project_root().parent / "shared" / "data"))


def train(mode: str, steps: int, run_dir: Path, overrides: list[str]) -> dict:
    """The quick preset with the ``mode`` degradation for ``steps`` steps, S = 4, into run_dir
    (then its evaluation on Set5, as the preset does)."""
    command = [
        sys.executable,
        "-m",
        "kxnet.train",
        "experiment=quick",
        f"data/degradation={mode}",
        f"trainer.max_steps={steps}",
        "model.net.stages=4",
        f"hydra.run.dir={run_dir}",
        "callbacks.rich_progress_bar=null",
        *overrides,
    ]
    env = dict(os.environ, WANDB_MODE=os.environ.get("WANDB_MODE", "offline"), WANDB_SILENT="true")
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=project_root(), env=env, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"training ({mode}) failed:\n{done.stderr[-3000:]}")
    rows = re.findall(
        r"^\s*(bicubic|KXNet \(this run.*?\))\s+([\d.]+)\s+([\d.]+)", done.stdout, re.M
    )
    set5 = {name.split(" (")[0]: {"psnr_y": float(p), "ssim_y": float(s)} for name, p, s in rows}
    return {"command": " ".join(command[1:]), "seconds": round(seconds, 1), "set5_x2": set5}


def predict(weights: Path, images: list[Path], out: Path) -> dict[str, torch.Tensor]:
    """Each image through the model as ``kxnet.predict`` runs it: ``{name: 3×H×W SR}``."""
    model = load_model(weights).eval()
    results, failures = predict_images(model, images, out, PredictOptions())
    if failures:
        raise SystemExit(f"prediction failed: {failures}")
    return {r.path.stem: read_image(out / f"{r.path.stem}.png") for r in results}


def _crop(image: torch.Tensor, side: int) -> torch.Tensor:
    height, width = image.shape[-2:]
    side = min(side, height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[:, top : top + side, left : left + side]


def picture(lrs: dict, srs: dict, scale: int, crop: int, path: Path) -> None:
    """Rows of (LR enlarged, paper mode, realistic mode), central crops of ``crop`` LR pixels."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(lrs)
    figure, axes = plt.subplots(
        len(names), 3, figsize=(9, 3 * len(names)), squeeze=False, layout="constrained"
    )
    for row, name in enumerate(names):
        lr = _crop(lrs[name], crop)
        panels = [
            ("LR", lr.repeat_interleave(scale, -2).repeat_interleave(scale, -1)),
            ("paper mode", _crop(srs["paper"][name], crop * scale)),
            ("realistic mode", _crop(srs["realistic"][name], crop * scale)),
        ]
        for col, (title, image) in enumerate(panels):
            ax = axes[row][col]
            ax.imshow(image.clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title if row == 0 else "", fontsize=12)
            if col == 0:
                ax.set_ylabel(name, fontsize=11)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600, help="training steps of each mode")
    parser.add_argument("--images", nargs="+", default=list(IMAGES), help="RealSRSet names")
    parser.add_argument("--crop", type=int, default=64, help="LR side of the crops shown")
    parser.add_argument(
        "--override", nargs="*", default=[], help="more training overrides, e.g. eval=null"
    )
    parser.add_argument("--realsr", type=Path, default=_shared_data() / "RealSRSet")
    parser.add_argument("--runs", type=Path, default=project_root() / "outputs/degradation_modes")
    parser.add_argument(
        "--out", type=Path, default=project_root() / "experiments/results/degradation_modes"
    )
    args = parser.parse_args()

    images = [args.realsr / f"{name}.png" for name in args.images]
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise SystemExit(f"missing RealSRSet images: {missing} (--realsr, KXNET_SHARED_DATA)")
    args.out.mkdir(parents=True, exist_ok=True)
    report, srs = {"steps": args.steps, "images": args.images, "modes": {}}, {}
    for mode in MODES:
        run_dir = args.runs / mode
        report["modes"][mode] = train(mode, args.steps, run_dir, args.override)
        srs[mode] = predict(run_dir / "weights.pt", images, run_dir / "realsr")
        print(f"{mode}: {report['modes'][mode]}", flush=True)
    scale = load_model(args.runs / MODES[0] / "weights.pt").scale
    lrs = {p.stem: read_image(p) for p in images}
    picture(lrs, srs, scale, args.crop, args.out / "degradation_modes.png")
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    command = " ".join(["python", "experiments/degradation_modes.py", *sys.argv[1:]])
    (args.out / "command.txt").write_text(command + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
