"""The GPU figures of the README's performance section, in one command.

    python experiments/bench_gpu.py            # on a CUDA machine (about 10 minutes on an H100)
    python experiments/bench_gpu.py --smoke    # checks it works, on CPU, in about a minute

``--smoke`` composes and checks the options of every GPU run without running it, then runs each
run tiny on CPU: the x4 run's training step alone (float32, eager and compiled), the bfloat16
scaling sweep over two stage counts, and one Set5 inference (bird) in float32 (the other phases, the
float32 sweep and bfloat16 inference run in ``make bench``'s own tests).

Runs ``kxnet.bench`` for x4, S = 19, batch 12, LR 64×64 (the paper's training size) in float32
and bfloat16, eager and compiled, against the authors' formulation, with stage checkpointing,
the hot spots and the convolution formulations; then with CUDA graphs; the scaling sweep around
the paper's sizes in both precisions (the README's scaling table); the x2 inference of every
Set5 image against the authors' formulation (the paper's Table 4: 0.38 s per image on a P100);
and the loader against the step time just measured. Each run's table is printed and its
``bench.json`` kept under ``--out``; a summary table closes.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from hydra import compose, initialize_config_module
from rich.console import Console
from rich.table import Table

from kxnet.bench import plan, tables
from kxnet.bench import runner as bench
from kxnet.config import checked, project_root
from kxnet.errors import one_line_errors
from kxnet.schema import typed
from kxnet.schema.commands import BenchConfig

SET5 = ("baby", "bird", "butterfly", "head", "woman")


def _runs(smoke: bool) -> list[tuple[str, list[str]]]:
    if smoke:
        size = ["batch=1", "lr_size=8", "model.net.stages=1", "warmup=0", "repeats=1"]
        device = ["device=cpu", "threads=1", "rss=false", "conv.warmup=0", "conv.repeats=1"]
        device += ["matmul_size=64"]
        sweep = ["scaling.stages=[1,2]", "scaling.lr_sizes=[8,12]", "scaling.batches=[1]"]
        sweep += ["scaling.warmup=0", "scaling.repeats=1", "scaling.checkpointing=[false]"]
    else:
        size = ["batch=12", "lr_size=64", "model.net.stages=19", "warmup=2", "repeats=5"]
        device = ["device=cuda"]
        sweep = ["scaling.batches=[4,8,12]"]
    train = ["scale=4", "setting=iso", *size, *device]
    phases = "phases=[train]" if smoke else "phases=[train,infer,synthesis,hot_spots,conv]"
    # smoke: compiled in float32 only (bfloat16 goes through the same compile path under
    # autocast; each first compile costs about half a minute on 2 cores)
    precisions = ["precisions=[float32]"] if smoke else []
    kinds = "x4 float32" if smoke else "x4 float32 and bfloat16"
    runs = [(f"{kinds}, eager and compiled", [*train, phases, "compare.compile=true", *precisions])]
    if not smoke:  # CUDA graphs
        graphs = ["model.net.compile=reduce-overhead", "precisions=[float32,bfloat16]"]
        graphs += ["compare.authors=false", "compare.checkpointing=false", "phases=[train]"]
        runs.append(("x4 CUDA graphs", [*train, *graphs]))
    for precision in ("bfloat16",) if smoke else ("float32", "bfloat16"):  # float32: make bench
        scaling = ["phases=[scaling]", f"scaling.precision={precision}", *sweep]
        runs.append((f"x4 scaling {precision}", [*train, *scaling]))
    net = ["model.net.stages=1", "precisions=[float32]"] if smoke else ["model.net.stages=19"]
    for name in ("bird",) if smoke else SET5:  # smoke: a small one
        infer = ["scale=2", "setting=iso", *net, "phases=[infer]", f"infer.image=Set5/{name}.png"]
        runs.append((f"Set5 {name} x2", [*infer, *device, *size[-2:], "compare.compile=false"]))
    if not smoke:  # the loader against the step times measured above
        runs.append(("loader", ["phases=[loader]", *device]))
    return runs


def _configs(runs: list[tuple[str, list[str]]], out: Path) -> list[tuple[str, Path, BenchConfig]]:
    """Each run's typed bench config, its options checked (a StartupError names the bad one)."""
    configs = []
    for i, (name, overrides) in enumerate(runs):
        folder = out / f"{i:02d}_{re.sub(r'[^A-Za-z0-9]+', '_', name)}"
        composed = compose("bench", overrides=[*overrides, f"paths.output_dir={folder}"])
        config = typed(checked(composed), "bench")
        plan.check(config)
        configs.append((name, folder, config))
    return configs


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
    with one_line_errors(), initialize_config_module("kxnet.conf.bench", version_base="1.3"):
        if args.smoke:  # the GPU runs' options, checked where no GPU is needed
            gpu = _configs(_runs(smoke=False), args.out / "gpu")
            console.print(f"The {len(gpu)} GPU runs' options compose and pass their checks.")
        configs = _configs(_runs(args.smoke), args.out)  # all checked before the first starts
        for name, out, config in configs:
            out.mkdir(parents=True, exist_ok=True)
            console.rule(name)
            try:
                report = bench.run(config, console)
            except Exception as error:  # one failed run must not lose the others
                console.print_exception()
                summary.add_row(name, "failed", f"{type(error).__name__}: {error}"[:60])
                continue
            (out / "bench.json").write_text(json.dumps(report, indent=2, default=float))
            if "loader" in report:
                rate = report["loader"]["forms"]["prepared"]["crops_per_s"]
                needed = report["loader"]["needed_crops_per_s"]
                summary.add_row(name, "cpu loader", f"{rate:.0f} crops/s", f"{needed:.0f} needed")
                continue
            if "scaling" in report:
                paper = report["scaling"]["paper"]["plain"]
                step = tables.format_seconds(paper["seconds"])
                summary.add_row(
                    name, "paper step", step, "", tables.format_bytes(paper["peak_bytes"])
                )
                continue
            phase = "train" if "train/kxnet" in report["results"] else "infer"
            for variant, ours in report["results"].items():
                if not variant.startswith(f"{phase}/kxnet"):
                    continue
                fraction = ours.get("conv_fraction_of_peak")
                summary.add_row(
                    f"{name}: {variant}",
                    report["device"]["name"],
                    tables.format_seconds(ours["wall_s"]["median"]),
                    tables.format_seconds(ours["first_call_s"]),
                    tables.format_bytes(ours["memory"]["peak_bytes"]),
                    "–" if fraction is None else f"{fraction:.0%}",
                    tables.format_ratio(ours.get("vs_authors", {}).get("wall_s")),
                )
    console.print(summary)
    console.print(f"reports in {args.out}")


if __name__ == "__main__":
    main()
