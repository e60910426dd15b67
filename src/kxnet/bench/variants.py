"""The measured variants of :mod:`kxnet.bench`: what each spec of the plan builds and runs, in a
measuring process of its own (:func:`measure_phase`, :func:`measure_rss`).

A spec is a picklable mapping: the network (scale, stages, kernel size, setting, layout,
checkpointing, compilation), its ``formulation`` (ours or the authors', a variant of the same
network: ``KXNet(operators=…)``), the precision, the batch and patch, and the ``kind`` of call:

- ``train``: forward, the loss of Eq. 12, backward, the Adam step (fused for ours);
- ``infer``: the inference pass of one benchmark image (``torch.inference_mode``);
- ``synthesis``: the synthesis of a training batch by a ``data/degradation`` preset;
- ``hot_spot``: one operator alone, ours or the authors' form, with its gradients where the
  network needs them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from kxnet import physics, schema
from kxnet.bench import authors, measure, profile
from kxnet.data.synthesis import Degradation, paper_degradation
from kxnet.loss import StageLoss
from kxnet.nn import KXNet

__all__ = [
    "DTYPES",
    "build_model",
    "SHORT",
    "HOT_SPOTS",
    "BUILDERS",
    "measure_phase",
    "measure_rss",
    "measure_profile",
    "degradation_presets",
]

# The training config, whose data/degradation presets the synthesis phase times.
TRAIN_CONFIG = "kxnet.conf.train"

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


SHORT = {"float32": "", "bfloat16": "_bf16"}


def build_model(spec: dict[str, Any], device: torch.device) -> KXNet:
    """The spec's network, its weights drawn from the spec's seed."""
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
        operators=authors.AUTHORS if spec["formulation"] == "authors" else physics.OURS,
    )
    return model.to(device)


def _degradation(spec: dict[str, Any]) -> Degradation:
    """The paper's degradation of the spec's setting and scale (the authors' blur and downsample
    for their formulation)."""
    theirs = spec["formulation"] == "authors"
    return paper_degradation(
        spec["setting"],
        spec["scale"],
        spec["kernel_size"],
        spec["sigma_range"],
        spec["noise_max"],
        blur_downsample=authors.full_blur_downsample if theirs else physics.blur_downsample,
    )


def _preset(spec: dict[str, Any]) -> Degradation:
    """The training config's ``data/degradation`` preset of the spec (composed as
    ``kxnet-train data/degradation=NAME`` composes it), built for its setting, scale, kernels
    and noise. Called in a measuring process, where no Hydra application runs."""
    overrides = [f"data/degradation={spec['degradation']}", f"setting={spec['setting']}"]
    schema.register()
    with initialize_config_module(TRAIN_CONFIG, version_base="1.3"):
        preset = compose("train", overrides=overrides).data.degradation
    for key in ("setting", "scale", "kernel_size", "sigma_range", "noise_max"):
        if key in preset:
            preset[key] = spec[key]
    return instantiate(preset, _convert_="all")


def _autocast(spec: dict[str, Any], device: torch.device) -> contextlib.AbstractContextManager:
    if spec["dtype"] == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[spec["dtype"]])


def _train_parts(
    spec: dict[str, Any], device: torch.device
) -> tuple[KXNet, Callable[[], None], Callable[[], None]]:
    """The network, its forward and backward pass on one batch, and the optimiser's step."""
    model = build_model(spec, device).train()
    generator = torch.Generator(device=device).manual_seed(spec["seed"])
    size = spec["lr_size"] * spec["scale"]
    hr = torch.rand(spec["batch"], 3, size, size, generator=generator, device=device)
    with torch.no_grad():
        batch = _degradation(spec)(hr, generator)
    lr, k = batch["lr"], batch["kernel"]
    loss = StageLoss()
    fused = spec["formulation"] != "authors"  # the authors' Adam steps one tensor at a time
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.9, 0.99), fused=fused)
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    optimiser.step()  # allocates the optimiser state; zero gradients leave the weights as they are

    def forward_backward() -> None:
        with _autocast(spec, device):
            out = model(lr)
        loss(out, hr, k).total.backward()

    def optimiser_step() -> None:
        optimiser.step()
        optimiser.zero_grad(set_to_none=False)

    return model, forward_backward, optimiser_step


def _train_callable(spec: dict[str, Any], device: torch.device) -> Callable[[], None]:
    _, forward_backward, optimiser_step = _train_parts(spec, device)

    def step() -> None:
        forward_backward()
        optimiser_step()

    return step


def _infer_callable(
    spec: dict[str, Any], device: torch.device, inference_mode: bool = True
) -> Callable[[], None]:
    """The inference pass; with ``inference_mode=False`` it records the autograd graph instead,
    for the FLOP counter, which cannot follow parameter views made with gradients off."""
    model = build_model(spec, device).eval()
    lr = spec["infer_lr"].to(device)
    keep = spec["formulation"] == "authors"  # the authors' network returns every stage
    grad_off = torch.inference_mode if inference_mode else contextlib.nullcontext

    def infer() -> None:
        with grad_off(), _autocast(spec, device):
            model(lr, keep_stages=keep)

    return infer


def _synthesis_callable(spec: dict[str, Any], device: torch.device) -> Callable[[], None]:
    generator = torch.Generator(device=device).manual_seed(spec["seed"])
    size = spec["lr_size"] * spec["scale"]
    hr = torch.rand(spec["batch"], 3, size, size, generator=generator, device=device)
    theirs = spec["formulation"] == "authors"
    degradation = _degradation(spec) if theirs else _preset(spec)

    def synthesise() -> None:
        with torch.no_grad():
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
            peaks[dtype] = measure.matmul_peak(device, DTYPES[dtype], common["matmul_size"])
    return {"variants": variants, "matmul_peak": peaks}


def measure_rss(spec: dict[str, Any]) -> dict[str, Any]:
    """The resident-set growth of two calls of one variant, in this (fresh) process (CPU)."""
    measure.set_threads(spec["threads"])
    device = torch.device(spec["device"])
    return measure.rss_peak(lambda: BUILDERS[spec["kind"]](spec, device))


def degradation_presets() -> list[str]:
    """The names of the training config's ``data/degradation`` presets (in a process where no
    Hydra application runs)."""
    with initialize_config_module(TRAIN_CONFIG, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        return loader.get_group_options("data/degradation")


def measure_profile(spec: dict[str, Any]) -> dict[str, float]:
    """Seconds per part of one training step (:mod:`kxnet.bench.profile`), after ``warmup``
    steps, over ``repeats``, in this (fresh) process."""
    measure.set_threads(spec["threads"])
    device = torch.device(spec["device"])
    model, forward_backward, optimiser_step = _train_parts(spec, device)
    for _ in range(spec["warmup"]):
        forward_backward()
        optimiser_step()
    return profile.profile_step(model, forward_backward, optimiser_step, spec["repeats"])
