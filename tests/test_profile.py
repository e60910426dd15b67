"""Where the training step's time goes (kxnet.bench.profile)."""

from __future__ import annotations

import pytest
import torch

from kxnet import KXNet
from kxnet.bench.profile import PARTS, profile_step
from kxnet.loss import StageLoss


def _step(**options):
    model = KXNet(scale=2, stages=2, setting="iso", **options).train()
    lr, hr = torch.rand(1, 3, 12, 12), torch.rand(1, 3, 24, 24)
    kernel = torch.softmax(torch.rand(1, 21 * 21), 1).view(1, 21, 21)
    optimiser = torch.optim.Adam(model.parameters(), fused=True)

    def forward_backward() -> None:
        StageLoss()(model(lr), hr, kernel).total.backward()

    def optimiser_step() -> None:
        optimiser.step()
        optimiser.zero_grad()

    return model, forward_backward, optimiser_step


@pytest.mark.parametrize("options", [{}, {"recompute_data_terms": True}])
def test_every_part_is_measured_and_the_parts_make_the_step(options):
    model, forward_backward, optimiser_step = _step(**options)
    seconds = profile_step(model, forward_backward, optimiser_step, repeats=1)
    assert set(seconds) == {*PARTS.values(), "rest", "step"}
    assert all(seconds[part] > 0 for part in PARTS.values())
    assert sum(v for k, v in seconds.items() if k != "step") == pytest.approx(seconds["step"])
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
