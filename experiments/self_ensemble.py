"""What the x8 self-ensemble gains on the Gaussian8 test sets and what it costs.

    python experiments/self_ensemble.py outputs/quick/runs/<date>/weights.pt [--datasets Set5 Set14]
        [--one-kernel]

(the weights of ``make train``, or any ``kxnet.eval`` model). Per set: PSNR-Y / SSIM-Y of the
plain network and of :class:`kxnet.ensemble.SelfEnsemble`, the gain, and the seconds per image
of each, both evaluated as ``kxnet.eval`` does, one after the other in this process. Writes
``self_ensemble.md``, ``results.json`` and ``command.txt`` into ``--out`` (default
``experiments/results/self_ensemble/``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from kxnet.checkpoint import load_model
from kxnet.config import project_root
from kxnet.data.benchmarks import BenchmarkSet
from kxnet.ensemble import SelfEnsemble
from kxnet.eval.per_image import evaluate, summarize


def ensemble_table(
    model, datasets: list[str], benchmark_dir: Path, cache: Path, one_kernel: bool
) -> tuple:
    """Per set: PSNR-Y / SSIM-Y plain and x8, the gain, and the seconds per image of each."""
    rows = []
    lines = [
        "| Set | plain | x8 self-ensemble | gain | s / image, plain → x8 |",
        "|---|---|---|---|---|",
    ]
    for name in datasets:
        data = BenchmarkSet(
            benchmark_dir, name, model.setting, model.scale, [0.0], cache, one_kernel=one_kernel
        )
        plain = summarize(evaluate(model, data, "cpu", warmup=1))[0]
        x8 = summarize(evaluate(SelfEnsemble(model), data, "cpu", warmup=1))[0]
        rows.append({"dataset": name, "plain": plain, "x8": x8})
        cost = x8["seconds"] / plain["seconds"]
        lines.append(
            f"| {name} | {plain['psnr_y']:.2f} / {plain['ssim_y']:.4f} | {x8['psnr_y']:.2f} / "
            f"{x8['ssim_y']:.4f} | {x8['psnr_y'] - plain['psnr_y']:+.2f} dB | "
            f"{plain['seconds']:.2f} → {x8['seconds']:.2f} ({cost:.1f}×) |"
        )
        print(lines[-1], flush=True)
    return "\n".join(lines), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path, help="a weights or checkpoint file")
    parser.add_argument("--datasets", nargs="+", default=["Set5", "Set14"])
    parser.add_argument(
        "--one-kernel",
        action="store_true",
        help="image i with the test kernel i mod 8 only, instead of every kernel (8× less time)",
    )
    parser.add_argument("--benchmark-dir", type=Path, default=project_root() / "data/benchmarks")
    parser.add_argument("--cache", type=Path, default=project_root() / ".cache/benchmarks")
    parser.add_argument(
        "--out", type=Path, default=project_root() / "experiments/results/self_ensemble"
    )
    args = parser.parse_args()

    model = load_model(args.weights).eval()
    table, rows = ensemble_table(
        model, args.datasets, args.benchmark_dir, args.cache, args.one_kernel
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "self_ensemble.md").write_text(table + "\n")
    report = {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "one_kernel": args.one_kernel,
        "model": {"scale": model.scale, "setting": model.setting, "stages": model.num_stages},
        "self_ensemble": rows,
    }
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    command = " ".join(["python", "experiments/self_ensemble.py", *sys.argv[1:]])
    (args.out / "command.txt").write_text(command + "\n")


if __name__ == "__main__":
    main()
