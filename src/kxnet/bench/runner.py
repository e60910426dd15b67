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
- the synthesis of a training batch (:class:`kxnet.data.synthesis.Degradation`: random kernels,
  blur and downsample, noise) for each ``data/degradation`` preset of ``degradations`` (the
  paper's as ``synthesis/kxnet``, the others as ``synthesis/kxnet_<name>``), and the training
  loss is :class:`kxnet.loss.StageLoss`;
- the same for the authors' formulation of the operators (:mod:`kxnet.bench.authors`, same
  network and weights, float32, default layout), and each hot-spot operator alone.

:func:`run` prints tables and returns the report that the command writes to ``bench.json``.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from importlib import resources
from typing import Any
from unittest import mock

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from kxnet import hardware, kernels, physics
from kxnet.bench import authors, formulations, loader, measure, scaling
from kxnet.checks import check_device, check_model, check_scale_setting, positive_int
from kxnet.config import CONFIG_MODULE, resolve_path
from kxnet.data.images import read_image
from kxnet.data.synthesis import Degradation, paper_degradation
from kxnet.errors import StartupError
from kxnet.loss import StageLoss
from kxnet.nn import KXNet

__all__ = ["run", "TARGETS", "format_seconds", "format_bytes", "format_ratio"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
SHORT = {"float32": "", "bfloat16": "_bf16"}

# The goals this project sets itself against the authors' code (ratios ours / theirs).
TARGETS = {
    "train_time_ratio": ("training step time / authors'", "<=", 0.7),
    "train_memory_ratio": ("training step memory / authors'", "<=", 0.5),
    "train_checkpointed_memory_ratio": ("checkpointed training memory / authors'", "<=", 0.25),
    "infer_time_ratio": ("inference time / authors'", "<=", 0.7),
    "conv_fraction_of_peak": ("convolution FLOP/s / matmul peak", ">=", 0.8),
    "synthesis_fraction_of_step": ("synthesis time / training step", "<=", 0.01),
    "realistic_synthesis_fraction_of_step": (
        "realistic synthesis time / training step",
        "<=",
        0.01,
    ),
    "bf16_train_time_ratio": ("bf16 training step / authors' float32 step", "<=", 0.35),
    "bf16_conv_fraction_of_peak": ("bf16 convolution FLOP/s / bf16 matmul peak", ">=", 0.5),
}


def _model(spec: dict[str, Any], device: torch.device) -> KXNet:
    torch.manual_seed(spec["seed"])
    model = KXNet(
        scale=spec["scale"],
        stages=spec["stages"],
        kernel_size=spec["kernel_size"],
        setting=spec["setting"],
        checkpoint_stages=spec["checkpoint_stages"],
        channels_last=spec["channels_last"],
        recompute_data_terms=spec["recompute_data_terms"],
        compile=spec["compile"],
    )
    return model.to(device)


def _degradation(spec: dict[str, Any]) -> Degradation:
    """The paper's degradation of the spec's setting and scale."""
    return paper_degradation(
        spec["setting"], spec["scale"], spec["kernel_size"], spec["sigma_range"], spec["noise_max"]
    )


# Where the training config keeps the data/degradation presets.
PRESETS = ("train", "data", "degradation")


def _preset(spec: dict[str, Any]) -> Degradation:
    """The spec's ``data/degradation`` preset of the training config, built for its setting,
    scale, kernels and noise."""
    path = resources.files(CONFIG_MODULE).joinpath(*PRESETS, f"{spec['degradation']}.yaml")
    preset = OmegaConf.load(path)
    for key in ("setting", "scale", "kernel_size", "sigma_range", "noise_max"):
        if key in preset:
            preset[key] = spec[key]
    return instantiate(preset, _convert_="all")


def _formulation(spec: dict[str, Any]) -> Callable[[], contextlib.AbstractContextManager]:
    theirs = spec["formulation"] == "authors"
    return authors.authors_formulation if theirs else contextlib.nullcontext


def _autocast(spec: dict[str, Any], device: torch.device) -> contextlib.AbstractContextManager:
    if spec["dtype"] == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[spec["dtype"]])


def _train_callable(spec: dict[str, Any], device: torch.device) -> Callable[[], None]:
    model = _model(spec, device).train()
    generator = torch.Generator(device=device).manual_seed(spec["seed"])
    size = spec["lr_size"] * spec["scale"]
    hr = torch.rand(spec["batch"], 3, size, size, generator=generator, device=device)
    with torch.no_grad():
        batch = _degradation(spec)(hr, generator)
    lr, k = batch["lr"], batch["kernel"]
    loss = StageLoss()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.9, 0.99))
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    optimiser.step()  # allocates the optimiser state; zero gradients leave the weights as they are
    formulation = _formulation(spec)

    def step() -> None:
        with formulation():
            with _autocast(spec, device):
                out = model(lr)
            loss(out, hr, k).total.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=False)

    return step


def _infer_callable(
    spec: dict[str, Any], device: torch.device, inference_mode: bool = True
) -> Callable[[], None]:
    """The inference pass; with ``inference_mode=False`` it records the autograd graph instead,
    for the FLOP counter, which cannot follow parameter views made with gradients off."""
    model = _model(spec, device).eval()
    lr = spec["infer_lr"].to(device)
    formulation = _formulation(spec)
    keep = spec["formulation"] == "authors"  # the authors' network returns every stage
    grad_off = torch.inference_mode if inference_mode else contextlib.nullcontext

    def infer() -> None:
        with formulation(), grad_off(), _autocast(spec, device):
            model(lr, keep_stages=keep)

    return infer


def _synthesis_callable(spec: dict[str, Any], device: torch.device) -> Callable[[], None]:
    generator = torch.Generator(device=device).manual_seed(spec["seed"])
    size = spec["lr_size"] * spec["scale"]
    hr = torch.rand(spec["batch"], 3, size, size, generator=generator, device=device)
    theirs = spec["formulation"] == "authors"
    blur = authors.full_blur_downsample if theirs else physics.blur_downsample
    degradation = _degradation(spec) if theirs else _preset(spec)

    def synthesise() -> None:
        with torch.no_grad(), mock.patch.object(physics, "blur_downsample", blur):
            degradation(hr, generator)

    return synthesise


# Each hot spot: (description, our operator, the authors' form, needs gradients).
HOT_SPOTS = {
    "kernel_gradient": ("K-net gradient G_K (fwd+bwd)", physics.kernel_gradient,
                        authors.unfold_kernel_gradient, True),
    "blur_downsample": ("blur + downsample in the network (fwd+bwd)", physics.blur_downsample,
                        authors.repeated_blur_downsample, True),
    "blur_downsample_synthesis": ("blur + downsample in synthesis (fwd)", physics.blur_downsample,
                                  authors.full_blur_downsample, False),
    "transpose_upsample": ("X-net k ⊗ₛᵀ E (fwd+bwd)", physics.transpose_upsample,
                           authors.repeated_transpose_upsample, True),
    "transpose_ones": ("adjuster k ⊗ₛᵀ 1 (fwd+bwd)", physics.transpose_ones,
                       authors.transpose_conv_ones, True),
}  # fmt: skip


def _hot_spot_callable(spec: dict[str, Any], device: torch.device) -> Callable[[], None]:
    _, ours, theirs, grad = HOT_SPOTS[spec["hot_spot"]]
    op = theirs if spec["formulation"] == "authors" else ours
    generator = torch.Generator(device=device).manual_seed(spec["seed"])
    s, p, b, h = spec["scale"], spec["kernel_size"], spec["batch"], spec["lr_size"]
    x = torch.rand(b, 3, h * s, h * s, generator=generator, device=device)
    r = torch.rand(b, 3, h, h, generator=generator, device=device)
    k, _ = _degradation(spec).blur.sample_kernels(b, generator, device, torch.float32)
    inputs = {
        "kernel_gradient": (x, r, p, s),
        "blur_downsample": (x, k, s),
        "blur_downsample_synthesis": (x, k, s),
        "transpose_upsample": (r, k, s),
        "transpose_ones": (k, (h * s, h * s), s),
    }[spec["hot_spot"]]
    if grad:
        for t in inputs:
            if isinstance(t, torch.Tensor):
                t.requires_grad_(True)

    def call() -> None:
        with torch.set_grad_enabled(grad):
            out = op(*inputs)
            if grad:
                out.sum().backward()
                for t in inputs:
                    if isinstance(t, torch.Tensor):
                        t.grad = None

    return call


BUILDERS = {
    "train": _train_callable,
    "infer": _infer_callable,
    "synthesis": _synthesis_callable,
    "hot_spot": _hot_spot_callable,
}


def measure_phase(specs: dict[str, dict[str, Any]], common: dict[str, Any]) -> dict[str, Any]:
    """Time one phase's variants in this (fresh) process, in turns, then profile each.

    Returns ``{"variants": {name: result}, "matmul_peak": {dtype: FLOP/s}}``; a result holds
    the timing summary, the tensor memory peak and, for the model phases, FLOPs and the seconds
    spent in convolutions. The matrix-multiply peak is measured here too, in the same process.
    """
    measure.set_threads(common["threads"])
    device = torch.device(common["device"])
    fns = {name: BUILDERS[spec["kind"]](spec, device) for name, spec in specs.items()}
    timings = measure.time_interleaved(fns, device, common["warmup"], common["repeats"])
    variants = {}
    for name, spec in specs.items():
        result = timings[name].summary() | {"memory": measure.profile_call(fns[name], device)}
        if spec["kind"] in ("train", "infer") and spec.get("count_flops", True):
            eager = spec | {"compile": False}
            counted = BUILDERS[spec["kind"]](eager, device) if spec["compile"] else fns[name]
            if spec["kind"] == "infer":
                counted = _infer_callable(eager, device, inference_mode=False)
            flops = measure.count_flops(counted)
            conv_s = result["memory"].pop("conv_s")
            result |= {
                "flops": flops["total"],
                "conv_flops": flops["conv"],
                "conv_s": conv_s,
                "flops_per_s": flops["total"] / result["wall_s"]["median"],
                "conv_flops_per_s": flops["conv"] / conv_s if conv_s > 0 else math.nan,
            }
        else:
            result["memory"].pop("conv_s")
        variants[name] = result
    peaks = {}
    if common["matmul_peak"]:
        for dtype in common["precisions"]:
            peaks[dtype] = measure.matmul_peak(device, DTYPES[dtype])
    return {"variants": variants, "matmul_peak": peaks}


def measure_rss(spec: dict[str, Any]) -> dict[str, Any]:
    """The resident-set growth of two calls of one variant, in this (fresh) process (CPU)."""
    measure.set_threads(spec["threads"])
    device = torch.device(spec["device"])
    return measure.rss_peak(lambda: BUILDERS[spec["kind"]](spec, device))


def _infer_input(cfg: DictConfig) -> tuple[torch.Tensor, str]:
    """The benchmark image, mod-cropped, blurred by a test kernel, downsampled, 8-bit: 1×3×h×w."""
    path = resolve_path(cfg.infer.image, resolve_path(cfg.paths.benchmark_dir, cfg.paths.root_dir))
    if not path.is_file():
        raise StartupError(
            f"infer.image: {path} does not exist; name an image under paths.benchmark_dir"
        )
    s = cfg.scale
    bank, _ = kernels.test_bank(cfg.setting.name, s, dtype=torch.float32)
    index = cfg.infer.kernel_index
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(bank):
        raise StartupError(f"infer.kernel_index must be in 0…{len(bank) - 1}, got {index}")
    hr = read_image(path).unsqueeze(0)
    hr = hr[..., : hr.shape[-2] // s * s, : hr.shape[-1] // s * s]
    lr = physics.blur_downsample(hr, bank[index : index + 1], s)
    return (lr * 255).round().clamp(0, 255) / 255, str(path)


PHASES = ("train", "infer", "synthesis", "hot_spots", "conv", "scaling", "loader")


def _check(cfg: DictConfig) -> None:
    """Every option that can be checked before measuring: StartupError (one line) if not."""
    check_scale_setting(cfg.scale, cfg.setting.name)
    phases = cfg.phases
    if not isinstance(phases, ListConfig | list) or not phases or set(phases) - set(PHASES):
        raise StartupError(f"phases must be a non-empty list of {list(PHASES)}, got {phases}")
    precisions = cfg.precisions
    if (
        not isinstance(precisions, ListConfig | list)
        or "float32" not in precisions
        or (set(precisions) - set(DTYPES))
    ):
        raise StartupError(
            f"precisions must list float32 and any of {sorted(DTYPES)}, got {precisions}"
        )
    for key in ("batch", "lr_size", "repeats"):
        positive_int(cfg[key], key)
    positive_int(cfg.warmup, "warmup", minimum=0)
    positive_int(cfg.hot_spots.repeats, "hot_spots.repeats")
    positive_int(cfg.hot_spots.warmup, "hot_spots.warmup", minimum=0)
    if cfg.threads is not None:
        positive_int(cfg.threads, "threads")
    positive_int(cfg.model.net.stages, "model.net.stages")  # a training step needs a stage
    check_model(cfg.scale, cfg.setting.name, cfg.model.net.stages, cfg.model.net.kernel_size)
    for name in cfg.degradations:
        if not resources.files(CONFIG_MODULE).joinpath(*PRESETS, f"{name}.yaml").is_file():
            raise StartupError(
                f"degradations: no data/degradation preset {name!r} (paper, realistic)"
            )
    p = int(cfg.model.net.kernel_size)
    if cfg.lr_size * cfg.scale <= p // 2:
        raise StartupError(
            f"lr_size={cfg.lr_size} is too small for kernel size {p} at x{cfg.scale}: set "
            f"lr_size={(p // 2) // cfg.scale + 1} or more"
        )


def _sides(cfg: DictConfig, device: torch.device, infer_lr: torch.Tensor | None) -> tuple:
    """The specs of ours (as configured, float32) and of the authors' formulation."""
    p = int(cfg.model.net.kernel_size)
    common = {
        "device": str(device),
        "threads": cfg.threads,
        "seed": int(cfg.seed),
        "scale": int(cfg.scale),
        "setting": str(cfg.setting.name),
        "kernel_size": p,
        "sigma_range": [float(v) for v in cfg.setting.sigma_range],
        "noise_max": float(cfg.setting.noise_max),
        "stages": int(cfg.model.net.stages),
        "batch": int(cfg.batch),
        "lr_size": int(cfg.lr_size),
        "dtype": "float32",
        "infer_lr": infer_lr,
        "degradation": "paper",
    }
    ours = common | {
        "formulation": "ours",
        "checkpoint_stages": bool(cfg.model.net.checkpoint_stages),
        "channels_last": bool(cfg.model.net.channels_last),
        "recompute_data_terms": bool(cfg.model.net.recompute_data_terms),
        "compile": cfg.model.net.compile,
    }
    theirs = common | {
        "formulation": "authors",
        "checkpoint_stages": False,
        "channels_last": False,
        "recompute_data_terms": False,
        "compile": False,
        "dtype": "float32",
    }
    return ours, theirs


def _plan(cfg: DictConfig, device: torch.device, infer_lr: torch.Tensor) -> dict[str, dict]:
    """Every phase of the run and its variants: ``{phase: {variant: picklable spec}}``."""
    ours, theirs = _sides(cfg, device, infer_lr)
    variants = {}
    for precision in cfg.precisions:
        compiled = [False, ours["compile"] or True] if cfg.compare.compile else [ours["compile"]]
        for mode in dict.fromkeys(compiled):
            name = "kxnet" + SHORT[precision] + ("_compiled" if mode else "")
            variants[name] = ours | {"dtype": str(precision), "compile": mode}
    sides = variants | ({"authors": theirs} if cfg.compare.authors else {})
    phases: dict[str, dict[str, dict]] = {}
    for phase in ("train", "infer"):
        if phase in cfg.phases:
            phases[phase] = {side: spec | {"kind": phase} for side, spec in sides.items()}
    if "synthesis" in cfg.phases:
        presets = {
            "kxnet" if name == "paper" else f"kxnet_{name}": ours
            | {"kind": "synthesis", "degradation": str(name)}
            for name in cfg.degradations
        }
        pair = {"authors": theirs | {"kind": "synthesis"}} if cfg.compare.authors else {}
        phases["synthesis"] = presets | pair
    if "train" in phases and cfg.compare.checkpointing and not cfg.model.net.checkpoint_stages:
        checkpointed = ours | {"kind": "train", "checkpoint_stages": True}
        phases["train"] = {
            "kxnet": phases["train"]["kxnet"],
            "kxnet_checkpointed": checkpointed,
        } | phases["train"]
    if "hot_spots" in cfg.phases:
        for name in HOT_SPOTS:
            phases[f"hot_spot/{name}"] = {
                side: spec | {"kind": "hot_spot", "hot_spot": name, "dtype": "float32"}
                for side, spec in (("kxnet", ours), ("authors", theirs))
            }
    return phases


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def _ratios(results: dict[str, dict]) -> None:
    """Add to each result of ours its time and memory as a ratio to the authors' (same phase),
    and its time as a ratio to ours in float32, eager (``kxnet``)."""
    for name, result in results.items():
        phase, side = name.rsplit("/", 1)
        theirs = results.get(f"{phase}/authors")
        fp32 = results.get(f"{phase}/kxnet")
        if side != "authors" and fp32 is not None:
            result["vs_fp32"] = _ratio(result["wall_s"]["median"], fp32["wall_s"]["median"])
        if side == "authors" or theirs is None:
            continue
        result["vs_authors"] = {
            "wall_s": _ratio(result["wall_s"]["median"], theirs["wall_s"]["median"]),
            "cpu_s": _ratio(result["cpu_s"]["median"], theirs["cpu_s"]["median"]),
            "memory": _ratio(result["memory"]["peak_bytes"], theirs["memory"]["peak_bytes"]),
        }
        if "rss" in result and "rss" in theirs:
            result["vs_authors"]["rss"] = _ratio(result["rss"]["step"], theirs["rss"]["step"])


def _targets(results: dict[str, dict], checkpointed: bool) -> dict[str, Any]:
    """The measured value of each of :data:`TARGETS` (``None`` where not measured)."""

    def vs(name: str, key: str) -> float | None:
        return results.get(name, {}).get("vs_authors", {}).get(key)

    train = results.get("train/kxnet", {})
    step = train.get("wall_s", {}).get("median")
    bf16 = results.get("train/kxnet_bf16", {})
    synthesis = results.get("synthesis/kxnet", {}).get("wall_s", {}).get("median")
    realistic = results.get("synthesis/kxnet_realistic", {}).get("wall_s", {}).get("median")
    measured = {
        "train_time_ratio": vs("train/kxnet", "wall_s"),
        "train_memory_ratio": None if checkpointed else vs("train/kxnet", "memory"),
        "train_checkpointed_memory_ratio": vs(
            "train/kxnet" if checkpointed else "train/kxnet_checkpointed", "memory"
        ),
        "infer_time_ratio": vs("infer/kxnet", "wall_s"),
        "conv_fraction_of_peak": train.get("conv_fraction_of_peak"),
        "synthesis_fraction_of_step": _ratio(synthesis, step),
        "bf16_train_time_ratio": vs("train/kxnet_bf16", "wall_s"),
        "bf16_conv_fraction_of_peak": bf16.get("conv_fraction_of_peak"),
        "realistic_synthesis_fraction_of_step": _ratio(realistic, step),
    }
    targets = {}
    for key, (label, op, bound) in TARGETS.items():
        value = measured[key]
        met = None if value is None else (value <= bound if op == "<=" else value >= bound)
        targets[key] = {"label": label, "value": value, "target": f"{op} {bound}", "met": met}
    return targets


def format_seconds(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "–"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def format_bytes(n: float | None) -> str:
    return "–" if n is None else f"{n / 2**20:.1f} MiB"


def format_ratio(r: float | None) -> str:
    return "–" if r is None else f"{r:.2f}×"


def _table(title: str, columns: tuple[str, ...]) -> Table:
    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right", no_wrap=True)
    return table


def _conv_table(result: dict[str, Any], cfg: dict) -> Table:
    peaks = ", ".join(f"{k} {v / 1e9:.0f}" for k, v in result["matmul_peak"].items())
    title = (
        f"proxNet_X convolution, {result['channels']} channels, batch {cfg['batch']}, LR "
        f"{cfg['lr_size']}², forward + both gradients (matmul peak GFLOP/s: {peaks})"
    )
    table = _table(title, ("formulation", "precision", "time", "GFLOP/s", "of peak"))
    for name, r in result["results"].items():
        form, precision = name.split("/")
        table.add_row(
            form,
            precision,
            format_seconds(r["seconds"]),
            f"{r['flops_per_s'] / 1e9:.0f}",
            f"{r['fraction_of_peak']:.0%}",
        )
    return table


def _scaling_tables(result: dict[str, Any]) -> list[Table]:
    base = result["base"]
    points = _table(
        f"Training step against S, LR patch and batch ({result['precision']}; around S = "
        f"{base['stages']}, LR {base['lr_size']}, batch {base['batch']})",
        ("S", "LR", "batch", "checkpointed", "time", "memory"),
    )
    for m in result["points"].values():
        p = m["point"]
        points.add_row(
            str(p["stages"]),
            str(p["lr_size"]),
            str(p["batch"]),
            "yes" if p["checkpoint_stages"] else "no",
            format_seconds(m["seconds"]),
            format_bytes(m["peak_bytes"]),
        )
    fits = _table(
        "Fitted growth: a + b·S (at the base patch and batch), a + b·(batch · LR pixels) (at "
        "the base S); the paper's x4 step (S = 19, batch 12, LR 64²) read off them",
        ("", "time a", "time b", "max error", "memory a", "memory b", "max error", "paper step"),
    )
    for kind, entry in result["fits"].items():
        paper = result["paper"][kind]
        for axis, label in (("per_stage", "per stage"), ("per_pixel", "per LR pixel")):
            t, m = entry["seconds"][axis], entry["peak_bytes"][axis]
            fits.add_row(
                f"{kind}, {label}",
                format_seconds(t["intercept"]),
                f"{t['slope'] * (1e3 if axis == 'per_stage' else 1e6):.3g} "
                + ("ms" if axis == "per_stage" else "µs"),
                f"{t['max_rel_error']:.0%}",
                format_bytes(m["intercept"]),
                f"{m['slope'] / (2**20 if axis == 'per_stage' else 2**10):.3g} "
                + ("MiB" if axis == "per_stage" else "KiB"),
                f"{m['max_rel_error']:.0%}",
                f"{format_seconds(paper['seconds'])}, {format_bytes(paper['peak_bytes'])}"
                if axis == "per_pixel"
                else "",
            )
    return [points, fits]


def _loader_table(result: dict[str, Any]) -> Table:
    title = (
        f"Loader: HR {result['patch']}² crops/s, batch {result['batch']}, {result['workers']} "
        f"workers, {result['images']} PNG images of {result['image_bytes'] / 2**20:.1f} MiB in "
        f"{result['folder']}"
    )
    table = _table(title, ("form", "crops/s", "× PNG-per-crop", "× needed"))
    png, needed = result["forms"]["png"]["crops_per_s"], result["needed_crops_per_s"]
    for form, rate in result["forms"].items():
        value = rate["crops_per_s"]
        table.add_row(form, f"{value:.0f}", format_ratio(value / png), format_ratio(value / needed))
    step = format_seconds(result["gpu_step_s"])
    table.add_row(f"needed ({step} a step: {result['gpu_step_basis']})", f"{needed:.0f}", "", "")
    return table


def _print(report: dict[str, Any], console: Console) -> None:
    res, cfg, dev = report["results"], report["config"], report["device"]
    infer = report["infer_input"]
    shape = "" if infer is None else f" · infer: LR {infer['lr_shape'][-1]}×{infer['lr_shape'][-2]}"
    title = (
        f"KXNet x{cfg['scale']}, S={cfg['model']['net']['stages']}, {cfg['setting']['name']}, "
        f"p={cfg['model']['net']['kernel_size']} · train: batch {cfg['batch']}, "
        f"LR {cfg['lr_size']}×{cfg['lr_size']}{shape} · {dev['name']}, {dev['threads']} threads"
        + (f", native bf16: {', '.join(dev['bf16'])}" if dev.get("bf16") else "")
    )
    columns = ("task", "time", "spread", "CPU time", "memory", "RSS", "GFLOP", "conv/peak")
    ratio_columns = ("time ×fp32", "time ×auth.", "CPU ×auth.", "memory ×auth.")
    table = _table(title, columns + ratio_columns)
    spots = _table(
        "Hot spots alone, ours against the authors' formulation (float32)",
        ("operator", "ours", "authors'", "time ×", "CPU ×", "ours memory", "authors'", "memory ×"),
    )
    for name, r in res.items():
        wall, vs = r["wall_s"], r.get("vs_authors", {})
        ratios = [format_ratio(vs.get(key)) if vs else "" for key in ("wall_s", "cpu_s", "memory")]
        if name.startswith("hot_spot/"):
            if not name.endswith("/kxnet"):
                continue
            theirs = res[name.replace("/kxnet", "/authors")]
            spots.add_row(
                HOT_SPOTS[name.split("/")[1]][0],
                format_seconds(wall["median"]),
                format_seconds(theirs["wall_s"]["median"]),
                *ratios[:2],
                format_bytes(r["memory"]["peak_bytes"]),
                format_bytes(theirs["memory"]["peak_bytes"]),
                ratios[2],
            )
            continue
        table.add_row(
            name,
            format_seconds(wall["median"]),
            f"±{(wall['max'] - wall['min']) / 2 / wall['median']:.0%}",
            format_seconds(r["cpu_s"]["median"]),
            format_bytes(r["memory"]["peak_bytes"]),
            format_bytes(r["rss"]["step"]) if "rss" in r else "–",
            f"{r['flops'] / 1e9:.1f}" if "flops" in r else "–",
            f"{r['conv_fraction_of_peak']:.0%}" if "conv_fraction_of_peak" in r else "–",
            format_ratio(r["vs_fp32"]) if "vs_fp32" in r else "",
            *ratios,
        )
    console.print(table)
    if any(name.startswith("hot_spot/") for name in res):
        console.print(spots)
    peaks = ", ".join(f"{k} {v / 1e9:.0f}" for k, v in report["matmul_peak_flops_per_s"].items())
    goals = _table(f"Targets (matmul peak GFLOP/s: {peaks})", ("target", "measured", "goal", "met"))
    for t in report["targets"].values():
        value = "–" if t["value"] is None else f"{t['value']:.3f}"
        met = {True: "yes", False: "no", None: "–"}[t["met"]]
        goals.add_row(t["label"], value, t["target"], met)
    if "conv" in report:
        console.print(_conv_table(report["conv"], cfg))
    if "scaling" in report:
        for table in _scaling_tables(report["scaling"]):
            console.print(table)
    if "loader" in report:
        console.print(_loader_table(report["loader"]))
    console.print(goals)


def _conv_spec(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    return {
        "device": str(device),
        "threads": cfg.threads,
        "scale": int(cfg.scale),
        "batch": int(cfg.batch),
        "lr_size": int(cfg.lr_size),
        "precisions": list(cfg.precisions),
        "warmup": int(cfg.conv.warmup),
        "repeats": int(cfg.conv.repeats),
    }


def _scaling(cfg: DictConfig, device: torch.device, console: Console) -> dict[str, Any]:
    """The scaling sweep (:mod:`kxnet.bench.scaling`): every point a training step in a process
    of its own, then the fits and the paper configuration read off them."""
    spec = cfg.scaling
    base = {
        "stages": int(cfg.model.net.stages),
        "lr_size": int(cfg.lr_size),
        "batch": int(cfg.batch),
    }
    sweep = {"stages": spec.stages, "lr_size": spec.lr_sizes, "batch": spec.batches}
    plan = _sides(cfg, device, None)[0] | {"kind": "train"}
    common = {
        "device": str(device),
        "threads": cfg.threads,
        "precisions": [str(spec.precision)],
        "warmup": int(spec.warmup),
        "repeats": int(spec.repeats),
        "matmul_peak": False,
    }
    measured = {}
    for name, point in scaling.points(base, sweep, list(spec.checkpointing)).items():
        console.log(f"timing scaling/{name}")
        variant = plan | point | {"dtype": str(spec.precision), "compile": False}
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


def _gpu_step_s(cfg: DictConfig) -> float | None:
    """The paper configuration's training step time: ``loader.gpu_step_s``, else the fastest
    one in the newest ``make bench-gpu`` reports (x4, S = 19, batch 12, LR 64, on CUDA)."""
    if cfg.loader.gpu_step_s is not None:
        return float(cfg.loader.gpu_step_s)
    runs = sorted((resolve_path("outputs") / "bench" / "gpu").glob("*/"))
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


def _loader(cfg: DictConfig, console: Console) -> dict[str, Any]:
    """The loader phase, in this process (its DataLoader starts worker processes of its own)."""
    console.log("timing loader: png, prepared, cached")
    spec = cfg.loader
    threads = torch.get_num_threads()
    try:
        return loader.measure_loader(
            spec.folder,
            resolve_path(spec.cache_dir),
            int(spec.images),
            int(spec.batch),
            int(spec.workers),
            float(spec.seconds),
            _gpu_step_s(cfg),
            float(spec.gpu_tflops) * 1e12,
        )
    finally:
        torch.set_num_threads(threads)


def _loader_targets(result: dict[str, Any]) -> dict[str, Any]:
    prepared = result["forms"]["prepared"]["crops_per_s"]
    measured = {
        "loader_prepared_vs_png": (
            "prepared folder crops/s / PNG-per-crop", ">=", 10.0, result["prepared_vs_png"]
        ),
        "loader_prepared_crops_per_s": (
            f"prepared HR {result['patch']}² crops/s, {result['workers']} workers", ">=", 1000.0,
            prepared,
        ),
        "loader_keeps_a_gpu_fed": (
            "prepared crops/s / what the paper's GPU step needs", ">=", 1.0,
            prepared / result["needed_crops_per_s"],
        ),
    }  # fmt: skip
    return {
        key: {"label": label, "value": value, "target": f"{op} {bound}", "met": value >= bound}
        for key, (label, op, bound, value) in measured.items()
    }


def run(cfg: DictConfig, console: Console | None = None) -> dict[str, Any]:
    """Measure the configuration ``cfg`` (the ``bench`` config); returns the JSON report."""
    console = console or Console()
    _check(cfg)
    device = check_device(str(cfg.device), "device")
    infer_lr, image = _infer_input(cfg) if "infer" in cfg.phases else (None, None)
    phases = _plan(cfg, device, infer_lr)
    results: dict[str, dict] = {}
    peak: dict[str, float] = {}
    for phase, specs in phases.items():
        hot = phase.startswith("hot_spot/")
        reps = cfg.hot_spots if hot else cfg
        common = {
            "device": str(device),
            "threads": cfg.threads,
            "precisions": list(cfg.precisions),
            "warmup": int(reps.warmup),
            "repeats": int(reps.repeats),
            "matmul_peak": not peak and phase in ("train", "infer"),
        }
        console.log(f"timing {phase}: {', '.join(specs)}")
        out = measure.run_isolated(measure_phase, specs, common)
        peak |= out["matmul_peak"]
        for side, result in out["variants"].items():
            if device.type == "cpu" and cfg.rss:
                console.log(f"resident memory of {phase}/{side}")
                result["rss"] = measure.run_isolated(measure_rss, specs[side])
            results[f"{phase}/{side}"] = result
    for name, result in results.items():
        if "conv_flops_per_s" in result:
            precision = "bfloat16" if "_bf16" in name else "float32"
            result["conv_fraction_of_peak"] = result["conv_flops_per_s"] / peak[precision]
    _ratios(results)
    cuda = device.type == "cuda"
    report = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "device": {
            "type": device.type,
            "name": torch.cuda.get_device_name(device) if cuda else hardware.cpu_name(),
            "threads": cfg.threads or torch.get_num_threads(),
            "bf16": ["cuda"] if cuda and torch.cuda.is_bf16_supported() else hardware.cpu_bf16(),
            "native_bf16": cuda or hardware.native_bf16(),
        },
        "torch": torch.__version__,
        "infer_input": image and {"image": image, "lr_shape": list(infer_lr.shape)},
        "matmul_peak_flops_per_s": peak,
        "results": results,
        "targets": _targets(results, bool(cfg.model.net.checkpoint_stages)),
    }
    if "conv" in cfg.phases:
        console.log(f"timing conv: {', '.join(formulations.FORMULATIONS)}")
        spec = _conv_spec(cfg, device)
        report["conv"] = measure.run_isolated(formulations.measure_formulations, spec)
    if "scaling" in cfg.phases:
        report["scaling"] = _scaling(cfg, device, console)
    if "loader" in cfg.phases:
        report["loader"] = _loader(cfg, console)
        report["targets"] |= _loader_targets(report["loader"])
    _print(report, console)
    return report
