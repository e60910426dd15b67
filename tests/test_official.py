import pickle
from pathlib import Path

import pytest
import torch

import kxnet
from kxnet.official import convert_official_state_dict

FIXTURE = Path(__file__).parent / "fixtures" / "official_x2_s2_p11.pt"


@pytest.fixture(scope="module")
def official():
    return torch.load(FIXTURE, weights_only=True)


def check_outputs(model, official):
    """Every stage's image and kernel equal the authors' to float32 rounding (the README's
    promise): images (values up to 1.3) within 1e-6, kernels within 1e-7; a stage's γ off by
    1e-4 moves the kernels by 4e-7."""
    with torch.no_grad():
        out = model(official["lr"])
    assert len(out.images) == len(official["sr"]) + 1
    for ours, theirs in zip(out.images[1:], official["sr"], strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    for ours, theirs in zip(out.kernels[1:], official["kernels"], strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-7)


def test_loaded_model_reproduces_the_authors_network(official):
    model = kxnet.load_official(official["state_dict"])
    assert (model.scale, model.num_stages, model.kernel_size) == (2, 2, 11)
    assert model.setting == "aniso", "p = 11 is Setting 2's x2 kernel"
    check_outputs(model, official)


def test_load_from_a_file_with_module_prefix(official, tmp_path):
    path = tmp_path / "KXNet_x2.pth"
    torch.save({"module." + k: v for k, v in official["state_dict"].items()}, path)
    model = kxnet.load_official(path, scale=2, stages=2, kernel_size=11, setting="aniso")
    check_outputs(model, official)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"scale": 4}, "scale=2, but scale=4"),
        ({"stages": 19}, "stages=2, but stages=19"),
        ({"kernel_size": 21}, "kernel_size=11, but kernel_size=21"),
    ],
)
def test_refuses_a_checkpoint_that_does_not_fit(official, kwargs, message):
    with pytest.raises(ValueError, match=message):
        kxnet.load_official(official["state_dict"], **kwargs)


def test_refuses_something_else():
    with pytest.raises(ValueError, match="unexpected key 'conv1.weight'"):
        kxnet.load_official({"conv1.weight": torch.zeros(1)})
    message = r"^the official checkpoint has no 'kernel_map': not a KXNet state dict$"
    with pytest.raises(ValueError, match=message):
        kxnet.load_official({})


@pytest.mark.parametrize("wrappers", [["state_dict"], ["params"], ["model"], ["params", "model"]])
def test_the_wrappers_of_a_training_checkpoint_are_taken_off(official, tmp_path, wrappers):
    """The authors' training code saves the weights under "state_dict", "params" or "model"
    (beside other entries), possibly nested."""
    saved = official["state_dict"]
    for key in reversed(wrappers):
        saved = {key: saved, "iteration": torch.tensor(5)}
    path = tmp_path / "wrapped.pth"
    torch.save(saved, path)
    check_outputs(kxnet.load_official(path), official)


def test_refuses_what_is_not_a_state_dict():
    message = r"^an official checkpoint must be a state dict \(a mapping of tensors\)$"
    with pytest.raises(ValueError, match=message):
        kxnet.load_official([torch.zeros(1)])


def test_refuses_a_kernel_map_without_stages(official):
    message = r"^the official checkpoint has no stages: no 'K_stage\.\*' or 'X_stage\.\*' keys$"
    with pytest.raises(ValueError, match=message):
        kxnet.load_official({"kernel_map": official["state_dict"]["kernel_map"]})


def test_refuses_an_x_net_of_no_scale(official):
    state = dict(official["state_dict"])
    state["X_stage.0.X_ProNet.resx5.0.weight"] = torch.zeros(60, 60, 3, 3)
    with pytest.raises(
        ValueError, match=r"^X-net with 60 channels matches no scale \(59/89/131\)$"
    ):
        kxnet.load_official(state)


def test_refuses_a_checkpoint_missing_a_weight(official):
    state = {
        k: v for k, v in official["state_dict"].items() if k != "X_stage.1.X_ProNet.resx2.2.bias"
    }
    with pytest.raises(
        RuntimeError, match=r"Missing key\(s\).*stages\.1\.xnet\.prox_net\.blocks\.1\.2\.bias"
    ):
        kxnet.load_official(state)


class _Payload:
    """Unpickling it would create ``marker`` (code run by a checkpoint file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_file_that_runs_code_when_unpickled_is_refused_unrun(official, tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "KXNet_x2.pth"
    torch.save({"state_dict": official["state_dict"], "hook": _Payload(marker)}, path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        kxnet.load_official(path)
    assert not marker.exists()


def test_conversion_covers_every_parameter(official):
    converted = convert_official_state_dict(official["state_dict"])
    model = kxnet.KXNet(scale=2, stages=2, kernel_size=11, setting="aniso")
    assert set(converted) == set(model.state_dict())


def _as_official(model: kxnet.KXNet, template: dict) -> dict:
    """``model``'s weights under the authors' keys (those of ``template``, an official state
    dict of the same stage count)."""
    ours = model.state_dict()
    official = {}
    for key, value in template.items():
        if key == "gamma_stage":
            gammas = [ours[f"stages.{t}.knet.gamma"] for t in range(model.num_stages)]
            official[key] = torch.stack(gammas).reshape(value.shape)
        elif key not in ("kernel_map0", "eta_stage"):
            (converted,) = convert_official_state_dict({key: value})
            official[key] = ours[converted]
    return official


@pytest.mark.parametrize(
    "scale,kernel_size,setting", [(3, 15, "aniso"), (4, 21, "iso"), (2, 11, "aniso")]
)
def test_scale_stages_kernel_and_setting_are_read_from_the_checkpoint(
    official, scale, kernel_size, setting
):
    """Checkpoints of every scale: X-net's channels give the scale, the kernel map p (Setting 2
    for p = 11 or 15, else Setting 1), and the weights arrive where they were."""
    torch.manual_seed(scale)
    theirs = kxnet.KXNet(scale, 2, kernel_size=kernel_size, setting=setting)
    model = kxnet.load_official(_as_official(theirs, official["state_dict"]))
    assert (model.scale, model.num_stages, model.kernel_size) == (scale, 2, kernel_size)
    assert model.setting == setting
    for key, value in theirs.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
