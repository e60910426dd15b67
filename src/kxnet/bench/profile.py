"""Where the training step's time goes: ``torch.profiler`` over a few steps, each operator
attributed to a part of the network.

The parts are scopes that hooks put around modules: proxNet_K and proxNet_X (the proximal
networks' convolutions), the rest of K-net (the kernel step: the data gradient of the kernel and
the projection onto the simplex), the rest of X-net (the image data terms: residual, transposed
convolution, adjuster), and the optimiser's step. An operator of the forward pass belongs to its
innermost scope; one of the backward pass to the scope of the forward operator that created it
(the autograd node's sequence number). What no scope holds (the loss, the bicubic start, the
framework) is "the rest".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

from kxnet.nn.knet import KNet
from kxnet.nn.proxnet import ProxNet
from kxnet.nn.xnet import XNet

__all__ = ["PARTS", "scoped", "profile_step", "shares"]

# Scope name → the part it measures; "rest" is what no scope holds.
PARTS = {
    "kxnet/proximal": "proximal networks",
    "kxnet/data_terms": "X-net data terms",
    "kxnet/kernel_step": "K-net kernel step",
    "kxnet/optimiser": "optimiser",
}
_STEP = "kxnet/step"
_MODULES = ((ProxNet, "kxnet/proximal"), (XNet, "kxnet/data_terms"), (KNet, "kxnet/kernel_step"))
_BACKWARD = "autograd::engine::evaluate_function: "


@contextmanager
def scoped(model: nn.Module) -> Iterator[None]:
    """Within this context every proxNet, K-net and X-net of ``model`` runs in a profiler scope."""
    handles = []
    for module in model.modules():
        name = next((scope for kind, scope in _MODULES if isinstance(module, kind)), None)
        if name is None:
            continue
        stack: list[record_function] = []

        def enter(_module, _args, name=name, stack=stack) -> None:
            stack.append(record_function(name).__enter__())

        def leave(_module, _args, _out, stack=stack) -> None:
            stack.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _scope(event: Any) -> str | None:
    while event is not None:
        if event.name in PARTS:
            return event.name
        event = event.cpu_parent
    return None


def _inside_backward(event: Any) -> bool:
    """Whether a backward node's evaluation holds ``event`` (it is counted with that node)."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(_BACKWARD):
            return True
        parent = parent.cpu_parent
    return False


def shares(events: Any) -> dict[str, float]:
    """Seconds per part (``PARTS``' values, ``rest`` and ``step``, the total) from a profile."""
    seconds = dict.fromkeys([*PARTS.values(), "rest"], 0.0)
    step = sum(e.cpu_time_total for e in events if e.name == _STEP) / 1e6
    created: dict[int, str | None] = {}
    for e in events:
        if e.sequence_nr >= 0 and not e.name.startswith(_BACKWARD):
            created.setdefault(e.sequence_nr, _scope(e))
    for e in events:
        if _inside_backward(e):
            continue
        if e.name.startswith(_BACKWARD):
            scope = created.get(e.sequence_nr)
            if scope is not None:
                seconds[PARTS[scope]] += e.cpu_time_total / 1e6
            continue
        scope = _scope(e)
        if scope is not None:
            seconds[PARTS[scope]] += e.self_cpu_time_total / 1e6
    seconds["rest"] = max(0.0, step - sum(seconds.values()))
    seconds["step"] = step
    return seconds


def profile_step(
    model: nn.Module, step: Callable[[], None], optimiser_step: Callable[[], None], repeats: int
) -> dict[str, float]:
    """Profile ``repeats`` calls of ``step`` (forward and backward) then ``optimiser_step``;
    returns the seconds per part of one step (see :func:`shares`)."""
    with scoped(model), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            with record_function(_STEP):
                step()
                with record_function("kxnet/optimiser"):
                    optimiser_step()
    return {part: value / repeats for part, value in shares(prof.events()).items()}
