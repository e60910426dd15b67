"""Lower precision: autocast really runs the proximal networks in bfloat16 through train(), and
only them; the CPU's native bfloat16 is detected; bfloat16 inference is an option of eval."""

import torch

from kxnet import hardware
from kxnet.schema import typed
from kxnet.train import train
from trainhelp import QUIET, DtypeProbe, compose_train


def _first_step_dtypes(tmp_path, tiny_benchmark, precision):
    cfg = compose_train(
        tmp_path,
        "debug=default",
        f"trainer.precision={precision}",
        "trainer.max_steps=1",
        "trainer.detect_anomaly=false",
        "+callbacks.probe._target_=trainhelp.DtypeProbe",
        *tiny_benchmark,
        *QUIET,
    )
    train(typed(cfg, "train"))
    return DtypeProbe.seen


def test_bf16_mixed_runs_the_proximal_networks_in_bfloat16_and_nothing_else(
    tmp_path, tiny_benchmark
):
    seen = _first_step_dtypes(tmp_path / "bf16", tiny_benchmark, "bf16-mixed")
    assert seen["proxnet"] == {torch.bfloat16}
    assert seen["physics"] == {torch.float32}
    assert seen["loss"] == {torch.float32}
    full = _first_step_dtypes(tmp_path / "fp32", tiny_benchmark, "32-true")
    assert full["proxnet"] == full["physics"] == full["loss"] == {torch.float32}


def test_native_bf16_follows_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: ("Some CPU", frozenset({"avx2"})))
    assert hardware.cpu_bf16() == [] and not hardware.native_bf16()
    assert hardware.cpu_precision() == "32-true"
    flags = frozenset({"avx512f", "avx512_bf16"})
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: ("Some CPU", flags))
    assert hardware.cpu_bf16() == ["avx512_bf16"]
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert hardware.native_bf16() == native
    assert hardware.cpu_precision() == ("bf16-mixed" if native else "32-true")


def test_eval_options_take_the_precision_as_its_name():
    from kxnet.eval.run import EvalOptions

    assert EvalOptions.from_config({"precision": 32}).precision == "32"
    assert EvalOptions.from_config({"precision": "bf16"}).precision == "bf16"
    assert EvalOptions.from_config({}).precision == "32"


def test_the_log_line_says_what_the_device_computes_in(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_name", lambda: "Test CPU")
    monkeypatch.setattr(hardware, "cpu_bf16", lambda: ["amx_bf16", "avx512_bf16"])
    cpu = torch.device("cpu")
    assert (
        hardware.device_note(cpu) == "Test CPU, native bfloat16 on this CPU: amx_bf16, avx512_bf16"
    )
    monkeypatch.setattr(hardware, "cpu_bf16", lambda: [])
    assert hardware.device_note(cpu) == "Test CPU, no native bfloat16"
    assert hardware.device_note(torch.device("cuda", 1)) == "on cuda:1"
