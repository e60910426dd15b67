import torch
import torch.nn.functional as F

from kxnet import physics
from kxnet.bench import measure

CPU = torch.device("cpu")


def test_flops_of_grouped_convolutions_and_their_gradients():
    # 3 images, 2 groups of 1 channel, 5×5 kernels, 8×8 outputs: 3·2·25·64 multiply-adds.
    x = torch.rand(3, 2, 12, 12, requires_grad=True)
    w = torch.rand(2, 1, 5, 5, requires_grad=True)
    macs = 3 * 2 * 25 * 64
    forward = measure.count_flops(lambda: F.conv2d(x, w, groups=2))
    assert forward == {"total": 2 * macs, "conv": 2 * macs}
    both = measure.count_flops(lambda: F.conv2d(x, w, groups=2).sum().backward())
    assert both["conv"] == 3 * 2 * macs
    e = torch.rand(3, 2, 8, 8, requires_grad=True)
    transposed = measure.count_flops(lambda: F.conv_transpose2d(e, w, groups=2).sum().backward())
    assert transposed["conv"] == 3 * 2 * macs


def test_flops_of_the_kernel_gradient_count_one_product_per_tap_and_pixel():
    x, r = torch.rand(2, 3, 48, 48), torch.rand(2, 3, 12, 12)
    flops = measure.count_flops(lambda: physics.kernel_gradient(x, r, 21, 4))
    assert flops["total"] == 2 * (2 * 3 * 12 * 12) * 21 * 21


def test_profile_call_reports_the_peak_of_live_tensors_not_their_sum():
    def work():
        a = torch.ones(1000, 1000)  # 4 MB
        b = a + 1  # 8 MB held
        del a
        c = b * 2  # 8 MB held again; 12 MB allocated in all
        return c.sum()

    peak = measure.profile_call(work, CPU)["peak_bytes"]
    assert 8_000_000 <= peak < 8_000_100


def test_time_interleaved_takes_turns_and_counts_every_call():
    order = []
    fns = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    timings = measure.time_interleaved(fns, CPU, warmup=1, repeats=3)
    assert order == ["a", "b"] + ["a", "b"] * 3
    for timing in timings.values():
        summary = timing.summary()
        assert len(summary["wall_s"]["all"]) == len(summary["cpu_s"]["all"]) == 3
        assert summary["wall_s"]["min"] <= summary["wall_s"]["median"] <= summary["wall_s"]["max"]


def test_matmul_peak_is_a_rate():
    assert measure.matmul_peak(CPU, size=256, repeats=2) > 1e6


def _hold_100_mb():
    held = []

    def call():
        held.append(torch.ones(25_000_000))  # 100 MB, kept
        torch.ones(25_000_000).sum()  # 100 MB more for a moment

    return call


def test_rss_peak_in_a_fresh_process_sees_what_the_calls_hold():
    rss = measure.run_isolated(measure.rss_peak, _hold_100_mb, 1)
    assert rss["peak"] - rss["base"] == rss["step"]
    assert 190e6 < rss["step"] < 260e6
