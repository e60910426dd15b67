"""The one evaluation driver: ``python -m kxnet.eval`` and the end of a training run use it.

:func:`run_evaluation` measures one model on benchmark sets (:func:`~kxnet.eval.per_image.
evaluate`) and writes the run's files into a folder (``results.json``, ``table.md``, the CSVs of
:func:`~kxnet.eval.report.run_files`), all of them or none; :func:`evaluate_beside_bicubic` does
that for a trained network and for bicubic, writes pictures of the first kernel of every image,
and returns the two side by side as a table.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from kxnet import models
from kxnet.atomic import SHARED_AGE_S, atomic_path, remove_leftovers
from kxnet.data.benchmarks import PROTOCOL_VERSION, BenchmarkSet
from kxnet.ensemble import SelfEnsemble
from kxnet.errors import USER_ERRORS, EvalError, Interrupted, report_error
from kxnet.eval import report
from kxnet.eval.no_reference import check_photos, evaluate_photos, photos_markdown, write_photos
from kxnet.eval.per_image import (
    check_true_kernel,
    device_name,
    evaluate,
    method_name,
    summarize,
)
from kxnet.metrics import psnr
from kxnet.nn import KXNet
from kxnet.pictures import comparison_strip, kernel_strip
from kxnet.schema.commands import EvalConfig
from kxnet.schema.shared import EvalOptionsConfig
from kxnet.startup import check_benchmarks, check_device, check_writable

__all__ = [
    "EvalOptions",
    "EvalPlan",
    "build_model",
    "run",
    "run_evaluation",
    "comparison_table",
    "save_pictures",
    "evaluate_beside_bicubic",
]


@dataclass(frozen=True)
class EvalOptions:
    """How a model is evaluated (the ``eval`` block of the configs).

    datasets: benchmark sets (None: the paper's four, those missing skipped); noise: noise
    levels (None: the setting's); true_kernel: X-net gets the true kernel; method: the row name
    (None: from the model); warmup: untimed passes before each set; progress: a bar per set;
    precision: ``32`` (the paper's numbers) or ``bf16`` (the proximal networks in bfloat16);
    self_ensemble: the x8 self-ensemble (:mod:`kxnet.ensemble`).
    """

    datasets: tuple[str, ...] | None = None
    noise: tuple[float, ...] | None = None
    device: str = "auto"
    num_workers: int = 0
    warmup: int = 0
    true_kernel: bool = False
    method: str | None = None
    progress: bool = False
    precision: str = "32"
    self_ensemble: bool = False

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | EvalOptionsConfig) -> EvalOptions:
        """The options of an ``eval`` config block (a mapping or the schema's instance), whose
        types and ranges the schema checked (:class:`kxnet.schema.shared.EvalOptionsConfig`);
        unknown keys are ignored."""

        values = node if isinstance(node, Mapping) else asdict(node)

        def listed(key: str, kind: Callable) -> tuple | None:
            value = values.get(key)
            return None if value is None else tuple(kind(v) for v in value)

        return cls(
            datasets=listed("datasets", str),
            noise=listed("noise", float),
            device=str(values.get("device") or "auto"),
            num_workers=int(values.get("num_workers", 0)),
            warmup=int(values.get("warmup", 0)),
            true_kernel=bool(values.get("true_kernel", False)),
            method=values.get("method"),
            progress=bool(values.get("progress", False)),
            precision=str(values.get("precision", "32")),
            self_ensemble=bool(values.get("self_ensemble", False)),
        )


@dataclass(frozen=True)
class EvalPlan:
    """An evaluation checked at start-up: its options, device and benchmark sets."""

    options: EvalOptions
    device: torch.device
    benchmark_dir: Path
    cache_dir: Path
    names: tuple[str, ...]

    @classmethod
    def check(
        cls, options: EvalOptions, benchmark_dir: str | os.PathLike, cache_dir: str | os.PathLike
    ) -> EvalPlan:
        """Check the device, the benchmark sets and the cache of an evaluation."""
        device = check_device(options.device, "eval.device")
        names = check_benchmarks(Path(benchmark_dir), options.datasets, "eval.datasets")
        cache = check_writable(cache_dir, "paths.cache_dir")
        return cls(options, device, Path(benchmark_dir), cache, tuple(names))

    def sets(self, model: KXNet) -> list[BenchmarkSet]:
        """The test sets of the model's setting and scale (LR images generated into the cache)."""
        noise = None if self.options.noise is None else list(self.options.noise)
        try:
            return [
                BenchmarkSet(
                    self.benchmark_dir, n, model.setting, model.scale, noise, self.cache_dir
                )
                for n in self.names
            ]
        except (ValueError, OSError) as err:
            raise EvalError(
                f"{err} (eval.noise={noise}, paths.benchmark_dir={self.benchmark_dir})"
            ) from err


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


def _records(
    model: KXNet,
    sets: Sequence[BenchmarkSet],
    device: torch.device,
    options: EvalOptions,
    console: Console | None,
) -> list[dict]:
    records: list[dict] = []
    if options.self_ensemble:
        model = SelfEnsemble(model)
    progress = _progress(console or Console(stderr=True)) if options.progress else None
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
                options.num_workers,
                true_kernel=options.true_kernel,
                warmup=options.warmup,
                on_record=advance,
                precision=options.precision,
            )
    return records


def run_evaluation(
    model: KXNet,
    sets: Sequence[BenchmarkSet],
    device: torch.device,
    output_dir: str | os.PathLike,
    options: EvalOptions,
    *,
    ckpt_path: str | None = None,
    weights: str | None = None,
    command: str | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``sets`` and write the run's files into ``output_dir`` (all or
    none); returns the results payload (what ``results.json`` holds)."""
    records = _records(model, sets, device, options, console)
    payload = {
        "protocol": PROTOCOL_VERSION,
        "method": options.method or _method(model, options),
        "config": {
            "scale": model.scale,
            "stages": model.num_stages,
            "kernel_size": model.kernel_size,
            "setting": model.setting,
            "parameters": model.paper_parameter_count(),
            "ckpt_path": ckpt_path,
            "weights": weights,
            "true_kernel": options.true_kernel,
        },
        "noise": list(sets[0].noise) if sets else [],
        "device": device_name(device),
        "command": command,
        "eval": asdict(options),
        "summary": summarize(records),
        "records": records,
    }
    report.write_files(output_dir, report.run_files(payload))
    return payload


def _method(model: KXNet, options: EvalOptions) -> str:
    name = method_name(model, options.true_kernel)
    return f"{name} x8" if options.self_ensemble and model.num_stages else name


def comparison_table(trained: Sequence[dict], bicubic: Sequence[dict], stages: int) -> str:
    """Per (setting, scale, noise, dataset): bicubic and the trained network, and the gain."""
    base = {(s["setting"], s["scale"], s["noise"], s["dataset"]): s for s in bicubic}
    lines = [f"{'':32s} {'PSNR-Y':>8s} {'SSIM-Y':>8s}"]
    for row in trained:
        key = (row["setting"], row["scale"], row["noise"], row["dataset"])
        setting = report.SETTING_NAMES.get(row["setting"], row["setting"])
        lines.append(f"{row['dataset']} x{row['scale']} {setting}, noise {row['noise']:g}:")
        if key in base:
            b = base[key]
            lines.append(f"  {'bicubic':30s} {b['psnr_y']:8.2f} {b['ssim_y']:8.4f}")
        gain = f"   {row['psnr_y'] - base[key]['psnr_y']:+.2f} dB" if key in base else ""
        name = f"KXNet (this run, S = {stages})"
        lines.append(f"  {name:30s} {row['psnr_y']:8.2f} {row['ssim_y']:8.4f}{gain}")
    return "\n".join(lines)


def _save_png(path: Path, picture: torch.Tensor) -> None:
    array = (picture.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


@torch.inference_mode()
def save_pictures(
    net: KXNet, dataset: BenchmarkSet, folder: Path, device: torch.device
) -> list[Path]:
    """For the first kernel of every image (at the first noise level): LR, bicubic, SR and HR
    side by side, titled with the PSNR-Y of bicubic and of the network (as the tables measure
    it), and the kernel of every stage beside the true one; returns the files."""
    written = []
    for index, (_, noise, kernel_index) in enumerate(dataset.items):
        if kernel_index != 0 or noise != dataset.noise[0]:
            continue
        item = dataset[index]
        output = net(item["lr"][None].to(device))
        stem = folder / f"{item['dataset']}_{item['image']}_k{kernel_index}_noise{noise:g}"
        hr = item["hr"][None].to(device)
        bicubic, sr = output.images[0], output.sr
        strip = comparison_strip(
            item["lr"],
            bicubic[0],
            sr[0],
            item["hr"],
            bicubic_psnr=float(psnr(bicubic, hr, net.scale)[0]),
            sr_psnr=float(psnr(sr, hr, net.scale)[0]),
        )
        kernels_row = kernel_strip([k[0] for k in output.kernels], item["kernel"])
        for path, picture in (
            (Path(f"{stem}.png"), strip),
            (Path(f"{stem}_kernels.png"), kernels_row),
        ):
            _save_png(path, picture)
            written.append(path)
    return written


def evaluate_beside_bicubic(
    net: KXNet, plan: EvalPlan, output_dir: str | os.PathLike
) -> tuple[str, dict[str, dict]]:
    """``net`` and bicubic (S = 0, same scale, setting and kernel size) as ``plan`` says: the
    results of ``net`` in ``output_dir``, bicubic's in ``output_dir/bicubic``, pictures in
    ``output_dir/pictures``. Returns the comparison table and both payloads."""
    out = Path(output_dir)
    bicubic = KXNet(scale=net.scale, stages=0, kernel_size=net.kernel_size, setting=net.setting)
    sets, device = plan.sets(net), plan.device
    payloads = {
        "kxnet": run_evaluation(net, sets, device, out, plan.options),
        "bicubic": run_evaluation(
            bicubic, sets, device, out / "bicubic", replace(plan.options, method=None)
        ),
    }
    for dataset in sets:
        save_pictures(net.to(device), dataset, out / "pictures", device)
    table = comparison_table(
        payloads["kxnet"]["summary"], payloads["bicubic"]["summary"], net.num_stages
    )
    return table, payloads


def build_model(config: EvalConfig, device="cpu") -> KXNet:
    """The network of ``weights`` (a model name) or ``ckpt_path`` (checked against the config's
    model properties), or bicubic without either (``model.net.stages`` null or 0); raises
    CheckpointError, DownloadError or EvalError."""
    asked = models.asked_properties(config)
    if not config.ckpt_path and not config.weights and asked["stages"] is None:
        asked["stages"] = 0
    model = models.build_model(
        config.ckpt_path, config.weights, asked, device, root=config.paths.root_dir
    )
    if model is None:
        raise EvalError(
            f"model.net.stages={asked['stages']} without ckpt_path or weights would evaluate an "
            "untrained network: pass ckpt_path=FILE, weights=NAME (e.g. weights=official) or "
            "set model.net.stages=0 for the bicubic baseline"
        )
    return model


def _run_photos(config: EvalConfig, console: Console) -> int:
    """``eval.photos=DIR``: NIQE of every photo's SR image beside bicubic's (no ground truth)."""
    options = EvalOptions.from_config(config.eval)
    device = check_device(options.device, "eval.device")
    images = check_photos(Path(config.eval.photos))
    model = build_model(config, device)
    output_dir = check_writable(config.paths.output_dir, "paths.output_dir")
    remove_leftovers(output_dir)
    method = options.method or _method(model, options)
    console.print(f"NIQE of {method} on {len(images)} photos ({device})", markup=False)
    net = SelfEnsemble(model) if options.self_ensemble else model
    payload = evaluate_photos(net, images, device, method, options.precision)
    written = write_photos(output_dir, payload)
    print(photos_markdown(payload), flush=True)
    print(f"Wrote {', '.join(p.name for p in written)} to {output_dir}", flush=True)
    return 0


def run(config: EvalConfig, overrides: Sequence[str] = ()) -> int:
    """Check everything that can be checked, evaluate, write the tables; the exit status."""
    console = Console(stderr=True)
    try:
        if config.eval.photos:
            return _run_photos(config, console)
        options = EvalOptions.from_config(config.eval)
        plan = EvalPlan.check(options, config.paths.benchmark_dir, config.paths.cache_dir)
        device = plan.device
        model = build_model(config, device)
        if options.true_kernel:
            check_true_kernel(model, model.setting, model.scale)
        output_dir = check_writable(config.paths.output_dir, "paths.output_dir")
        remove_leftovers(output_dir)
        # The benchmark cache may be shared with runs on other machines: only old leftovers.
        remove_leftovers(plan.cache_dir, recursive=True, min_age_s=SHARED_AGE_S)
        sets = plan.sets(model)
    except USER_ERRORS as err:
        return report_error(err)
    method = options.method or _method(model, options)
    console.print(
        f"Evaluating {method}: {model.setting} x{model.scale}, "
        f"{model.num_stages} stages, on {', '.join(plan.names)} at noise "
        f"{', '.join(f'{n:g}' for n in sets[0].noise)} ({device})",
        markup=False,
    )
    ckpt = config.ckpt_path
    weights = config.weights
    command = shlex.join(["python", "-m", "kxnet.eval", *overrides])
    try:
        payload = run_evaluation(
            model,
            sets,
            device,
            output_dir,
            options,
            ckpt_path=ckpt,
            weights=weights,
            command=command,
            console=console,
        )
    except KeyboardInterrupt as err:
        raise Interrupted(
            f"stopped by Ctrl-C before the evaluation was complete: nothing written to "
            f"{output_dir} (its files are written together once every image is done); run the "
            "same command again"
        ) from err
    print(report.results_markdown(report.result_rows(payload)), flush=True)
    written = ", ".join(report.run_files(payload))
    print(f"Wrote {written} to {output_dir}", flush=True)
    return 0
