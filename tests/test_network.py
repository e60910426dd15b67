from dataclasses import fields

import pytest
import torch
import torch.nn.functional as F

from kxnet import KXNet, description, kernels, physics
from kxnet.nn.proxnet import ProxNet


@pytest.mark.parametrize(
    "stages,millions", [(5, "1.72"), (10, "3.42"), (17, "5.82"), (19, "6.50"), (21, "7.18")]
)
def test_parameter_counts_match_table_3(stages, millions):
    model = KXNet(scale=2, stages=stages, setting="aniso")
    assert f"{model.paper_parameter_count() / 1e6:.2f}" == millions


def test_x4_parameter_count_matches_the_authors_model():
    assert (
        f"{KXNet(scale=4, stages=19, setting='iso').paper_parameter_count() / 1e6:.2f}" == "27.58"
    )


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("setting", ["iso", "aniso"])
def test_output_shapes_and_kernel_constraint(scale, setting):
    model = KXNet(scale=scale, stages=2, setting=setting).eval()
    p = description.kernel_size(setting, scale)
    lr = torch.rand(2, 3, 12, 16)
    with torch.no_grad():
        out = model(lr)
    assert len(out.images) == len(out.kernels) == 3
    for x, k in zip(out.images, out.kernels, strict=True):
        assert x.shape == (2, 3, 12 * scale, 16 * scale)
        assert k.shape == (2, p, p)
        assert (k >= 0).all()
        torch.testing.assert_close(k.sum((1, 2)), torch.ones(2))
    assert out.sr is out.images[-1] and out.kernel is out.kernels[-1]


def test_zero_stages_is_bicubic_and_gaussian():
    model = KXNet(scale=3, stages=0, setting="iso")
    lr = torch.rand(1, 3, 10, 10)
    out = model(lr)
    torch.testing.assert_close(
        out.sr, F.interpolate(lr, scale_factor=3, mode="bicubic", align_corners=False)
    )
    torch.testing.assert_close(
        out.kernel[0], kernels.isotropic_gaussian(torch.tensor([1.0]), 21)[0]
    )
    assert sum(p.numel() for p in model.stages.parameters()) == 0


def test_gradients_reach_every_parameter():
    model = KXNet(scale=2, stages=2, setting="aniso")
    lr = torch.rand(2, 3, 12, 12)
    out = model(lr)
    loss = sum(x.abs().mean() for x in out.images[1:]) + sum(
        k.abs().mean() for k in out.kernels[1:]
    )
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_eval_is_deterministic():
    model = KXNet(scale=2, stages=2, setting="aniso").eval()
    lr = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        a, b = model(lr), model(lr)
    torch.testing.assert_close(a.sr, b.sr, rtol=0, atol=0)
    torch.testing.assert_close(a.kernel, b.kernel, rtol=0, atol=0)


def test_stage_checkpointing_gives_the_same_gradients():
    torch.manual_seed(1)
    plain = KXNet(scale=2, stages=2, setting="aniso")
    ckpt = KXNet(scale=2, stages=2, setting="aniso", checkpoint_stages=True)
    ckpt.load_state_dict(plain.state_dict())
    lr = torch.rand(2, 3, 12, 12)
    for m in (plain, ckpt):
        m(lr).sr.square().mean().backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_true_kernel_replaces_the_estimate():
    model = KXNet(scale=2, stages=2, setting="aniso").eval()
    k = kernels.anisotropic_gaussian(
        torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([0.5]), 11
    )
    with torch.no_grad():
        out = model(torch.rand(1, 3, 12, 12), true_kernel=k)
    for est in out.kernels[1:]:
        torch.testing.assert_close(est, k)


def test_bad_construction_and_input():
    with pytest.raises(ValueError, match="scale"):
        KXNet(scale=5)
    with pytest.raises(ValueError, match="odd"):
        KXNet(scale=2, kernel_size=10)
    with pytest.raises(ValueError, match="stages"):
        KXNet(scale=2, stages=-1)
    with pytest.raises(ValueError, match="B×3×h×w"):
        KXNet(scale=2, stages=1)(torch.rand(1, 1, 8, 8))


def test_small_model_overfits_one_batch():
    """S = 2 on a fixed synthetic batch: the loss of Eq. 12 falls tenfold in 300 steps."""
    g = torch.Generator().manual_seed(0)
    hr = F.interpolate(torch.rand(2, 3, 8, 8, generator=g), size=32, mode="bilinear")
    k, _ = kernels.random_isotropic(2, 11, (0.8, 2.0), g)
    lr = physics.blur_downsample(hr, k, 2)
    model = KXNet(scale=2, stages=2, kernel_size=11, setting="iso")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 300)

    def loss_fn():
        out = model(lr)
        return sum(
            wt * ((x - hr).abs().mean() + (kk - k).abs().mean())
            for wt, x, kk in zip([0.1, 1.0], out.images[1:], out.kernels[1:], strict=True)
        )

    first = loss_fn().item()
    for _ in range(300):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        sched.step()
    assert loss_fn().item() < first / 10


def _twins(**options):
    torch.manual_seed(2)
    plain = KXNet(scale=2, stages=2, setting="aniso")
    other = KXNet(scale=2, stages=2, setting="aniso", **options)
    other.load_state_dict(plain.state_dict())
    return plain, other


def _grads(model, lr):
    out = model(lr)
    loss = out.sr.abs().mean() + sum(k.square().sum() for k in out.kernels[1:])
    return out, torch.autograd.grad(loss, list(model.parameters()))


def _assert_same_training(plain, other, lr, scale=1.0):
    """Same parameters, outputs and gradients up to rounding (tolerances times ``scale``)."""
    assert other.state_dict().keys() == plain.state_dict().keys()
    (out_a, grads_a), (out_b, grads_b) = _grads(plain, lr), _grads(other, lr)
    torch.testing.assert_close(out_b.sr, out_a.sr, rtol=1e-5 * scale, atol=1e-6 * scale)
    torch.testing.assert_close(out_b.kernel, out_a.kernel, rtol=1e-5 * scale, atol=1e-7 * scale)
    for name, a, b in zip(dict(plain.named_parameters()), grads_a, grads_b, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4 * scale, atol=1e-6 * scale, msg=name)


def test_channels_last_and_recomputed_data_terms_change_nothing_but_rounding():
    lr = torch.rand(2, 3, 12, 14)
    for options in ({"channels_last": True}, {"recompute_data_terms": True}):
        _assert_same_training(*_twins(**options), lr)


def test_inference_can_keep_only_the_final_stage():
    model = KXNet(scale=2, stages=3, setting="aniso").eval()
    lr = torch.rand(1, 3, 10, 12)
    with torch.inference_mode():
        every, final = model(lr), model(lr, keep_stages=False)
    assert len(final.images) == len(final.kernels) == 1
    torch.testing.assert_close(final.sr, every.sr, rtol=0, atol=0)
    torch.testing.assert_close(final.kernel, every.kernel, rtol=0, atol=0)


def test_bfloat16_autocast_runs_only_the_proximal_networks_in_bfloat16(monkeypatch):
    plain, fast = _twins(channels_last=True)
    lr = torch.rand(2, 3, 12, 12)
    seen = {"proxnet": set(), "physics": set()}
    for module in fast.modules():
        if isinstance(module, ProxNet):
            for conv in module.modules():
                if isinstance(conv, torch.nn.Conv2d):
                    conv.register_forward_hook(lambda m, i, o: seen["proxnet"].add(o.dtype))

    def recording(real):
        def recorded(*args, **kwargs):
            out = real(*args, **kwargs)
            seen["physics"] |= {a.dtype for a in (*args, out) if isinstance(a, torch.Tensor)}
            return out

        return recorded

    monkeypatch.setattr(physics, "adjusted_gradient", recording(physics.adjusted_gradient))
    for module in fast.modules():
        if isinstance(getattr(module, "operators", None), physics.Operators):
            ops = module.operators
            wrapped = {f.name: recording(getattr(ops, f.name)) for f in fields(ops)}
            monkeypatch.setattr(module, "operators", physics.Operators(**wrapped))
    with torch.no_grad():
        ref = plain(lr)
        seen["proxnet"].clear(), seen["physics"].clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fast(lr)
    assert seen == {"proxnet": {torch.bfloat16}, "physics": {torch.float32}}
    assert all(x.dtype == torch.float32 for x in out.images + out.kernels)
    torch.testing.assert_close(out.kernel.sum((1, 2)), torch.ones(2))
    assert (out.kernel >= 0).all()
    assert (out.sr - ref.sr).abs().mean() < 1e-2
    assert (out.kernel - ref.kernel).abs().max() < 0.1 * ref.kernel.max()


@pytest.mark.parametrize("channels_last", [False, True])
def test_under_autocast_proxnet_keeps_its_activations_in_bfloat16_only(channels_last):
    """The backward pass of proxNet stores low-precision activations only: a float32 input must
    not turn the residual sums (and what the backward keeps of them) into float32."""
    torch.manual_seed(0)
    prox = ProxNet(8, channels_last=channels_last)
    if channels_last:
        prox = prox.to(memory_format=torch.channels_last)
    x = torch.rand(2, 8, 6, 6, requires_grad=True)
    kept: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 4 and t.shape[-1] == 6:  # the 2×8×6×6 activations, not the 3×3 weights
            kept.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = prox(x)
    assert out.dtype == torch.float32, "the output sum takes the input's precision"
    inside = [t for t in kept if t.data_ptr() != out.data_ptr()]  # the output's ReLU keeps it
    assert len(inside) >= 9 and {t.dtype for t in inside} == {torch.bfloat16}
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.slow
def test_compiled_stages_match_eager():
    eager, compiled = _twins(compile=True, channels_last=True)
    _assert_same_training(eager, compiled, torch.rand(2, 3, 12, 12), scale=10.0)


def test_stage_kernels_from_a_blind_run_reproduce_it_exactly():
    model = KXNet(scale=2, stages=3, setting="aniso").eval()
    lr = torch.rand(2, 3, 14, 11)
    with torch.no_grad():
        blind = model(lr)
        fed = model(lr, stage_kernels=blind.kernels[1:])
    for a, b in zip(blind.images, fed.images, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(blind.kernels, fed.kernels, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_same_kernel_at_every_stage_is_the_true_kernel_run():
    model = KXNet(scale=3, stages=2, setting="aniso").eval()
    lr = torch.rand(1, 3, 10, 10)
    k = kernels.anisotropic_gaussian(
        torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([0.5]), 15
    )
    with torch.no_grad():
        a = model(lr, true_kernel=k)
        b = model(lr, stage_kernels=[k, k])
        blind = model(lr)
    torch.testing.assert_close(a.sr, b.sr, rtol=0, atol=0)
    assert (a.sr - blind.sr).abs().max() > 1e-4


def test_stage_kernels_are_checked():
    model = KXNet(scale=2, stages=2, setting="aniso")
    lr = torch.rand(1, 3, 8, 8)
    k = kernels.isotropic_gaussian(torch.tensor([1.0]), 11)
    with pytest.raises(ValueError, match="1 kernels for 2 stages"):
        model(lr, stage_kernels=[k])
    with pytest.raises(ValueError, match="not both"):
        model(lr, true_kernel=k, stage_kernels=[k, k])


@pytest.mark.slow
def test_compiled_stages_train_after_images_of_other_sizes_as_eager_does():
    """Validation images of several sizes, then training patches: Inductor's dynamic shapes
    could not lower this sequence (Setting 1, p = 21); each size compiles as a static graph."""
    torch.manual_seed(3)
    eager = KXNet(scale=2, stages=1)
    compiled = KXNet(scale=2, stages=1, compile=True)
    compiled.load_state_dict(eager.state_dict())
    eager.eval()
    compiled.eval()
    with torch.no_grad():
        for height, width in [(20, 24), (18, 22)]:
            lr = torch.rand(1, 3, height, width)
            torch.testing.assert_close(compiled(lr).sr, eager(lr).sr, atol=1e-5, rtol=1e-4)
    eager.train()
    compiled.train()
    _assert_same_training(eager, compiled, torch.rand(2, 3, 16, 16), scale=10.0)


@pytest.mark.slow
def test_compiled_stages_restore_images_of_changing_size_as_eager_does():
    """Tiles and photos come in many sizes: the compiled stages recompile for each, where the
    data terms' convolutions (and the kernel gradient's image-sized filter) must still lower."""
    eager, compiled = _twins(compile=True, channels_last=False)
    with torch.no_grad():
        for height, width in [(12, 12), (14, 18), (20, 16)]:
            lr = torch.rand(1, 3, height, width)
            ours, ref = compiled(lr), eager(lr)
            torch.testing.assert_close(ours.sr, ref.sr, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(ours.kernel, ref.kernel, atol=1e-6, rtol=1e-4)
