import fractions
import re
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

import kxnet
from kxnet.checkpoint import WEIGHTS_FORMAT, CheckpointError, load_model, save_weights
from test_official import check_outputs

FIXTURE = Path(__file__).parent / "fixtures" / "official_x2_s2_p11.pt"
CONFIG = {"scale": 2, "stages": 1, "kernel_size": 11, "setting": "aniso"}


@pytest.fixture
def model():
    net = kxnet.KXNet(**CONFIG)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return net.eval()


def _same(a, b):
    lr = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        torch.testing.assert_close(a(lr).sr, b(lr).sr, rtol=0, atol=0)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_bare_weights_round_trip(model, tmp_path):
    path = save_weights(model, tmp_path / "sub" / "kxnet_x2.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == WEIGHTS_FORMAT and raw["config"] == CONFIG
    loaded = load_model(path, **CONFIG)
    assert not loaded.training
    _same(model, loaded)
    assert sorted(p.name for p in path.parent.iterdir()) == ["kxnet_x2.pt"]


def test_save_weights_keeps_the_old_file_when_writing_fails(model, tmp_path, monkeypatch):
    path = tmp_path / "w.pt"
    path.write_bytes(b"previous")

    def broken_save(obj, f):
        f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_weights(model, path)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["w.pt"]


def _lightning_dict(model, config):
    return {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": L.__version__,
        "state_dict": {"net." + k: v for k, v in model.state_dict().items()},
        "hyper_parameters": {"model": config, "optim": {"lr": 2e-4}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 2e-4}]}],
    }


def test_lightning_checkpoint_dict(model, tmp_path):
    path = tmp_path / "last.ckpt"
    config = OmegaConf.create({**CONFIG, "checkpoint_stages": True})
    torch.save(_lightning_dict(model, config), path)
    _same(model, load_model(path))
    _same(model, load_model(path, scale=2, stages=1, kernel_size=11, setting="aniso"))


class _TinyModule(L.LightningModule):
    """Holds the network as ``self.net`` and its config as ``model``, as KXNetModule does."""

    def __init__(self, model):
        super().__init__()
        self.save_hyperparameters()
        self.net = kxnet.KXNet(**{k: v for k, v in model.items() if k != "checkpoint_stages"})

    def training_step(self, batch, _):
        return self.net(batch[0]).sr.mean()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def test_checkpoint_of_a_real_trainer_run(tmp_path):
    module = _TinyModule(OmegaConf.create({**CONFIG, "checkpoint_stages": False}))
    data = torch.utils.data.TensorDataset(torch.rand(2, 3, 8, 8))
    trainer = L.Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=2))
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    _same(module.net.eval(), load_model(tmp_path / "run.ckpt", scale=2))


def test_authors_checkpoint(tmp_path):
    official = torch.load(FIXTURE, weights_only=True)
    model = load_model(FIXTURE, scale=2, stages=2, kernel_size=11, setting="aniso")
    check_outputs(model, official)
    path = tmp_path / "KXNet_x2.pth"
    torch.save(official["state_dict"], path)
    _same(model, load_model(path))
    with pytest.raises(CheckpointError, match=r"KXNet_x2\.pth: checkpoint has stages=2 but"):
        load_model(path, stages=19)


@pytest.mark.parametrize(
    "asked,option",
    [
        ({"scale": 4}, "scale=4"),
        ({"stages": 19}, "model.net.stages=19"),
        ({"kernel_size": 21}, "model.net.kernel_size=21"),
        ({"setting": "iso"}, "setting=iso"),
    ],
)
def test_mismatch_names_the_file_and_the_option(model, tmp_path, asked, option):
    path = save_weights(model, tmp_path / "w.pt")
    with pytest.raises(CheckpointError) as err:
        load_model(path, **asked)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: checkpoint has")
    assert f"but {option} was asked for" in message
    assert f"drop the {option.split('=')[0]} override" in message


def _write(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    return path


_UNREADABLE = (
    "not a readable PyTorch checkpoint: the file is truncated, corrupt or of another kind; save "
    "or download it again"
)


@pytest.mark.parametrize(
    "content,reason",
    [
        (b"", r"empty file \(0 bytes\): the checkpoint was not saved completely"),
        (b"not a checkpoint at all\n", re.escape(_UNREADABLE)),
        ("truncated", re.escape(_UNREADABLE)),
        ({"format": "onnx", "config": {}}, r"unknown format 'onnx' \(expected 'kxnet-weights'\)"),
        ([1, 2, 3], "holds a list, not a checkpoint dictionary"),
        (
            {"conv1.weight": torch.zeros(1)},
            r"not a KXNet checkpoint \(unexpected key 'conv1\.weight' in the official "
            r"checkpoint\); "
            r"expected a Lightning \.ckpt of KXNetModule, a kxnet-weights file or the authors' "
            r"released \.pth",
        ),
        (
            {"state_dict": {}, "hyper_parameters": {}},
            r"Lightning checkpoint without hyper_parameters\['net'\]: not saved by "
            r"kxnet\.train\.module\.KXNetModule",
        ),
        (
            {"state_dict": {"x.w": torch.zeros(1)}, "hyper_parameters": {"net": CONFIG}},
            r"Lightning checkpoint without 'net\.' weights",
        ),
        (
            {"format": "kxnet-weights", "config": {"scale": 2}},
            r"kxnet-weights file without 'config' and 'state_dict'",
        ),
        (
            {"format": "kxnet-weights", "config": CONFIG, "state_dict": {}},
            r"weights do not fit the config \{.*\} \(Error\(s\) in loading .*Missing key.*",
        ),
        (
            {"format": "kxnet-weights", "config": CONFIG, "state_dict": {"a": 1}},
            r"weight a is a int, not a tensor: the file is damaged or not a KXNet checkpoint; "
            r"re-save it with kxnet\.checkpoint\.save_weights",
        ),
        (
            {"format": "kxnet-weights", "x": fractions.Fraction(1, 3)},
            r"holds code \(fractions\.Fraction, which loading the file would call\) besides "
            r"weights, and was refused: a checkpoint is only read in a way that cannot run code; "
            r"from a trusted copy, re-save the network with kxnet\.checkpoint\.save_weights",
        ),
    ],
)
def test_unusable_files_are_refused_in_one_line(model, tmp_path, content, reason):
    """Each refusal in full: the file, then what is wrong and what to do."""
    path = tmp_path / "bad.ckpt"
    if content == "truncated":
        good = save_weights(model, tmp_path / "good.pt").read_bytes()
        content = good[: len(good) // 2]
    _write(path, content)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    assert str(err.value) == f"{path}: {err.value.reason}" and err.value.path == path
    assert re.fullmatch(reason, err.value.reason), err.value.reason
    assert "\n" not in str(err.value)


def test_missing_file_and_unknown_option(tmp_path):
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "nope.ckpt")
    assert err.value.reason == "no such checkpoint file (check ckpt_path)"
    with pytest.raises(TypeError, match="patch_size"):
        load_model(FIXTURE, patch_size=64)


def test_checkpoint_of_a_kxnet_module_training_run(tmp_path):
    kxnet_module = pytest.importorskip("kxnet.train.module", reason="kxnet.train is not installed")
    module = kxnet_module.KXNetModule(
        net={**CONFIG, "checkpoint_stages": False},
        scheduler=None,
        images_to_log=0,
        stage_metrics=False,
    )
    kernel = kxnet.kernels.isotropic_gaussian(torch.tensor([1.2]), 11)[0]
    sample = {"lr": torch.rand(3, 8, 8), "hr": torch.rand(3, 16, 16), "kernel": kernel}
    trainer = L.Trainer(
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, torch.utils.data.DataLoader([sample] * 4, batch_size=2))
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    save_weights(module.net, tmp_path / "exported.pt")
    net = module.net.eval()
    _same(net, load_model(tmp_path / "last.ckpt", scale=2, stages=1, kernel_size=11))
    _same(net, load_model(tmp_path / "exported.pt", setting="aniso"))
    with pytest.raises(CheckpointError, match="but model.net.stages=19 was asked for"):
        load_model(tmp_path / "last.ckpt", stages=19)


class _RunsCode:
    """Pickles as a call of ``os.system``: what a crafted checkpoint carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_holding_code_is_refused_as_such_and_runs_nothing(
    model, tmp_path, monkeypatch
):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # explicit weights_only wins
    marker = tmp_path / "ran"
    path = tmp_path / "crafted.ckpt"
    payload = _lightning_dict(model, dict(CONFIG))
    payload["hyper_parameters"]["extra"] = _RunsCode(marker)
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    message = str(err.value)
    assert "holds code (posix.system" in message and "was refused" in message, message
    assert "truncated" not in message and "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize("stored", ["dictconfig", "plain"])
def test_a_stored_config_is_never_resolved(model, tmp_path, monkeypatch, stored):
    monkeypatch.setenv("KXNET_TEST_SECRET", "hunter2-secret")
    config = {**CONFIG, "scale": "${oc.env:KXNET_TEST_SECRET}"}
    if stored == "dictconfig":
        config = OmegaConf.create(config)
    path = tmp_path / "interpolated.ckpt"
    torch.save(_lightning_dict(model, config), path)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    message = str(err.value)
    assert "holds an interpolation" in message and "hyper_parameters.model.scale" in message
    assert "hunter2" not in message and "oc.env" not in message
    broken = OmegaConf.create({**CONFIG, "stages": "${nowhere.at_all}"})
    torch.save(_lightning_dict(model, broken), path)
    with pytest.raises(CheckpointError, match="interpolation .* at hyper_parameters.model.stages"):
        load_model(path)
    weights = save_weights(model, tmp_path / "w.pt")
    raw = torch.load(weights, weights_only=True)
    raw["config"]["setting"] = "${oc.env:KXNET_TEST_SECRET}"
    torch.save(raw, weights)
    with pytest.raises(CheckpointError, match="interpolation .* at config.setting"):
        load_model(weights)


def _damaged(model, change):
    """The model's weights file as a dict, with ``change(config, state)`` applied."""
    config = dict(CONFIG)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    change(config, state)
    return {"format": WEIGHTS_FORMAT, "config": config, "state_dict": state}


def _set(key, value):
    return lambda config, state: config.__setitem__(key, value)


def _drop(key):
    return lambda config, state: config.pop(key)


def _extra_stage(config, state):
    config["stages"] = 2


def _narrow_convolution(config, state):
    key = next(k for k, v in state.items() if k.startswith("stages.") and v.dim() == 4)
    state[key] = state[key][1:].contiguous()


def _nan(config, state):
    state["aux_k"][0, 0, 0] = float("nan")


def _unexpected(config, state):
    state["extra.weight"] = torch.zeros(1)


def _flat_aux_k(config, state):
    state["aux_k"] = state["aux_k"].flatten(1)


@pytest.mark.parametrize(
    "change,reason",
    [
        (_set("scale", 5), r"its stored config\.scale=5 is not 2, 3 or 4: "),
        (_set("scale", 3.0), r"its stored config\.scale=3\.0 is not 2, 3 or 4: "),
        (_set("scale", True), r"its stored config\.scale=True is not 2, 3 or 4: "),
        (_set("stages", -1), r"its stored config\.stages=-1 is not an integer 0 to 1000: "),
        (_set("stages", 1001), r"its stored config\.stages=1001 is not an integer 0 to 1000: "),
        (_set("stages", 1.5), r"its stored config\.stages=1\.5 is not an integer 0 to 1000: "),
        (_set("kernel_size", 12), r"config\.kernel_size=12 is not an odd integer 1 to 101: "),
        (_set("kernel_size", 103), r"config\.kernel_size=103 is not an odd integer 1 to 101: "),
        (_set("kernel_size", -1), r"config\.kernel_size=-1 is not an odd integer 1 to 101: "),
        (_set("kernel_size", 11.0), r"config\.kernel_size=11\.0 is not an odd integer 1 to 101"),
        (_set("setting", "gauss"), r"its stored config\.setting='gauss' is not iso or aniso: "),
        (_set("setting", 1), r"its stored config\.setting=1 is not iso or aniso: "),
        (_drop("stages"), r"model config lacks stages$"),
        (_drop("setting"), r"model config lacks setting$"),
        (_extra_stage, r"its stored config says stages=2 but its weights hold stages=1: "),
        (_set("kernel_size", 9), r"config says kernel_size=9 but its weights hold kernel_size=11"),
        (
            _narrow_convolution,
            r"^weights do not fit the config \{.*\} \(Error\(s\) in loading .*size mismatch",
        ),
        (_nan, r"weight aux_k holds 1 non-finite value\(s\) \(NaN or inf\)"),
        (_unexpected, r"weights do not fit the config .*Unexpected key\(s\).*extra\.weight"),
        (_flat_aux_k, r"weights do not fit the config"),
    ],
)
def test_a_damaged_weights_file_is_refused_naming_the_file_and_the_fault(
    model, tmp_path, change, reason
):
    path = tmp_path / "damaged.pt"
    torch.save(_damaged(model, change), path)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    assert err.value.path == path
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    assert re.search(reason, err.value.reason), err.value.reason


@pytest.mark.parametrize("stages,kernel_size", [(0, 11), (2, 1), (1, 101)])
def test_the_edges_of_the_stored_ranges_load(tmp_path, stages, kernel_size):
    net = kxnet.KXNet(2, stages, kernel_size=kernel_size, setting="aniso")
    loaded = load_model(save_weights(net, tmp_path / "edge.pt"))
    assert (loaded.num_stages, loaded.kernel_size) == (stages, kernel_size)


def test_the_setting_asked_names_an_authors_model_and_a_damaged_one_is_refused(tmp_path):
    state = torch.load(FIXTURE, weights_only=True)["state_dict"]
    path = tmp_path / "KXNet_x2.pth"
    torch.save(state, path)
    for setting in ("iso", "aniso"):
        assert load_model(path, setting=setting).setting == setting
    key = next(k for k, v in state.items() if v.dim() == 4)
    torch.save({**state, key: state[key][1:].clone()}, path)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    assert err.value.path == path
    assert err.value.reason.startswith("authors' checkpoint cannot be loaded (")
    other = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError) as err:
        load_model(other)
    assert err.value.path == other
    assert err.value.reason.endswith(
        "expected a Lightning .ckpt of KXNetModule, a kxnet-weights file or the authors' "
        "released .pth"
    )
