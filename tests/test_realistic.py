import kornia
import pytest
import torch
from kornia.augmentation import RandomGaussianNoise, RandomJPEG, RandomMotionBlur
from omegaconf import OmegaConf

from kxnet import physics
from kxnet.config import project_root
from kxnet.data.realistic import OPERATORS, realistic_degradation
from kxnet.data.synthesis import paper_degradation, step_generator

ALWAYS = {
    "motion_blur": {"p": 1.0, "kernel_size": [3, 7]},
    "poisson_noise": {"p": 1.0, "peak": [50, 500]},
    "gaussian_noise": {"p": 1.0, "sigma": [5, 20]},
    "jpeg": {"p": 1.0, "quality": [20, 60]},
}
HALF = {name: options | {"p": 0.5} for name, options in ALWAYS.items()}


def _hr(batch, size, seed=0):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _same(a, b):
    """Equal batches, NaN (an operator not applied) equal to NaN."""
    assert set(a) == set(b)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, equal_nan=True, msg=key)


def _shipped():
    """The shipped data/degradation=realistic preset, for Setting 1 x2."""
    preset = OmegaConf.load(project_root() / "conf/train/data/degradation/realistic.yaml")
    return OmegaConf.to_container(preset, resolve=False)


def test_realistic_is_built_on_kornias_augmentations():
    degradation = realistic_degradation("iso", 2, first_round=ALWAYS)
    kinds = [type(m).__mro__ for m in degradation.children()]
    for base in (RandomMotionBlur, RandomGaussianNoise, RandomJPEG):
        assert sum(base in mro for mro in kinds) == 1
    poisson = degradation[2]
    assert isinstance(poisson, kornia.augmentation.IntensityAugmentationBase2D)


def test_every_operator_applied_gives_kornias_own_result_for_the_drawn_parameters():
    hr = _hr(4, 32)
    degradation = realistic_degradation("aniso", 2, first_round=ALWAYS, quantize=False)
    out = degradation(hr, step_generator(0, 0, 0, "cpu"))
    (blur, motion, poisson, noise, jpeg, _) = (item.data for item in degradation._params)
    y = physics.blur_downsample(hr, out["kernel"], 2)
    size = int(out["motion_size"][0])
    assert (out["motion_size"] == size).all() and size in (3, 5, 7)
    y = kornia.filters.motion_blur(
        y, size, out["motion_angle"], out["motion_direction"], border_type="reflect"
    )
    y = y + poisson["shot_noise"] * (y.clamp(min=0) / out["poisson_peak"].view(-1, 1, 1, 1)).sqrt()
    y = y + noise["gaussian_noise"]
    torch.testing.assert_close(
        noise["gaussian_noise"].std((1, 2, 3)) * 255, out["noise"], rtol=0.1, atol=0
    )
    y = kornia.enhance.jpeg_codec_differentiable(y.clamp(0, 1), out["jpeg_quality"])
    torch.testing.assert_close(out["lr"], y.clamp(0, 1), rtol=0, atol=1e-6)
    assert 20 <= out["jpeg_quality"].min() and out["jpeg_quality"].max() <= 60
    assert 50 <= out["poisson_peak"].min() and out["poisson_peak"].max() <= 500


def test_poisson_noise_variance_grows_with_the_signal():
    degradation = realistic_degradation(
        "iso", 2, first_round={"poisson_noise": {"p": 1.0, "peak": [200, 200]}}, quantize=False
    )
    for level in (0.1, 0.8):
        hr = torch.full((8, 3, 64, 64), level)
        lr = degradation(hr, step_generator(0, 0, 0, "cpu"))["lr"]
        assert abs(float((lr - level).std()) - (level / 200) ** 0.5) < 0.05 * (level / 200) ** 0.5


def test_operators_apply_to_each_sample_with_their_probability():
    hr = _hr(400, 16)
    degradation = realistic_degradation("iso", 2, first_round=HALF, quantize=False)
    out = degradation(hr, step_generator(1, 0, 0, "cpu"))
    for key in ("motion_angle", "poisson_peak", "jpeg_quality"):
        applied = out[key].isfinite().float().mean()
        assert 0.4 < applied < 0.6, key
    noisy = out["noise"] > 0
    assert 0.4 < noisy.float().mean() < 0.6
    # A sample no operator touched is the blurred, downsampled HR crop alone.
    untouched = ~noisy & out["motion_angle"].isnan() & out["poisson_peak"].isnan()
    untouched &= out["jpeg_quality"].isnan()
    blurred = physics.blur_downsample(hr, out["kernel"], 2).clamp(0, 1)
    assert untouched.sum() > 5
    assert torch.equal(out["lr"][untouched], blurred[untouched])


def test_realistic_repeats_for_a_seed_and_draws_anew_for_another_step():
    degradation = realistic_degradation("aniso", 2, first_round=HALF, second_round=HALF)
    hr = _hr(6, 32)
    a = degradation(hr, step_generator(5, 0, 10, "cpu"))
    _same(a, degradation(hr, step_generator(5, 0, 10, "cpu")))
    _same(a, degradation(hr, params=degradation._params))
    b = degradation(hr, step_generator(5, 0, 11, "cpu"))
    assert not torch.equal(a["lr"], b["lr"])
    assert {"jpeg_quality", "jpeg_quality_2", "noise_2", "motion_angle_2"} <= set(a)


def test_realistic_leaves_the_global_generator_alone():
    state = torch.get_rng_state()
    realistic_degradation("iso", 2, first_round=HALF, second_round=HALF)(
        _hr(4, 32), step_generator(0, 0, 0, "cpu")
    )
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("name", list(OPERATORS))
def test_each_operator_is_switched_off_by_config(name):
    for off in (None, ALWAYS[name] | {"p": 0}):
        degradation = realistic_degradation("iso", 2, first_round=ALWAYS | {name: off})
        assert not any(isinstance(m, OPERATORS[name]) for m in degradation.children())
        assert len(degradation) == 1 + len(OPERATORS) - 1 + 1
    out = realistic_degradation("iso", 2, first_round={name: ALWAYS[name]})(
        _hr(2, 32), step_generator(0, 0, 0, "cpu")
    )
    keys = {"motion_blur": "motion_angle", "poisson_noise": "poisson_peak", "jpeg": "jpeg_quality"}
    assert name == "gaussian_noise" or keys[name] in out


def test_with_every_operator_off_it_is_the_papers_setting_1_bit_for_bit():
    hr = _hr(3, 64)
    off = {name: None for name in OPERATORS}
    realistic = realistic_degradation("iso", 4, first_round=off, second_round=None)
    _same(
        realistic(hr, step_generator(2, 0, 9, "cpu")),
        paper_degradation("iso", 4)(hr, step_generator(2, 0, 9, "cpu")),
    )


def test_the_shipped_preset_has_one_round_on_a_second_to_turn_on_and_refuses_unknowns():
    preset = _shipped()
    rounds = {key: preset[key] for key in ("first_round", "second_round")}
    degradation = realistic_degradation("iso", 2, **rounds)
    assert len(degradation) == 1 + len(OPERATORS) + 1
    rounds["second_round"]["jpeg"]["p"] = 0.5
    out = realistic_degradation("iso", 2, **rounds)(_hr(8, 32), step_generator(0, 0, 0, "cpu"))
    assert {"jpeg_quality", "motion_angle", "poisson_peak", "noise", "jpeg_quality_2"} <= set(out)
    assert "noise_2" not in out
    assert out["lr"].shape == (8, 3, 16, 16)
    assert torch.equal(out["lr"] * 255, (out["lr"] * 255).round())
    with pytest.raises(ValueError, match="unknown degradation operators"):
        realistic_degradation("iso", 2, first_round={"blur": {"p": 1}})
    with pytest.raises(ValueError, match="odd"):
        realistic_degradation("iso", 2, first_round={"motion_blur": {"kernel_size": [4, 6]}})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_realistic_runs_on_the_gpu_the_batch_lives_on():
    hr = _hr(4, 32).cuda()
    degradation = realistic_degradation("aniso", 2, first_round=HALF, second_round=HALF)
    out = degradation(hr, step_generator(0, 0, 0, hr.device))
    assert all(value.device == hr.device for value in out.values())
    _same(out, degradation(hr, step_generator(0, 0, 0, hr.device)))


def test_realistic_runs_where_the_batch_lives():
    hr = _hr(4, 32).to(torch.float64)
    degradation = realistic_degradation("aniso", 2, first_round=HALF, second_round=HALF)
    out = degradation(hr, step_generator(0, 0, 0, hr.device))
    assert all(v.device == hr.device and v.dtype == torch.float64 for v in out.values())
