"""The GPU figures of the README's performance section, in one command.

    python experiments/bench_gpu.py            # on a CUDA machine (about 10 minutes on an H100)
    python experiments/bench_gpu.py --smoke    # the same runs, tiny and on CPU: checks it works

Runs ``kxnet.bench`` for x4, S = 19, batch 12, LR 64×64 (the paper's training size) in float32
and bfloat16, eager and compiled (the first also against the authors' formulation, with stage
checkpointing and the hot spots; the last with CUDA graphs), then the x2 inference of every
Set5 image against the authors' formulation (the paper's
Table 4: 0.38 s per image on a P100). Each run's table is printed and its ``bench.json`` kept
under ``--out``; a summary table closes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hydra import compose, initialize_config_module
from rich.console import Console
from rich.table import Table

from kxnet.bench import runner as bench
from kxnet.config import project_root

SET5 = ("baby", "bird", "butterfly", "head", "woman")


def _runs(smoke: bool) -> list[tuple[str, list[str]]]:
    size = ["batch=1", "lr_size=8", "model.net.stages=1", "warmup=0", "repeats=1"] if smoke else [
        "batch=12", "lr_size=64", "model.net.stages=19", "warmup=2", "repeats=5",
    ]  # fmt: skip
    device = ["device=cpu", "threads=1", "rss=false"] if smoke else ["device=cuda"]
    train = ["scale=4", "setting=iso", *size, *device]
    quick = ["compare.authors=false", "compare.checkpointing=false", "phases=[train,infer]"]
    every = "phases=[train,infer,synthesis,hot_spots]"
    runs = [
        ("x4 float32 eager", [*train, "dtype=float32", "model.net.compile=false", every]),
        ("x4 bfloat16 eager", [*train, "dtype=bfloat16", "model.net.compile=false", *quick]),
        ("x4 float32 compiled", [*train, "dtype=float32", "model.net.compile=true", *quick]),
        ("x4 bfloat16 compiled", [*train, "dtype=bfloat16", "model.net.compile=true", *quick]),
    ]
    if not smoke:  # CUDA graphs
        graphs = [*train, "dtype=bfloat16", "model.net.compile=reduce-overhead", *quick]
        runs.append(("x4 bfloat16 CUDA graphs", graphs))
    stages = "model.net.stages=1" if smoke else "model.net.stages=19"
    for name in SET5[:1] if smoke else SET5:
        infer = ["scale=2", "setting=iso", stages, "phases=[infer]", f"infer.image=Set5/{name}.png"]
        runs.append((f"Set5 {name} x2", [*infer, *device, *size[-2:]]))
    if not smoke:  # the loader against the step times measured above
        runs.append(("loader", ["phases=[loader]", *device]))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny runs on CPU")
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    default_out = project_root() / "outputs" / "bench" / "gpu" / stamp
    parser.add_argument("--out", type=Path, default=default_out, help="folder for the reports")
    args = parser.parse_args()
    console = Console(width=160)
    summary = Table(title="KXNet on " + ("CPU (smoke test)" if args.smoke else "GPU"))
    columns = ("run", "device", "step / pass", "first call", "memory", "conv/peak", "×authors")
    for i, col in enumerate(columns):
        summary.add_column(col, justify="left" if i < 2 else "right", no_wrap=True)
    with initialize_config_module("kxnet.conf.bench", version_base="1.3"):
        for i, (name, overrides) in enumerate(_runs(args.smoke)):
            out = args.out / f"{i:02d}_{name.replace(' ', '_')}"
            out.mkdir(parents=True, exist_ok=True)
            cfg = compose("bench", overrides=[*overrides, f"paths.output_dir={out}"])
            console.rule(name)
            try:
                report = bench.run(cfg, console)
            except Exception as error:  # one failed run must not lose the others
                console.print_exception()
                summary.add_row(name, "failed", f"{type(error).__name__}: {error}"[:60])
                continue
            (out / "bench.json").write_text(json.dumps(report, indent=2, default=float))
            if not report["results"]:
                rate = report["loader"]["forms"]["prepared"]["crops_per_s"]
                needed = report["loader"]["needed_crops_per_s"]
                summary.add_row(name, "cpu loader", f"{rate:.0f} crops/s", f"{needed:.0f} needed")
                continue
            phase = "train" if "train/kxnet" in report["results"] else "infer"
            ours = report["results"][f"{phase}/kxnet"]
            fraction = ours.get("conv_fraction_of_peak")
            ratio = ours.get("vs_authors", {}).get("wall_s")
            summary.add_row(
                f"{name} ({phase})",
                report["device"]["name"],
                bench.format_seconds(ours["wall_s"]["median"]),
                bench.format_seconds(ours["first_call_s"]),
                bench.format_bytes(ours["memory"]["peak_bytes"]),
                "–" if fraction is None else f"{fraction:.0%}",
                bench.format_ratio(ratio),
            )
    console.print(summary)
    console.print(f"reports in {args.out}")


if __name__ == "__main__":
    main()
