import pytest
import torch
import torch.nn.functional as F

from kxnet import kernels, physics


def _batch(b, c, h, s, p, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h * s, h * s, generator=g, dtype=dtype)
    k = torch.rand(b, p, p, generator=g, dtype=dtype)
    return x, k / k.sum((1, 2), keepdim=True)


def _full_blur(x, k, pad_mode):
    """Reference: blur at full resolution, one sample at a time (correlation)."""
    p = k.shape[-1]
    xp = F.pad(x, [p // 2] * 4, mode=pad_mode)
    return torch.cat(
        [
            F.conv2d(xp[i : i + 1].transpose(0, 1), k[i][None, None]).transpose(0, 1)
            for i in range(len(x))
        ]
    )


@pytest.mark.parametrize("s", [2, 3, 4])
@pytest.mark.parametrize("p", [11, 15, 21])
def test_blur_downsample_is_full_blur_then_upper_left_pixels(s, p):
    x, k = _batch(2, 3, 12, s, p)
    y = physics.blur_downsample(x, k, s)
    assert y.shape == (2, 3, 12, 12)
    ref = _full_blur(x, k, "reflect")[..., ::s, ::s]
    torch.testing.assert_close(y, ref)


def test_blur_downsample_is_correlation_not_convolution():
    x, _ = _batch(1, 1, 16, 2, 5)
    k = torch.zeros(1, 5, 5, dtype=torch.float64)
    k[0, 2, 3] = 1.0  # picks the pixel one to the right
    y = physics.blur_downsample(x, k, 1)
    torch.testing.assert_close(y[0, 0, 3:-3, 3:-4], x[0, 0, 3:-3, 4:-3])


@pytest.mark.parametrize("s", [2, 3, 4])
@pytest.mark.parametrize("p", [11, 15, 21])
def test_kernel_gradient_matches_autograd(s, p):
    x, k = _batch(2, 3, 12, s, p)
    y = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    k.requires_grad_(True)
    r = _full_blur(x, k, "reflect")[..., ::s, ::s] - y
    loss = 0.5 * r.pow(2).sum(dim=(1, 2, 3)) / (3 * 12 * 12)
    (auto,) = torch.autograd.grad(loss.sum(), k)
    ours = physics.kernel_gradient(x, r.detach(), p, s)
    assert ours.shape == (2, p, p)
    torch.testing.assert_close(ours, auto)


def _zero_padded_a(x, k, s):
    return _full_blur(x, k, "constant")[..., ::s, ::s]


@pytest.mark.parametrize("s", [2, 3, 4])
@pytest.mark.parametrize("p", [11, 15, 21])
def test_transpose_is_adjoint_of_zero_padded_operator(s, p):
    x, k = _batch(2, 3, 12, s, p)
    e = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    x.requires_grad_(True)
    (vjp,) = torch.autograd.grad((_zero_padded_a(x, k, s) * e).sum(), x)
    ours = physics.transpose_upsample(e, k, s)
    assert ours.shape == x.shape
    torch.testing.assert_close(ours, vjp)
    # <A x, e> = <x, Aᵀ e> for the zero-padded operator
    lhs = (_zero_padded_a(x.detach(), k, s) * e).sum()
    torch.testing.assert_close(lhs, (x.detach() * ours).sum())


@pytest.mark.parametrize("s", [2, 4])
def test_reflect_padding_changes_the_adjoint_only_near_the_border(s):
    p = 11
    x, k = _batch(1, 3, 16, s, p)
    e = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    x.requires_grad_(True)
    (reflect_vjp,) = torch.autograd.grad((physics.blur_downsample(x, k, s) * e).sum(), x)
    diff = (reflect_vjp - physics.transpose_upsample(e, k, s)).abs()
    assert diff[..., p:-p, p:-p].max() < 1e-12
    assert diff.max() > 1e-6  # the border does differ


@pytest.mark.parametrize("s", [2, 3, 4])
@pytest.mark.parametrize("size", [(12, 12), (18, 30)])
def test_transpose_ones_matches_transposed_convolution_of_ones(s, size):
    p = 11
    k = _batch(2, 1, 4, 1, p)[1]
    h, w = size[0] // s * s, size[1] // s * s
    ones = torch.ones(2, 1, h // s, w // s, dtype=torch.float64)
    ref = physics.transpose_upsample(ones, k, s)
    ours = physics.transpose_ones(k, (h, w), s)
    assert ours.shape == (2, 1, h, w)
    torch.testing.assert_close(ours, ref)


def test_adjuster_divides_by_coverage():
    k = kernels.isotropic_gaussian(torch.tensor([1.2], dtype=torch.float64), 11)
    e = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    g = physics.transpose_upsample(e, k, 2)
    ones_t = physics.transpose_ones(k, (16, 16), 2)
    torch.testing.assert_close(physics.adjusted_gradient(g, ones_t) * (ones_t + 1e-10), g)


@pytest.mark.parametrize("s,size", [(2, (8, 8)), (3, (9, 12))])
def test_gradcheck_float64(s, size):
    """The operators' own backward passes, and theirs in turn (K-net's gradient is trained)."""
    g = torch.Generator().manual_seed(s)
    p = 5
    x = torch.rand(2, 2, *size, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.rand(2, p, p, generator=g, dtype=torch.float64, requires_grad=True)
    r = torch.randn(2, 2, size[0] // s, size[1] // s, generator=g, dtype=torch.float64)
    r.requires_grad_(True)
    for op, inputs in [
        (lambda a, b: physics.blur_downsample(a, b, s), (x, k)),
        (lambda a, b: physics.transpose_upsample(a, b, s), (r, k)),
        (lambda a, b: physics.kernel_gradient(a, b, p, s), (x, r)),
    ]:
        assert torch.autograd.gradcheck(op, inputs)
        assert torch.autograd.gradgradcheck(op, inputs)
    assert torch.autograd.gradcheck(lambda b: physics.transpose_ones(b, size, s), (k,))


def test_non_contiguous_and_channels_last_inputs():
    s, p = 2, 11
    x, k = _batch(2, 3, 12, s, p)
    y = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    ref_a = physics.blur_downsample(x, k, s)
    ref_t = physics.transpose_upsample(y, k, s)
    ref_g = physics.kernel_gradient(x, y, p, s)
    x_cl, y_cl = x.to(memory_format=torch.channels_last), y.to(memory_format=torch.channels_last)
    x_nc = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    k_nc = k.transpose(-1, -2).contiguous().transpose(-1, -2)
    y_nc = torch.rand(2, 3, 24, 12, dtype=torch.float64)[:, :, ::2]
    y_nc.copy_(y)
    assert not x_nc.is_contiguous() and not y_nc.is_contiguous() and not k_nc.is_contiguous()
    for xx, yy, kk in [(x_cl, y_cl, k), (x_nc, y_nc, k_nc)]:
        torch.testing.assert_close(physics.blur_downsample(xx, kk, s), ref_a)
        torch.testing.assert_close(physics.transpose_upsample(yy, kk, s), ref_t)
        torch.testing.assert_close(physics.kernel_gradient(xx, yy, p, s), ref_g)


def test_clear_errors():
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="odd"):
        physics.blur_downsample(x, torch.rand(1, 4, 4), 2)
    with pytest.raises(ValueError, match="too large"):
        physics.blur_downsample(x, torch.rand(1, 33, 33), 2)
    with pytest.raises(ValueError, match="not divisible by scale 3"):
        physics.blur_downsample(x, torch.rand(1, 5, 5), 3)
    with pytest.raises(ValueError, match="kernels for a batch"):
        physics.blur_downsample(x, torch.rand(2, 5, 5), 2)
    with pytest.raises(ValueError, match="odd"):
        physics.transpose_upsample(torch.rand(1, 3, 8, 8), torch.rand(1, 6, 6), 2)
    with pytest.raises(ValueError, match="residual shape"):
        physics.kernel_gradient(x, torch.rand(1, 3, 7, 8), 5, 2)


def test_float32_matches_float64():
    s, p = 3, 15
    x, k = _batch(2, 3, 10, s, p)
    y = physics.blur_downsample(x, k, s)
    torch.testing.assert_close(physics.blur_downsample(x.float(), k.float(), s), y.float())


def test_transpose_upsample_names_a_residual_of_the_wrong_rank():
    k = kernels.isotropic_gaussian(torch.tensor([1.0]), 5)
    with pytest.raises(ValueError, match=r"residual must be B×C×h×w, got shape \(3, 4, 4\)"):
        physics.transpose_upsample(torch.zeros(3, 4, 4), k, 2)


def test_the_adjuster_keeps_the_sign_where_no_kernel_tap_reaches():
    """Eq. 11's ``+ eps``: an HR pixel that no tap covers (k ⊗ₛᵀ 1 = 0) gets a large gradient of
    the same sign, never an infinite or flipped one."""
    grad = torch.tensor([2.0, -3.0, 4.0]).view(1, 3, 1, 1)
    adjusted = physics.adjusted_gradient(grad, torch.zeros(1, 1, 1, 1))
    assert torch.isfinite(adjusted).all()
    assert torch.equal(adjusted.sign(), grad.sign()) and (adjusted.abs() > 1e9).all()
    torch.testing.assert_close(
        physics.adjusted_gradient(grad, torch.full((1, 1, 1, 1), 2.0)), grad / 2
    )


def test_full_precision_turns_autocast_off_on_the_tensors_device():
    a = torch.rand(4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16
        with physics.full_precision(a):
            assert (a @ a).dtype == torch.float32
        assert (a @ a).dtype == torch.bfloat16


def test_kernel_gradient_takes_a_residual_of_another_dtype():
    """Under autocast the residual may come in bfloat16 while the image is float32: it is cast
    to the image's dtype, and the gradient is the float32 one of the rounded residual."""
    x, _ = _batch(1, 3, 6, 2, 5)
    r = torch.rand(1, 3, 6, 6, dtype=torch.float64)
    low = physics.kernel_gradient(x, r.to(torch.bfloat16), 5, 2)
    assert low.dtype == x.dtype
    torch.testing.assert_close(
        low, physics.kernel_gradient(x, r.to(torch.bfloat16).to(x.dtype), 5, 2)
    )


def test_kernel_gradient_of_a_non_square_image_matches_autograd():
    s, p = 2, 5
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 3, 12, 20, generator=g, dtype=torch.float64)
    k = torch.rand(1, p, p, generator=g, dtype=torch.float64).requires_grad_(True)
    y = torch.rand(1, 3, 6, 10, generator=g, dtype=torch.float64)
    r = physics.blur_downsample(x, k, s) - y
    (auto,) = torch.autograd.grad(0.5 * r.pow(2).sum() / (3 * 6 * 10), k)
    torch.testing.assert_close(physics.kernel_gradient(x, r.detach(), p, s), auto)


@pytest.mark.parametrize(
    "shape,message",
    [
        ((3, 8, 8), r"^image must be B×C×H×W, got shape \(3, 8, 8\)$"),
        ((1, 3, 8, 9), r"^image size 8×9 is not divisible by scale 2: mod-crop it first$"),
        ((1, 3, 9, 8), r"^image size 9×8 is not divisible by scale 2: mod-crop it first$"),
    ],
)
def test_check_shapes_names_what_does_not_fit(shape, message):
    k = torch.full((1, 5, 5), 1 / 25)
    with pytest.raises(ValueError, match=message):
        physics.check_shapes(torch.zeros(shape), k, 2)


@pytest.mark.parametrize(
    "k,scale,message",
    [
        (torch.full((5, 5), 1 / 25), 2, r"^kernels must be B×p×p, got shape \(5, 5\)$"),
        (torch.full((1, 5, 7), 1 / 35), 2, r"^kernels must be B×p×p, got shape \(1, 5, 7\)$"),
        (torch.full((2, 5, 5), 1 / 25), 2, r"^2 kernels for a batch of 1 images$"),
        (torch.full((1, 4, 4), 1 / 16), 2, r"^kernel size must be odd, got p=4$"),
        (torch.full((1, 5, 5), 1 / 25), 0, r"^scale must be a positive integer, got 0$"),
        (torch.full((1, 5, 5), 1 / 25), 2.0, r"^scale must be a positive integer, got 2\.0$"),
    ],
)
def test_kernel_checks_name_what_does_not_fit(k, scale, message):
    with pytest.raises(ValueError, match=message):
        physics.blur_downsample(torch.zeros(1, 3, 8, 8), k, scale)
    with pytest.raises(ValueError, match=message):
        physics.transpose_upsample(torch.zeros(1, 3, 4, 4), k, scale)


def test_float32_kernels_act_on_float64_images_in_float64():
    """The kernels take the image's (or residual's) dtype: a float32 kernel on float64 data gives
    the float64 result of the same kernel."""
    s, p = 2, 5
    x, k = _batch(1, 3, 6, s, p)
    y = torch.rand(1, 3, 6, 6, dtype=torch.float64)
    k32 = k.float()
    for out, ref in [
        (physics.blur_downsample(x, k32, s), physics.blur_downsample(x, k32.double(), s)),
        (physics.transpose_upsample(y, k32, s), physics.transpose_upsample(y, k32.double(), s)),
    ]:
        assert out.dtype == torch.float64
        torch.testing.assert_close(out, ref)


def _aten_blur_downsample(x, k, s):
    """Reference A_k: PyTorch's convolution at full resolution, subsampled, by autograd."""
    return _full_blur(x, k, "reflect")[..., ::s, ::s]


def _aten_transpose_upsample(e, k, s):
    b, c, h, w = e.shape
    p = k.shape[-1]
    filters = k.unsqueeze(1).expand(b, c, p, p).reshape(b * c, 1, p, p)
    out = F.conv_transpose2d(
        e.reshape(1, b * c, h, w),
        filters,
        stride=s,
        padding=p // 2,
        output_padding=s - 1,
        groups=b * c,
    )
    return out.reshape(b, c, h * s, w * s)


def _aten_kernel_gradient(x, r, p, s):
    """Reference G_k: the gradient in k of ½‖A_k x − y‖²/(C·h·w) with r = A_k x − y, by autograd
    through PyTorch's convolution, kept differentiable in x and r."""
    k = torch.zeros(x.shape[0], p, p, dtype=x.dtype, requires_grad=True)
    inner = (_aten_blur_downsample(x, k, s) * r).sum() / r[0].numel()
    (grad,) = torch.autograd.grad(inner, k, create_graph=True)
    return grad


def _assert_as_pytorchs_convolutions(x, k, r, p, scale, second_order):
    """The three operators' values and gradients (and second derivatives) equal those of autograd
    through PyTorch's own convolutions."""
    g = torch.Generator().manual_seed(p)
    pairs = [
        (physics.blur_downsample, _aten_blur_downsample, (x, k, scale)),
        (physics.transpose_upsample, _aten_transpose_upsample, (r, k, scale)),
        (physics.kernel_gradient, _aten_kernel_gradient, (x, r, p, scale)),
    ]
    for ours_op, aten_op, args in pairs:
        inputs = [a for a in args if isinstance(a, torch.Tensor)]
        ours, ref = ours_op(*args), aten_op(*args)
        torch.testing.assert_close(ours, ref)
        weight = torch.rand(ours.shape, generator=g, dtype=torch.float64)
        grads = torch.autograd.grad((ours * weight).sum(), inputs, create_graph=second_order)
        refs = torch.autograd.grad((ref * weight).sum(), inputs, create_graph=second_order)
        for a, b in zip(grads, refs, strict=True):
            torch.testing.assert_close(a, b)
        if second_order:
            second = torch.autograd.grad(sum(a.pow(2).sum() for a in grads), inputs)
            second_ref = torch.autograd.grad(sum(b.pow(2).sum() for b in refs), inputs)
            for a, b in zip(second, second_ref, strict=True):
                torch.testing.assert_close(a, b)


@pytest.mark.parametrize("scale,size,p", [(2, (12, 20), 7), (3, (15, 9), 7), (4, (16, 24), 9)])
def test_the_operators_and_their_gradients_are_those_of_pytorchs_convolutions(scale, size, p):
    """Values, gradients and second derivatives against autograd through PyTorch's own
    convolutions, on non-square images whose padded size is not a multiple of the scale."""
    g = torch.Generator().manual_seed(scale)
    x = torch.rand(2, 3, *size, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.rand(2, p, p, generator=g, dtype=torch.float64, requires_grad=True)
    r = torch.rand(2, 3, size[0] // scale, size[1] // scale, generator=g, dtype=torch.float64)
    r.requires_grad_(True)
    _assert_as_pytorchs_convolutions(x, k, r, p, scale, second_order=True)


def _op_names(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {event.key for event in prof.key_averages()}


@pytest.mark.parametrize("mode", ["eager", "compiling", "exporting"])
def test_each_tracing_mode_takes_its_form_of_the_operators(monkeypatch, mode):
    """Eager: the autograd functions, no convolution_backward anywhere. torch.compile: PyTorch's
    convolutions, which Inductor differentiates, the kernel gradient as conv2d_weight. torch.export
    (ONNX): the kernel gradient as a forward convolution. The same values and gradients in each."""
    monkeypatch.setattr(physics, "is_compiling", lambda: mode != "eager")
    monkeypatch.setattr(physics, "is_exporting", lambda: mode == "exporting")
    scale, p = 3, 7
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 15, 9, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.rand(2, p, p, generator=g, dtype=torch.float64, requires_grad=True)
    r = torch.rand(2, 3, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    _assert_as_pytorchs_convolutions(x, k, r, p, scale, second_order=False)
    forward = _op_names(lambda: physics.kernel_gradient(x.detach(), r.detach(), p, scale))
    assert ("aten::convolution_backward" in forward) == (mode == "compiling")
    for op, signal in [(physics.blur_downsample, x), (physics.transpose_upsample, r)]:
        out = op(signal, k, scale)
        backward = _op_names(lambda out=out: out.sum().backward())
        assert ("aten::convolution_backward" in backward) == (mode != "eager"), op.__name__
    out = physics.kernel_gradient(x, r, p, scale)
    backward = _op_names(lambda: out.sum().backward())
    differentiated = {"aten::convolution_backward", "ConvolutionBackwardBackward0"}
    assert bool(differentiated & backward) == (mode != "eager")


@pytest.mark.parametrize("wanted", ["signal", "kernel"])
def test_the_backward_pass_computes_only_the_gradients_asked_for(wanted):
    """One convolution per gradient: none for an input that needs no gradient (K-net's kernel
    step needs no gradient in the image when the image is given, X-net's none in a fixed
    kernel)."""
    x, k = _batch(1, 3, 8, 2, 5, dtype=torch.float32)
    e = torch.rand(1, 3, 8, 8)
    for op, signal in [(physics.blur_downsample, x), (physics.transpose_upsample, e)]:
        signal, kernel = signal.clone(), k.clone()
        (signal if wanted == "signal" else kernel).requires_grad_(True)
        out = op(signal, kernel, 2)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            out.sum().backward()
        counts = {event.key: event.count for event in prof.key_averages()}
        assert counts.get("aten::convolution") == 1, op.__name__


def test_kernel_gradient_names_a_residual_of_the_wrong_shape():
    x = torch.rand(2, 3, 12, 20, dtype=torch.float64)
    r = torch.rand(2, 3, 1, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^residual shape \(2, 3, 1, 1\) does not match image"):
        physics.kernel_gradient(x, r, 7, 2)
