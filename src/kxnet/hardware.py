"""What the machine computes in: the CPU's name, whether it has native bfloat16, the precision a
CPU run should train in.

Native bfloat16 means instructions that multiply bfloat16 and accumulate in float32: AMX
(``amx_bf16``, Intel Xeon since Sapphire Rapids) or AVX-512 BF16 (``avx512_bf16``, Intel Cooper
Lake and later, AMD Zen 4 and later). Without them oneDNN emulates bfloat16 through float32 and
gains nothing.
"""

from __future__ import annotations

import platform
from functools import cache

import torch

__all__ = [
    "cpu_name",
    "cpu_bf16",
    "native_bf16",
    "cpu_precision",
    "device_note",
    "PRECISIONS",
    "inference_autocast",
]

_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    name, flags = "", frozenset()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not name:
                    name = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = frozenset(value.split())
    except OSError:
        pass
    return name or platform.processor() or platform.machine(), flags


def cpu_name() -> str:
    """The CPU's model name, e.g. "AMD EPYC" or "Intel(R) Xeon(R) Platinum 8480C"."""
    return _cpuinfo()[0]


def cpu_bf16() -> list[str]:
    """The CPU's native bfloat16 instruction sets (``amx_bf16``, ``avx512_bf16``), if any."""
    return [flag for flag in _BF16_FLAGS if flag in _cpuinfo()[1]]


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively and oneDNN uses it."""
    return (
        bool(cpu_bf16())
        and torch.backends.mkldnn.is_available()
        and (torch.ops.mkldnn._is_mkldnn_bf16_supported())
    )


def cpu_precision() -> str:
    """The Lightning precision of a CPU training run: ``bf16-mixed`` with native bfloat16 (the
    proximal networks in bfloat16, the data terms and the loss in float32), else ``32-true``."""
    return "bf16-mixed" if native_bf16() else "32-true"


PRECISIONS = ("32", "bf16")


def device_note(device: torch.device) -> str:
    """What a device computes in, for a run's log line: ``on cuda:0``, or the CPU's name and its
    native bfloat16 (or that it has none)."""
    if device.type != "cpu":
        return f"on {device}"
    bf16 = cpu_bf16()
    native = f"native bfloat16 on this CPU: {', '.join(bf16)}" if bf16 else "no native bfloat16"
    return f"{cpu_name()}, {native}"


def inference_autocast(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context of an inference ``precision`` (one of :data:`PRECISIONS`): ``32``
    (off: the paper's numbers) or ``bf16`` (the proximal networks in bfloat16)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision} is not one of {', '.join(PRECISIONS)}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
