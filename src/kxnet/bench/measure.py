"""Measuring callables: wall and CPU time, peak memory, FLOPs, and the device's matmul peak.

Memory is counted from a baseline taken just before the measured call, so that it is what the
call needs (activations, gradients in flight, workspaces) and not what already exists
(parameters, optimiser state, inputs):

- :func:`profile_call` gives the peak of the bytes held by the tensors the call allocates: on
  CUDA from the caching allocator (``max_memory_allocated`` over ``memory_allocated`` before),
  on CPU from the profiler's record of every allocation and release. It is exact and does not
  depend on what else the machine runs.
- :func:`rss_peak` gives the process's resident-set growth on CPU (``ru_maxrss`` over the RSS
  before). That high-water mark never falls, so it belongs in a fresh process
  (:func:`run_isolated`); large buffers are made to go back to the system when freed (glibc's
  ``M_MMAP_THRESHOLD``), so that the mark follows the tensors rather than the allocator's cache.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import multiprocessing
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

__all__ = [
    "set_threads",
    "synchronize",
    "Timing",
    "time_calls",
    "time_interleaved",
    "profile_call",
    "rss_peak",
    "count_flops",
    "matmul_peak",
    "run_isolated",
]

_aten = torch.ops.aten


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads in this process (``None`` keeps torch's default)."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(int(threads))


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Seconds per call after warm-up: wall clock, and process CPU time (all threads)."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    first: float = float("nan")

    def summary(self) -> dict[str, Any]:
        def stats(values: list[float]) -> dict[str, Any]:
            return {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
                "all": values,
            }

        return {"wall_s": stats(self.wall), "cpu_s": stats(self.cpu), "first_call_s": self.first}


def time_calls(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> Timing:
    """Call ``fn`` ``warmup`` times, then time ``repeats`` calls, each one synchronised."""
    return time_interleaved({"fn": fn}, device, warmup, repeats)["fn"]


def time_interleaved(
    fns: Mapping[str, Callable[[], object]], device: torch.device, warmup: int, repeats: int
) -> dict[str, Timing]:
    """Warm each callable up, then time them in turn, ``repeats`` rounds: round-robin, so that a
    change in the machine's load affects all of them alike."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    timings = {name: Timing() for name in fns}

    def call(name: str) -> tuple[float, float]:
        synchronize(device)
        wall, cpu = time.perf_counter(), time.process_time()
        fns[name]()
        synchronize(device)
        return time.perf_counter() - wall, time.process_time() - cpu

    for name in fns:
        for i in range(warmup):
            wall, _ = call(name)
            if i == 0:
                timings[name].first = wall
    for _ in range(repeats):
        for name in fns:
            wall, cpu = call(name)
            if math.isnan(timings[name].first):
                timings[name].first = wall
            timings[name].wall.append(wall)
            timings[name].cpu.append(cpu)
    return timings


def _is_conv(name: str) -> bool:
    return "conv" in name.lower() and "::" in name


def _conv_us(prof: torch.profiler.profile, device: torch.device) -> float:
    """Microseconds in convolutions, each outermost convolution operator counted once."""
    total = 0.0
    for event in prof.events():
        if not _is_conv(event.name):
            continue
        parent, nested = event.cpu_parent, False
        while parent is not None and not nested:
            nested, parent = _is_conv(parent.name), parent.cpu_parent
        if not nested:
            total += event.device_time_total if device.type == "cuda" else event.cpu_time_total
    return total


def _peak_allocated(prof: torch.profiler.profile) -> int:
    """Peak of the running sum of the CPU allocations and releases the profiler recorded."""
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    held = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        if event.device_type() == torch.autograd.DeviceType.CPU:
            held += event.nbytes()
            peak = max(peak, held)
    return peak


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2: the profiler's start and stop notices come from C++."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profile_call(fn: Callable[[], object], device: torch.device) -> dict[str, Any]:
    """One call under the profiler: ``{"conv_s", "peak_bytes", "method"}``.

    ``conv_s``: seconds in convolutions (forward and backward; CPU time of the operators on CPU,
    time of their kernels on CUDA). ``peak_bytes``: the peak of the bytes held by tensors the
    call allocated.
    """
    activities = [torch.profiler.ProfilerActivity.CPU]
    cuda = device.type == "cuda"
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    prof = torch.profiler.profile(activities=activities, profile_memory=not cuda)
    with _quiet_stderr():
        prof.start()
    try:
        fn()
        synchronize(device)
    finally:
        with _quiet_stderr():
            prof.stop()
    if cuda:
        peak = torch.cuda.max_memory_allocated(device) - base
        method = "CUDA allocator: max_memory_allocated - memory_allocated before the call"
    else:
        peak = _peak_allocated(prof)
        method = "profiler: peak of the bytes allocated and not yet released during the call"
    return {"conv_s": _conv_us(prof, device) / 1e6, "peak_bytes": int(peak), "method": method}


_M_MMAP_THRESHOLD = -3


def _return_large_buffers() -> None:
    """Ask glibc to map buffers of 128 KiB and more on their own, and unmap them when freed."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
    except (OSError, AttributeError):
        pass


def _rss_bytes() -> int | None:
    """Current resident set size from ``/proc`` (Linux), else ``None``."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _max_rss_bytes() -> int:
    """The process's RSS high-water mark (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def rss_peak(build: Callable[[], Callable[[], object]], calls: int = 2) -> dict[str, Any]:
    """Resident-set growth of ``calls`` calls of ``build()``'s callable, in this process.

    Call it in a fresh process (:func:`run_isolated`): ``{"base", "peak", "step"}`` in bytes,
    the RSS after building, the high-water mark after the calls, and their difference.
    """
    _return_large_buffers()
    fn = build()
    base = _rss_bytes()
    base = base if base is not None else _max_rss_bytes()
    for _ in range(calls):
        fn()
    peak = _max_rss_bytes()
    return {"base": base, "peak": peak, "step": max(peak - base, 0)}


def _conv_backward_flop(
    grad_out_shape,
    x_shape,
    w_shape,
    _bias,
    _stride,
    _padding,
    _dilation,
    transposed,
    _output_padding,
    _groups,
    output_mask,
    **_,
) -> int:
    """FLOPs of a convolution's backward: those of the forward per gradient it computes.

    Each of the input and weight gradients takes exactly the forward's multiply-adds. The stock
    formula counts a grouped convolution's weight gradient as if it were dense, ``groups`` times
    too many, which matters for the batch-as-groups convolutions of :mod:`kxnet.physics`.
    """
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def count_flops(fn: Callable[[], object]) -> dict[str, int]:
    """FLOPs of one call (multiply-adds × 2): ``{"total", "conv"}``; convolutions of any kind."""
    mapping = {_aten.convolution_backward: _conv_backward_flop}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    by_op = counter.get_flop_counts().get("Global", {})
    conv = sum(n for op, n in by_op.items() if "conv" in str(op))
    return {"total": int(counter.get_total_flops()), "conv": int(conv)}


def matmul_peak(
    device: torch.device, dtype: torch.dtype = torch.float32, size: int = 0, repeats: int = 5
) -> float:
    """The best FLOP/s of a dense matrix product over ``repeats`` runs (after one): the better of
    ``a @ b`` (MKL or cuBLAS) and the same product as a 1×1 convolution (oneDNN or cuDNN, the
    libraries of the network's convolutions; MKL's float32 product is far slower than oneDNN's
    on some AMD CPUs, which would make the convolutions look faster than "the peak").

    On CUDA a float32 product may use TF32 exactly when cuDNN convolutions may
    (``torch.backends.cudnn.allow_tf32``), so that the peak is that of the convolutions' math.
    """
    size = size or (8192 if device.type == "cuda" else 2048)
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, generator=generator, device=device).to(dtype)
    b = torch.randn(size, size, generator=generator, device=device).to(dtype)
    side = int(math.isqrt(size))
    pixels = a[: side * side].T.reshape(1, size, side, side)
    image = pixels.contiguous(memory_format=torch.channels_last)
    weight = b.T.reshape(size, size, 1, 1).contiguous(memory_format=torch.channels_last)
    matmul = torch.backends.cuda.matmul
    tf32 = matmul.allow_tf32
    matmul.allow_tf32 = device.type == "cuda" and torch.backends.cudnn.allow_tf32
    try:
        product = time_calls(lambda: a @ b, device, warmup=1, repeats=repeats)
        conv = time_calls(lambda: F.conv2d(image, weight), device, warmup=1, repeats=repeats)
    finally:
        matmul.allow_tf32 = tf32
    return max(2 * size**3 / min(product.wall), 2 * size**2 * side**2 / min(conv.wall))


# Imported by the profiler's first start (about 2 s on a 2-core EPYC): once in the fork server
# instead of in every fresh process that profiles a call.
_PROFILER_IMPORTS = ["torch._inductor"]


def _context(preload: str) -> multiprocessing.context.BaseContext:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([preload, *_PROFILER_IMPORTS])
    return context


def run_isolated(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` (a module-level function, picklable arguments) in a fresh process.

    With the "forkserver" start method each process forks from a server that has imported
    ``fn``'s module (and torch) once, so a fresh process costs a fraction of a second; otherwise
    it is spawned.
    """
    with _context(fn.__module__).Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(fn, args)
