"""Training degradations synthesised on the batch's device: ``y = (x ⊗ k)↓s + n`` (Eq. 1,
with the kernels and noise of the setting, :mod:`kxnet.description`).

Data-loader workers only read and crop HR images; a :class:`Degradation` turns a batch of HR
crops into LR inputs with fresh random kernels (and noise in Setting 2) wherever the batch lives,
GPU included. It is a kornia ``ImageSequential`` of kornia augmentations, whose parameters are
generated per batch, applied on the device and returned, as kornia's are; unlike kornia's, every
draw (the per-sample gate of an operator applied with probability p included) comes from an
explicit ``torch.Generator`` (:class:`Seeded`), never from the global generator.
:func:`step_generator` gives each (seed, rank, step) its own stream, so two ranks never draw the
same kernels, a run can be repeated and a resumed run draws what the uninterrupted one would have.

The paper's pipeline (:func:`paper_degradation`): :class:`SeededBlurDownsample` (a Gaussian kernel
per sample, the strided depthwise convolution of :func:`kxnet.physics.blur_downsample`),
:class:`SeededGaussianNoise` in Setting 2, and :class:`Quantize` (clamp, 8-bit rounding). The
realistic operators that may follow the blur are in :mod:`kxnet.data.realistic`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from kornia.augmentation import AugmentationBase2D, ImageSequential, RandomGaussianNoise
from kornia.augmentation.container.params import ParamItem
from torch import Tensor, nn

from kxnet import description, kernels, physics

__all__ = [
    "Degradation",
    "Quantize",
    "Seeded",
    "SeededBlurDownsample",
    "SeededGaussianNoise",
    "drawn_parameters",
    "paper_degradation",
    "step_generator",
    "uniform",
]


def step_generator(seed: int, rank: int, step: int, device: torch.device | str) -> torch.Generator:
    """A generator on ``device`` seeded from a hash of (seed, rank, step): one stream per step."""
    digest = hashlib.blake2b(f"{seed}/{rank}/{step}".encode(), digest_size=8).digest()
    generator = torch.Generator(device=device)
    generator.manual_seed(int.from_bytes(digest, "little") >> 1)
    return generator


def uniform(
    shape: Sequence[int], bounds: Sequence[float], generator: torch.Generator, dtype: torch.dtype
) -> Tensor:
    """``shape`` values ~ U[bounds] on the generator's device."""
    low, high = (float(b) for b in bounds)
    u = torch.rand(tuple(shape), generator=generator, device=generator.device, dtype=dtype)
    return low + (high - low) * u


def _range(bounds: Sequence[float], name: str, low: float = 0.0) -> tuple[float, float]:
    a, b = (float(v) for v in bounds)
    if not low <= a <= b:
        raise ValueError(
            f"{name} must be a range [a, b] with {low:g} <= a <= b, got {list(bounds)}"
        )
    return a, b


class Seeded:
    """A kornia augmentation whose parameters are drawn from an explicit ``torch.Generator``.

    ``forward_parameters(batch_shape, generator, dtype)`` replaces kornia's (which draws from the
    global generator): the per-sample gate ``batch_prob`` (1 where the operator applies; drawn
    only when p < 1), then :meth:`draw`'s parameters, all on the generator's device. The
    augmentation then runs as kornia's own with ``forward(x, params=...)``. ``suffix`` tells the
    rounds of a realistic degradation apart in the batch keys (:meth:`entries`).
    """

    suffix: str = ""

    def forward_parameters(
        self,
        batch_shape: torch.Size,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> dict[str, Tensor]:
        if generator is None:
            raise ValueError(
                f"{type(self).__name__} draws its parameters from an explicit torch.Generator: "
                "call forward_parameters(batch_shape, generator) and forward(x, params=...)"
            )
        batch = batch_shape[0]
        if self.p >= 1:
            gate = torch.ones(batch, device=generator.device, dtype=dtype)
        else:
            gate = (uniform([batch], (0, 1), generator, dtype) < self.p).to(dtype)
        params = self.draw(batch_shape, generator, dtype)
        params["batch_prob"] = gate
        params["forward_input_shape"] = torch.tensor(tuple(batch_shape), dtype=torch.long)
        return params

    def draw(
        self, batch_shape: torch.Size, generator: torch.Generator, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        """This operator's parameters for a batch of ``batch_shape``."""
        raise NotImplementedError

    def output_shape(self, batch_shape: torch.Size) -> torch.Size:
        """The shape this operator turns ``batch_shape`` into (the same, except the blur's)."""
        return batch_shape

    def entries(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The drawn parameters for the training batch: ``{key: B values}``."""
        raise NotImplementedError

    @staticmethod
    def applied(params: Mapping[str, Tensor]) -> Tensor:
        """The per-sample gate as booleans: B."""
        return params["batch_prob"] > 0.5

    def only_applied(self, params: Mapping[str, Tensor], values: Tensor) -> Tensor:
        """``values`` (B) where the operator applied, NaN elsewhere."""
        return torch.where(self.applied(params), values, torch.full_like(values, float("nan")))


class SeededBlurDownsample(Seeded, AugmentationBase2D):
    """``(x ⊗ k)↓s`` with a fresh Gaussian kernel per sample (paper Eq. 1).

    Args:
        setting: "iso" (Setting 1: isotropic kernels) or "aniso" (Setting 2: rotated anisotropic
            kernels, θ ~ U[−π, π]).
        scale: SR factor s.
        kernel_size: p; defaults to the setting's (21, or 11/15/21 at x2/x3/x4 in Setting 2).
        sigma_range: range of σ (iso) or of σx and σy (aniso); defaults to the setting's
            (:func:`kxnet.description.train_sigma_range`).
        blur_downsample: the operator's formulation (:func:`kxnet.physics.blur_downsample`, one
            strided depthwise convolution; the benchmark passes the authors' form).

    B×C×H×W (H, W multiples of s) → B×C×(H/s)×(W/s). Parameters: ``kernel`` B×p×p and
    ``kernel_params`` B×3 (σx, σy, θ; iso: σ, σ, 0), drawn as
    :func:`kxnet.kernels.random_isotropic` /
    :func:`~kxnet.kernels.random_anisotropic` draw them.
    """

    def __init__(
        self,
        setting: str,
        scale: int,
        kernel_size: int | None = None,
        sigma_range: Sequence[float] | None = None,
        blur_downsample: Callable[[Tensor, Tensor, int], Tensor] = physics.blur_downsample,
    ) -> None:
        super().__init__(p=1.0)
        self.blur_downsample = blur_downsample
        self.setting = str(setting)
        self.scale = int(scale)
        default_p = description.kernel_size(self.setting, self.scale)
        self.kernel_size = int(kernel_size) if kernel_size is not None else default_p
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        low, high = (
            sigma_range
            if sigma_range is not None
            else description.train_sigma_range(self.setting, self.scale)
        )
        if not 0 < low <= high:
            raise ValueError(f"sigma_range must satisfy 0 < low <= high, got [{low}, {high}]")
        self.sigma_range = (float(low), float(high))
        self.flags = {"setting": self.setting, "scale": self.scale, "kernel_size": self.kernel_size}

    def sample_kernels(
        self, batch: int, generator: torch.Generator, device, dtype
    ) -> tuple[Tensor, Tensor]:
        """``batch`` random kernels B×p×p and their parameters B×3 (σx, σy, θ)."""
        args = (batch, self.kernel_size, self.sigma_range, generator, device, dtype)
        if self.setting == "iso":
            k, sigma = kernels.random_isotropic(*args)
            return k, torch.stack([sigma, sigma, torch.zeros_like(sigma)], dim=1)
        return kernels.random_anisotropic(*args)

    def draw(self, batch_shape, generator, dtype):
        k, params = self.sample_kernels(batch_shape[0], generator, generator.device, dtype)
        return {"kernel": k, "kernel_params": params}

    def output_shape(self, batch_shape):
        s = self.scale
        return torch.Size((*batch_shape[:-2], batch_shape[-2] // s, batch_shape[-1] // s))

    def entries(self, params):
        return {"kernel": params["kernel"], "kernel_params": params["kernel_params"]}

    def apply_transform(self, input, params, flags, transform=None) -> Tensor:
        return self.blur_downsample(input, params["kernel"], self.scale)


class SeededGaussianNoise(Seeded, RandomGaussianNoise):
    """White Gaussian noise of σ ~ U[sigma] per sample, σ in 0–255 units (the paper's N).

    kornia's ``RandomGaussianNoise`` with a per-sample σ: its ``gaussian_noise`` parameter is the
    drawn field ``ε · σ/255`` (B×C×h×w, ε ~ N(0, 1)), added to the image. Batch entry: ``noise``
    (+ suffix), σ of each sample, 0 where the noise was not applied.
    """

    def __init__(self, sigma: Sequence[float], p: float = 1.0, suffix: str = "") -> None:
        super().__init__(mean=0.0, std=1.0, p=p)
        self.sigma = _range(sigma, "gaussian_noise sigma")
        self.suffix = suffix

    def draw(self, batch_shape, generator, dtype):
        sigma = uniform([batch_shape[0]], self.sigma, generator, dtype)
        eps = torch.randn(
            tuple(batch_shape), generator=generator, device=generator.device, dtype=dtype
        )
        return {"sigma": sigma, "gaussian_noise": eps * (sigma / 255.0).view(-1, 1, 1, 1)}

    def entries(self, params):
        sigma = params["sigma"]
        return {f"noise{self.suffix}": torch.where(self.applied(params), sigma, 0.0 * sigma)}


class Quantize(nn.Module):
    """Clamp to [0, 1] and, with ``quantize``, round to the 8-bit grid (``round(255·y)/255``), as
    the authors' training does and as the test sets are: B×C×h×w → B×C×h×w."""

    def __init__(self, quantize: bool = True) -> None:
        super().__init__()
        self.quantize = bool(quantize)

    def extra_repr(self) -> str:
        return f"quantize={self.quantize}"

    def forward(self, y: Tensor) -> Tensor:
        y = y.clamp(0.0, 1.0)
        return y.mul(255.0).round_().div_(255.0) if self.quantize else y


class Degradation(ImageSequential):
    """A kornia ``ImageSequential`` of :class:`Seeded` augmentations that makes training batches.

    The first module is the :class:`SeededBlurDownsample` whose Gaussian kernel is the batch's
    ground truth (what the kernel loss compares with). ``forward(hr, generator)`` with hr
    B×3×H×W (H, W multiples of s) draws every module's parameters from ``generator`` in order
    (:meth:`forward_parameters`), runs the modules on hr's device and returns the training batch
    ``{"lr": B×3×(H/s)×(W/s), "hr", "kernel": B×p×p, "kernel_params": B×3, "noise": B, …}`` with
    every drawn parameter (one value per sample; see each module's ``entries``). The draw is also
    kept as kornia keeps it (``self._params``), and ``forward(hr, params=...)`` replays it.
    """

    def __init__(self, *modules: nn.Module) -> None:
        if not modules or not isinstance(modules[0], SeededBlurDownsample):
            raise ValueError("a Degradation starts with the SeededBlurDownsample of its kernels")
        super().__init__(*modules, disable_sequential_features=True)

    @property
    def blur(self) -> SeededBlurDownsample:
        return self[0]

    @property
    def scale(self) -> int:
        return self.blur.scale

    @property
    def kernel_size(self) -> int:
        return self.blur.kernel_size

    @property
    def sigma_range(self) -> tuple[float, float]:
        return self.blur.sigma_range

    def forward_parameters(
        self,
        batch_shape: torch.Size,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> list[ParamItem]:
        """Every module's parameters, drawn in order from ``generator`` (kornia's ParamItems)."""
        if generator is None:
            raise ValueError("a Degradation draws from an explicit torch.Generator")
        params = []
        for name, module in self.named_children():
            if isinstance(module, Seeded):
                params.append(
                    ParamItem(name, module.forward_parameters(batch_shape, generator, dtype))
                )
                batch_shape = module.output_shape(batch_shape)
            else:
                params.append(ParamItem(name, None))
        return params

    def forward(
        self,
        hr: Tensor,
        generator: torch.Generator | None = None,
        params: list[ParamItem] | None = None,
    ) -> dict[str, Tensor]:
        if hr.dim() != 4 or hr.shape[1] != 3:
            raise ValueError(f"Degradation expects HR crops B×3×H×W, got {tuple(hr.shape)}")
        dtype = hr.dtype if hr.is_floating_point() else torch.float32
        hr = hr.to(dtype)
        if params is None:
            params = self.forward_parameters(hr.shape, generator, dtype)
        lr = super().forward(hr, params=params)
        batch = {
            "lr": lr,
            "hr": hr,
            "noise": torch.zeros(hr.shape[0], device=hr.device, dtype=dtype),
        }
        for item in params:
            if item.data is not None:
                batch.update(self.get_submodule(item.name).entries(item.data))
        return batch


def paper_degradation(
    setting: str,
    scale: int,
    kernel_size: int | None = None,
    sigma_range: Sequence[float] | None = None,
    noise_max: float | None = None,
    quantize: bool = True,
    blur_downsample: Callable[[Tensor, Tensor, int], Tensor] = physics.blur_downsample,
) -> Degradation:
    """The paper's training degradation: random Gaussian blur, s-fold downsampling, noise σ ~
    U[0, noise_max] per sample (0–255 units; default: the setting's,
    :func:`kxnet.description.train_noise_max`), clamp and (with
    ``quantize``) 8-bit rounding. See :class:`SeededBlurDownsample` for the other arguments."""
    blur = SeededBlurDownsample(setting, scale, kernel_size, sigma_range, blur_downsample)
    if noise_max is None:
        noise_max = description.train_noise_max(blur.setting)
    if noise_max < 0:
        raise ValueError(f"noise_max must be >= 0, got {noise_max}")
    noise = [SeededGaussianNoise((0.0, noise_max))] if noise_max > 0 else []
    return Degradation(blur, *noise, Quantize(quantize))


def drawn_parameters(batch: Mapping[str, Any]) -> dict[str, Tensor]:
    """The drawn parameters of a training batch, B values each: the kernel's σx, σy and θ, the
    noise σ and whatever else the degradation drew (NaN where an operator was not applied)."""
    drawn = {}
    for key, value in batch.items():
        if key in ("lr", "hr", "kernel") or not isinstance(value, Tensor):
            continue
        if key == "kernel_params":
            names = ("kernel_sigma_x", "kernel_sigma_y", "kernel_theta")
            drawn.update(zip(names, value.unbind(1), strict=True))
        else:
            drawn[key] = value
    return drawn
