"""The benchmark of ``python -m kxnet.bench``: KXNet's speed and memory, against the authors'
formulation.

For one configuration (scale, setting, stages, batch, LR patch, device) it measures, in every
precision of ``precisions`` (float32; bfloat16: autocast of the proximal networks) and, with
``compare.compile``, compiled (``torch.compile`` of each stage) as well as eager,

- the training step (forward, the loss of Eq. 12, backward, Adam step) and the inference pass
  (``torch.inference_mode``, one benchmark image): wall time after warm-up over repetitions
  (median, min, max), the process CPU time, and the time of the first call (compilation); the
  variants of a phase are timed in turns in one fresh process, so that load drifts hit all;
- the peak memory of each, over what exists before the call (see :mod:`kxnet.bench.measure`): the
  tensors' peak (CUDA allocator, or the profiler's record of allocations on CPU), and on CPU the
  resident-set growth, in a fresh process per variant;
- the model FLOPs, the achieved FLOP/s, and the convolutions' FLOP/s as a fraction of the dense
  matrix-multiply peak measured in the same run and the same precision;
- the synthesis of a training batch for each ``data/degradation`` preset of ``degradations``;
- the same for the authors' formulation of the operators (:mod:`kxnet.bench.authors`, same
  network and weights, float32, default layout), and each hot-spot operator alone;
- with the ``profile`` phase, where the training step's time goes (:mod:`kxnet.bench.profile`);
- with the ``backends`` phase, one image through each inference backend
  (:mod:`kxnet.bench.backends`).

:mod:`kxnet.bench.plan` plans the run, :mod:`kxnet.bench.variants` builds and measures each
variant in a process of its own, :mod:`kxnet.bench.tables` computes the ratios and prints the
tables; :func:`run` returns the report that the command writes to ``bench.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from kxnet import hardware
from kxnet.bench import formulations, loader, measure, plan, scaling, tables
from kxnet.bench.backends import export_for, measure_backend
from kxnet.bench.variants import measure_phase, measure_profile, measure_rss
from kxnet.schema.commands import BenchConfig
from kxnet.startup import check_device

__all__ = ["run"]


def _scaling(config: BenchConfig, device: torch.device, console: Console) -> dict[str, Any]:
    """The scaling sweep (:mod:`kxnet.bench.scaling`): every point a training step in a process
    of its own, then the fits and the paper configuration read off them."""
    spec = config.scaling
    base = {
        "stages": int(config.model.net.stages),
        "lr_size": int(config.lr_size),
        "batch": int(config.batch),
    }
    sweep = {"stages": spec.stages, "lr_size": spec.lr_sizes, "batch": spec.batches}
    base_spec = plan.sides(config, device, None)[0] | {"kind": "train"}
    common = {
        "device": str(device),
        "threads": config.threads,
        "precisions": [str(spec.precision)],
        "warmup": int(spec.warmup),
        "repeats": int(spec.repeats),
        "matmul_peak": False,
        "matmul_size": int(config.matmul_size),
    }
    measured = {}
    for name, point in scaling.points(base, sweep, list(spec.checkpointing)).items():
        console.log(f"timing scaling/{name}")
        variant = base_spec | point | {"dtype": str(spec.precision), "compile": False}
        variant["count_flops"] = False
        result = measure.run_isolated(measure_phase, {name: variant}, common)["variants"][name]
        measured[name] = {
            "point": point,
            "seconds": result["wall_s"]["median"],
            "peak_bytes": result["memory"]["peak_bytes"],
        }
    fits = scaling.fit(measured, base)
    return {
        "precision": str(spec.precision),
        "base": base,
        "points": measured,
        "fits": fits,
        "paper": scaling.paper_estimate(fits, base),
    }


def _gpu_step_s(config: BenchConfig) -> float | None:
    """The paper configuration's training step time: ``loader.gpu_step_s``, else the fastest
    one in the newest ``make bench-gpu`` reports (x4, S = 19, batch 12, LR 64, on CUDA)."""
    if config.loader.gpu_step_s is not None:
        return float(config.loader.gpu_step_s)
    runs = sorted((Path(config.paths.root_dir) / "outputs" / "bench" / "gpu").glob("*/"))
    steps = []
    for report in sorted(runs[-1].glob("*/bench.json")) if runs else []:
        data = json.loads(report.read_text())
        c, train = data["config"], data["results"].get("train/kxnet")
        paper = (c["scale"], c["model"]["net"]["stages"], c["batch"], c["lr_size"]) == (
            4,
            19,
            12,
            64,
        )
        if train and paper and data["device"]["type"] == "cuda":
            steps.append(train["wall_s"]["median"])
    return min(steps) if steps else None


def _loader_sources(benchmark_dir: Path) -> Path:
    """The images the loader phase enlarges to DIV2K's size: Set14's, else the folder's own."""
    set14 = benchmark_dir / "Set14"
    return set14 if set14.is_dir() else benchmark_dir


def _loader(config: BenchConfig, console: Console) -> dict[str, Any]:
    """The loader phase, in this process (its DataLoader starts worker processes of its own)."""
    console.log("timing loader: png, prepared, cached")
    spec = config.loader
    threads = torch.get_num_threads()
    try:
        return loader.measure_loader(
            spec.folder,
            Path(spec.cache_dir),
            _loader_sources(Path(config.paths.benchmark_dir)),
            int(spec.images),
            int(spec.batch),
            int(spec.workers),
            float(spec.seconds),
            _gpu_step_s(config),
            float(spec.gpu_tflops) * 1e12,
        )
    finally:
        torch.set_num_threads(threads)


def _backends(config: BenchConfig, device: torch.device, console: Console) -> dict[str, Any]:
    """The backends phase: the ONNX model exported into the run folder, then each backend in a
    process of its own."""
    specs = plan.backend_specs(config, device)
    path = Path(config.paths.output_dir) / "kxnet.onnx"
    console.log(f"exporting the network to {path}")
    measure.run_isolated(export_for, specs["onnxruntime"], path)
    results = {}
    for name, spec in specs.items():
        console.log(f"timing backends/{name}")
        results[name] = measure.run_isolated(measure_backend, spec | {"onnx_path": str(path)})
    return {"lr_size": int(config.backends.lr_size), "results": results}


def run(config: BenchConfig, console: Console | None = None) -> dict[str, Any]:
    """Measure the configuration ``config`` (the ``bench`` config); returns the JSON report."""
    console = console or Console()
    plan.check(config)
    device = check_device(str(config.device), "device")
    infer_lr, image = plan.infer_input(config) if "infer" in config.phases else (None, None)
    phases = plan.phases(config, device, infer_lr)
    results: dict[str, dict] = {}
    peak: dict[str, float] = {}
    for phase, specs in phases.items():
        hot = phase.startswith("hot_spot/")
        reps = config.hot_spots if hot else config
        common = {
            "device": str(device),
            "threads": config.threads,
            "precisions": list(config.precisions),
            "warmup": int(reps.warmup),
            "repeats": int(reps.repeats),
            "matmul_peak": not peak and phase in ("train", "infer"),
            "matmul_size": int(config.matmul_size),
        }
        console.log(f"timing {phase}: {', '.join(specs)}")
        out = measure.run_isolated(measure_phase, specs, common)
        peak |= out["matmul_peak"]
        for side, result in out["variants"].items():
            if device.type == "cpu" and config.rss:
                console.log(f"resident memory of {phase}/{side}")
                result["rss"] = measure.run_isolated(measure_rss, specs[side])
            results[f"{phase}/{side}"] = result
    for name, result in results.items():
        if "conv_flops_per_s" in result:
            precision = "bfloat16" if "_bf16" in name else "float32"
            result["conv_fraction_of_peak"] = result["conv_flops_per_s"] / peak[precision]
    tables.ratios(results)
    cuda = device.type == "cuda"
    report = {
        "config": asdict(config),
        "device": {
            "type": device.type,
            "name": torch.cuda.get_device_name(device) if cuda else hardware.cpu_name(),
            "threads": config.threads or torch.get_num_threads(),
            "bf16": ["cuda"] if cuda and torch.cuda.is_bf16_supported() else hardware.cpu_bf16(),
            "native_bf16": cuda or hardware.native_bf16(),
        },
        "torch": torch.__version__,
        "infer_input": image and {"image": image, "lr_shape": list(infer_lr.shape)},
        "matmul_peak_flops_per_s": peak,
        "results": results,
        "targets": tables.targets(results, bool(config.model.net.checkpoint_stages)),
    }
    if "profile" in config.phases:
        report["profile"] = {}
        for precision, spec in plan.profile_specs(config, device).items():
            console.log(f"profiling the training step, {precision}")
            report["profile"][precision] = measure.run_isolated(measure_profile, spec)
    if "backends" in config.phases:
        report["backends"] = _backends(config, device, console)
        report["targets"] |= tables.backend_targets(report["backends"])
    if "conv" in config.phases:
        console.log(f"timing conv: {', '.join(formulations.FORMULATIONS)}")
        spec = plan.conv_spec(config, device)
        report["conv"] = measure.run_isolated(formulations.measure_formulations, spec)
    if "scaling" in config.phases:
        report["scaling"] = _scaling(config, device, console)
    if "loader" in config.phases:
        report["loader"] = _loader(config, console)
        report["targets"] |= tables.loader_targets(report["loader"])
    tables.print_report(report, console)
    return report
