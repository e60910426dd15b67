"""Eq. 12's weights: StageLoss's defaults are the paper's, and the weights of the shipped model
config (or an override of them) are those of the module that trains."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from kxnet import KXNetOutput
from kxnet.loss import StageLoss
from kxnet.train.module import KXNetModule
from trainhelp import compose_train

PAPER = {
    "kernel_stage_weight": 0.1,
    "kernel_final_weight": 1.0,
    "image_stage_weight": 0.1,
    "image_final_weight": 1.0,
}


def _errors(stages: int = 3) -> tuple[KXNetOutput, torch.Tensor, torch.Tensor]:
    """An output whose stage t has image error t² and kernel error 10·t² (stage 0 carries no
    loss; squares, so that no two weightings of the stages give the same total), and its
    targets."""
    hr, kernel = torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 3)
    out = KXNetOutput(
        images=[hr + t * t for t in range(stages + 1)],
        kernels=[kernel + 10 * t * t for t in range(stages + 1)],
    )
    return out, hr, kernel


def _eq_12(w: dict[str, float], stages: int = 3) -> float:
    """Σ_t α_t·10t² + β_t·t², with α_t, β_t the stage weights for t < T and the final ones at
    T."""
    earlier = sum(t * t for t in range(1, stages))
    return (
        w["kernel_stage_weight"] * 10 * earlier
        + w["kernel_final_weight"] * 10 * stages**2
        + w["image_stage_weight"] * earlier
        + w["image_final_weight"] * stages**2
    )


def test_the_default_weights_are_the_papers():
    assert StageLoss()(*_errors()).total.item() == pytest.approx(_eq_12(PAPER))


@pytest.mark.parametrize(
    "weights",
    [
        PAPER,
        {
            "kernel_stage_weight": 0.3,
            "kernel_final_weight": 2.0,
            "image_stage_weight": 0.7,
            "image_final_weight": 5.0,
        },
    ],
    ids=["shipped", "overridden"],
)
def test_the_configured_weights_reach_the_module_that_trains(tmp_path, weights):
    """The shipped model config, as it is (the paper's weights) or with model.loss overridden:
    the module built from it computes Eq. 12 with these weights."""
    overrides = [] if weights is PAPER else [f"model.loss.{k}={v}" for k, v in weights.items()]
    cfg = compose_train(tmp_path, "model.net.stages=1", *overrides)
    module = instantiate(cfg.model, _recursive_=False)
    assert isinstance(module, KXNetModule)
    assert module.loss(*_errors()).total.item() == pytest.approx(_eq_12(weights))


def test_weights_must_not_be_negative():
    with pytest.raises(ValueError, match="loss weights must be >= 0"):
        StageLoss(image_stage_weight=-0.1)


def test_one_stage_is_weighted_as_the_last():
    """T = 1: the one stage is the last, so α_T and β_T weigh it."""
    value = StageLoss(0.1, 1.0, 0.2, 2.0)(*_errors(stages=1))
    assert value.total.item() == pytest.approx(1.0 * 10 + 2.0 * 1)


def test_an_output_of_unequal_stage_lists_is_refused():
    out, hr, kernel = _errors(stages=3)
    with pytest.raises(ValueError):
        StageLoss()(KXNetOutput(images=out.images, kernels=out.kernels[:-1]), hr, kernel)


def test_a_network_without_stages_is_refused_in_one_line():
    out = KXNetOutput(images=[torch.zeros(1, 3, 4, 4)], kernels=[torch.zeros(1, 3, 3)])
    message = r"^the loss needs a network with at least one stage \(model\.net\.stages >= 1\)$"
    with pytest.raises(ValueError, match=message):
        StageLoss()(out, torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 3))


def test_a_zero_weight_leaves_its_term_out():
    """Weights may be 0: StageLoss(0, 0, 0.1, 1) is the image loss alone."""
    out, hr, kernel = _errors()
    image_only = StageLoss(0.0, 0.0, 0.1, 1.0)(out, hr, kernel).total.item()
    assert image_only == pytest.approx(0.1 * (1 + 4) + 9)
