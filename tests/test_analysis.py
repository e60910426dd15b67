"""Stage metrics, kernel sweeps and the notebooks' model choice (kxnet.analysis, kxnet.notebook)."""

import math
import os

import pytest
import torch
import torch.nn.functional as F

from kxnet import analysis, description, kernels, metrics, physics
from kxnet.checkpoint import CheckpointError, save_weights
from kxnet.config import project_root
from kxnet.nn import KXNet, KXNetOutput
from kxnet.notebook import UntrainedModelWarning, env_int, env_str, newest_weights, notebook_model

SET5 = project_root() / "data" / "benchmarks" / "Set5"


def _quantised_lr(hr, kernel, scale):
    lr = physics.blur_downsample(hr[None], kernel[None], scale)
    return torch.round(lr.clamp(0, 1) * 255) / 255


@pytest.mark.parametrize(("setting", "scale"), [("iso", 4), ("aniso", 3)])
def test_gaussian_kernel_rebuilds_the_test_bank_from_its_parameters(setting, scale):
    bank, params = kernels.test_bank(setting, scale)
    for i, p in enumerate(params):
        built = analysis.gaussian_kernel(p, bank.shape[-1])
        torch.testing.assert_close(built, bank[i].float(), rtol=0, atol=1e-7)
        assert analysis.test_kernel(setting, scale, i, bank.shape[-1])[0] == p


def test_kernel_parameters_that_name_no_shape_and_indices_out_of_range_are_refused():
    with pytest.raises(ValueError, match="sigma_x"):
        analysis.gaussian_kernel({"sigma_x": 1.0}, 11)
    with pytest.raises(ValueError, match="0 … 7"):
        analysis.test_kernel("aniso", 2, 8, 11)


@pytest.mark.parametrize(("setting", "scale"), [("iso", 2), ("iso", 4), ("aniso", 4)])
def test_robustness_kernels_stay_in_the_training_range(setting, scale):
    sweep = analysis.robustness_kernels(setting, scale)
    low, high = description.train_sigma_range(setting, scale)
    assert len(sweep) == 8
    if setting == "iso":
        sigmas = [p["sigma"] for p in sweep]
        assert sigmas == sorted(sigmas) and sigmas[-1] == pytest.approx(high)
        assert sigmas[0] >= low
    else:
        widths = [w for p in sweep for w in (p["sigma_x"], p["sigma_y"])]
        assert low <= min(widths) and max(widths) <= high
        assert len({(p["sigma_x"], p["sigma_y"]) for p in sweep}) == 8
    labels = [analysis.kernel_label(p) for p in sweep]
    assert len(set(labels)) == 8


def test_load_hr_images_picks_names_crops_and_mod_crops():
    images = analysis.load_hr_images(SET5, 3, names=["head", "baby"], crop=50)
    assert [name for name, _ in images] == ["head", "baby"]
    assert all(hr.shape == (3, 48, 48) for _, hr in images)
    assert [n for n, _ in analysis.load_hr_images(SET5, 4, count=2, crop=16)] == ["baby", "bird"]
    with pytest.raises(FileNotFoundError, match="no image named lena"):
        analysis.load_hr_images(SET5, 2, names=["lena"])


def test_degrade_image_is_the_quantised_blur_downsample():
    ((_, hr),) = analysis.load_hr_images(SET5, 2, names=["bird"], crop=40)
    bank = torch.stack([analysis.gaussian_kernel({"sigma": s}, 11) for s in (0.8, 2.0)])
    lr = analysis.degrade_image(hr, bank, 2)
    assert lr.shape == (2, 3, 20, 20)
    for i in range(2):
        torch.testing.assert_close(lr[i : i + 1], _quantised_lr(hr, bank[i], 2), rtol=0, atol=1e-6)
    noisy = analysis.degrade_image(hr, bank, 2, noise=15, seeds=[1, 2])
    assert (noisy - lr).abs().max() > 10 / 255
    assert torch.equal(noisy, analysis.degrade_image(hr, bank, 2, noise=15, seeds=[1, 2]))
    with pytest.raises(ValueError, match="one seed per kernel"):
        analysis.degrade_image(hr, bank, 2, noise=15)


@pytest.fixture(scope="module")
def tiny_model():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return KXNet(2, 2, setting="aniso").eval()


def test_stage_metrics_measure_every_stage(tiny_model):
    ((_, hr),) = analysis.load_hr_images(SET5, 2, names=["butterfly"], crop=32)
    kernel = analysis.gaussian_kernel({"sigma_x": 2.0, "sigma_y": 1.0, "theta_deg": 45.0}, 11)
    lr = analysis.degrade_image(hr, kernel, 2)
    with torch.inference_mode():
        blind = tiny_model(lr)
        given = tiny_model(lr, true_kernel=kernel[None])
    rows = analysis.stage_metrics(blind, hr, kernel, 2)
    assert [r["stage"] for r in rows] == [0, 1, 2]
    bicubic = F.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False)
    assert rows[0]["psnr_y"] == pytest.approx(metrics.psnr(bicubic, hr[None], 2).item())
    assert rows[2]["ssim_y"] == pytest.approx(metrics.ssim(blind.sr, hr[None], 2).item())
    k0 = kernels.isotropic_gaussian(torch.tensor([1.0]), 11)[0]
    assert rows[0]["kernel_l1"] == pytest.approx((k0 - kernel).abs().mean().item(), rel=1e-5)
    assert all(r["kernel_l1"] > 0 and math.isfinite(r["kernel_psnr"]) for r in rows)
    exact = analysis.stage_metrics(given, hr, kernel, 2)
    assert [r["kernel_l1"] for r in exact[1:]] == [0.0, 0.0]
    assert [r["kernel_psnr"] for r in exact[1:]] == [None, None]
    table = analysis.stages_markdown(exact).splitlines()
    assert len(table) == 2 + 3 and table[-1].startswith("| 2 |") and "∞" in table[-1]
    with pytest.raises(ValueError, match="one image"):
        pair = KXNetOutput([blind.sr.expand(2, -1, -1, -1)], [blind.kernel.expand(2, -1, -1)])
        analysis.stage_metrics(pair, hr, kernel, 2)


def test_kernel_sweep_runs_every_method_on_every_image_and_kernel():
    torch.manual_seed(0)
    tiny_model = KXNet(2, 1, setting="aniso").eval()
    images = analysis.load_hr_images(SET5, 2, count=2, crop=32)
    sweep = [{"sigma": 0.8}, {"sigma_x": 1.0, "sigma_y": 3.0, "theta_deg": 45.0}, {"sigma": 2.0}]
    methods = [
        analysis.Method("Bicubic", KXNet(2, 0, kernel_size=11, setting="aniso")),
        analysis.Method("KXNet", tiny_model),
        analysis.Method("KXNet (GT kernel)", tiny_model, true_kernel=True),
    ]
    done = []
    records = analysis.kernel_sweep(
        methods, images, sweep, 2, 11, batch_size=2, on_image=done.append
    )
    assert done == ["baby", "bird"]
    assert len(records) == 3 * 2 * 3
    by_key = {(r["method"], r["image"], r["kernel_index"]): r for r in records}
    _, hr = images[1]
    kernel = analysis.gaussian_kernel(sweep[1], 11)
    lr = _quantised_lr(hr, kernel, 2)
    with torch.inference_mode():
        bicubic = F.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False)
        given = tiny_model(lr, true_kernel=kernel[None]).sr
    assert by_key[("Bicubic", "bird", 1)]["psnr_y"] == pytest.approx(
        metrics.psnr(bicubic, hr[None], 2).item()
    )
    assert by_key[("KXNet (GT kernel)", "bird", 1)]["psnr_y"] == pytest.approx(
        metrics.psnr(given, hr[None], 2).item(), abs=1e-3
    )
    assert by_key[("KXNet", "bird", 1)]["label"] == "σ=(1, 3) θ=45°"

    summary = analysis.sweep_summary(records)
    assert [row["label"] for row in summary] == ["σ=0.8", "σ=(1, 3) θ=45°", "σ=2"]
    mean = sum(by_key[("KXNet", n, 2)]["psnr_y"] for n in ("baby", "bird")) / 2
    assert summary[2]["psnr_y"]["KXNet"] == pytest.approx(mean)
    assert summary[0]["images"] == 2
    table = analysis.sweep_markdown(summary).splitlines()
    assert table[0] == "| Kernel | Bicubic | KXNet | KXNet (GT kernel) |"
    assert len(table) == 2 + 3 + 2 and table[-2].startswith("| mean |")
    column = [row["psnr_y"]["Bicubic"] for row in summary]
    assert table[-1].split("|")[2].strip() == f"{max(column) - min(column):.2f}"


def test_kernel_sweep_refuses_methods_that_cannot_run_it(tiny_model):
    images = analysis.load_hr_images(SET5, 2, count=1, crop=16)
    bicubic = KXNet(2, 0, kernel_size=11, setting="aniso")
    with pytest.raises(ValueError, match="needs stages"):
        analysis.kernel_sweep([analysis.Method("b", bicubic, True)], images, [{"sigma": 1}], 2, 11)
    with pytest.raises(ValueError, match="13×13"):
        analysis.kernel_sweep(
            [analysis.Method("k", tiny_model, True)], images, [{"sigma": 1}], 2, 13
        )
    with pytest.raises(ValueError, match="x3"):
        analysis.kernel_sweep([analysis.Method("b", bicubic)], images, [{"sigma": 1}], 3, 11)


def test_env_knobs(monkeypatch):
    monkeypatch.setenv("KXNET_TEST_KNOB", " 7 ")
    assert env_int("KXNET_TEST_KNOB", 3) == 7
    monkeypatch.setenv("KXNET_TEST_KNOB", "")
    assert env_int("KXNET_TEST_KNOB", 3) == 3 and env_str("KXNET_TEST_KNOB", "Set14") == "Set14"
    monkeypatch.setenv("KXNET_TEST_KNOB", "seven")
    with pytest.raises(ValueError, match="KXNET_TEST_KNOB='seven' is not an integer"):
        env_int("KXNET_TEST_KNOB", 3)
    monkeypatch.setenv("KXNET_TEST_KNOB", "1")
    with pytest.raises(ValueError, match="below 2"):
        env_int("KXNET_TEST_KNOB", 3, minimum=2)


def test_notebook_model_prefers_the_named_file_then_the_newest_quick_run(tmp_path, monkeypatch):
    monkeypatch.delenv("KXNET_CHECKPOINT", raising=False)
    runs = tmp_path / "outputs" / "quick" / "runs"
    old = save_weights(KXNet(2, 1, setting="iso"), runs / "2024-01-01_00-00-00" / "weights.pt")
    new = save_weights(KXNet(3, 2, setting="iso"), runs / "2023-12-31_00-00-00" / "weights.pt")
    os.utime(old, ns=(1_000_000_000, 1_000_000_000))
    assert newest_weights(tmp_path) == new
    assert newest_weights(tmp_path / "elsewhere") is None

    model, source = notebook_model(root=tmp_path)
    assert (model.scale, model.num_stages, source.split(":")[0]) == (3, 2, str(new))
    monkeypatch.setenv("KXNET_CHECKPOINT", str(old))
    model, source = notebook_model(root=tmp_path)
    assert (model.scale, model.num_stages) == (2, 1) and str(old) in source
    with pytest.raises(CheckpointError, match="setting"):
        notebook_model(root=tmp_path, setting="aniso")
    monkeypatch.setenv("KXNET_CHECKPOINT", str(tmp_path / "missing.pt"))
    with pytest.raises(CheckpointError, match="missing.pt"):
        notebook_model(root=tmp_path)


def test_notebook_model_falls_back_to_a_labelled_untrained_network(tmp_path, monkeypatch):
    monkeypatch.delenv("KXNET_CHECKPOINT", raising=False)
    with pytest.warns(UntrainedModelWarning, match="no outputs/quick/runs"):
        model, source = notebook_model(root=tmp_path, scale=2, setting="iso", stages=3)
    assert (model.scale, model.setting, model.num_stages) == (2, "iso", 3)
    assert source.startswith("UNTRAINED")
    with pytest.warns(UntrainedModelWarning, match="x4, setting aniso, 2 stages"):
        default, _ = notebook_model(root=tmp_path)
    assert (default.scale, default.setting, default.num_stages) == (4, "aniso", 2)
    save_weights(KXNet(2, 1, setting="iso"), tmp_path / "outputs/quick/runs/a/weights.pt")
    monkeypatch.setenv("KXNET_CHECKPOINT", "untrained")
    with pytest.warns(UntrainedModelWarning, match="KXNET_CHECKPOINT=untrained"):
        again, _ = notebook_model(root=tmp_path, scale=2, setting="iso", stages=3)
    assert all(
        torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters(), strict=True)
    )
