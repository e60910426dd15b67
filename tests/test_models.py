"""Models by name (``kxnet.models``) and their cache (``kxnet.cache``), against a loopback HTTP
server (127.0.0.1 only) that serves models in the authors' format: the first use downloads and
caches, later uses need no server, a cut transfer resumes, a 404, a wrong size and a SHA256
mismatch are one line each, two processes fetching one name get one whole file, and
``kxnet-eval paper=table1 weights=official`` fills the table."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from PIL import Image

import kxnet
from commandhelp import run_eval, run_predict
from kxnet import cache, description, models
from kxnet.checkpoint import save_weights
from kxnet.config import project_root
from kxnet.errors import DownloadError, StartupError
from kxnet.nn import KXNet

REPO = project_root()
FIXTURE = REPO / "tests" / "fixtures" / "official_x2_s2_p11.pt"
FIXTURE_BYTES = FIXTURE.read_bytes()
RELEASE = "https://github.com/jiahong-fu/KXNet/releases/tag/v0.0"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.drop_after: int | None = None  # the next response stops after this many bytes
        self.delay = 0.0  # seconds between 64 KiB blocks
        self.requests: list[tuple[str, str | None]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v0.0"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args):
        pass

    def do_GET(self):
        name = self.path.removeprefix("/v0.0/")
        rng = self.headers.get("Range")
        self.server.requests.append((name, rng))
        data = self.server.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if self.server.drop_after is not None:
            body, self.server.drop_after = body[: self.server.drop_after], None
            self.close_connection = True
        for i in range(0, len(body), 1 << 16):
            self.wfile.write(body[i : i + (1 << 16)])
            time.sleep(self.server.delay)


@pytest.fixture
def server(monkeypatch, tmp_path):
    """A loopback server holding the fixture as the release's ``KXNet_setting2_x2.pth``, the
    cache in a temporary folder and the registry's URL pointed at the server."""
    srv = _Server()
    srv.files["KXNet_setting2_x2.pth"] = FIXTURE_BYTES
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("KXNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KXNET_MODELS_URL", srv.url)
    monkeypatch.setattr(cache, "BACKOFF_S", 0.01)
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def fixture_registry(monkeypatch):
    """The registry with official/setting2_x2 described as the fixture is (S = 2)."""
    content = json.loads(models.REGISTRY.read_text())
    content["models"]["official/setting2_x2"]["stages"] = 2
    monkeypatch.setattr(models, "_registry_file", lambda: content)
    return content


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text
    return text


def test_registry_names_the_authors_six_models():
    entries = models.registry()
    assert sorted(entries) == [f"official/setting{s}_x{x}" for s in (1, 2) for x in (2, 3, 4)]
    for entry in entries.values():
        assert entry.stages == 19
        assert entry.file == f"KXNet_{entry.name.removeprefix('official/')}.pth"
        assert entry.name == models.official_name(entry.setting, entry.scale)
        assert entry.kernel_size == description.kernel_size(entry.setting, entry.scale)
    assert models.release_page() == RELEASE
    assert models.official_name("aniso", 4) == "official/setting2_x4"


def test_first_use_downloads_and_records_the_sha256_then_the_cache_serves(server, capsys):
    path, fixed = models.weights_path("official/setting2_x2")
    assert path.read_bytes() == FIXTURE_BYTES
    assert fixed == {"scale": 2, "stages": 19, "kernel_size": 11, "setting": "aniso"}
    record = path.with_name(path.name + ".sha256")
    assert record.read_text().split()[0] == _sha256(FIXTURE_BYTES)
    err = capsys.readouterr().err
    assert _sha256(FIXTURE_BYTES) in err and "Downloading" in err
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".part")] == []

    server.shutdown()
    again, _ = models.weights_path("official/setting2_x2")
    assert again == path and len(server.requests) == 1


def test_a_changed_or_truncated_cached_file_is_fetched_again(server, capsys):
    path, _ = models.weights_path("official/setting2_x2")
    path.write_bytes(FIXTURE_BYTES[:1000])
    again, _ = models.weights_path("official/setting2_x2")
    assert again.read_bytes() == FIXTURE_BYTES and len(server.requests) == 2
    assert "fetched again" in capsys.readouterr().err


def test_a_cut_connection_resumes(server):
    server.drop_after = len(FIXTURE_BYTES) // 3
    path, _ = models.weights_path("official/setting2_x2")
    assert path.read_bytes() == FIXTURE_BYTES
    assert server.requests[1] == ("KXNet_setting2_x2.pth", f"bytes={len(FIXTURE_BYTES) // 3}-")


def test_a_named_model_loads_through_the_python_api(server, fixture_registry):
    model = kxnet.load_model("official/setting2_x2")
    fixture = torch.load(FIXTURE, weights_only=True)
    assert (model.scale, model.num_stages, model.kernel_size, model.setting) == (2, 2, 11, "aniso")
    with torch.inference_mode():
        out = model(fixture["lr"])
    torch.testing.assert_close(out.sr, fixture["sr"][-1], atol=1e-5, rtol=1e-5)


def _kept(tmp_path: Path) -> list[str]:
    """What the cache holds besides its lock files."""
    folder = tmp_path / "cache" / "models"
    return sorted(p.name for p in folder.iterdir() if p.suffix != ".lock")


def _fails(name: str = "official/setting2_x2") -> str:
    with pytest.raises(DownloadError) as info:
        models.weights_path(name)
    message = _one_line(info.value)
    assert RELEASE in message and "ckpt_path=" in message
    return message


def test_404_is_one_line_naming_the_release_and_ckpt_path(server, tmp_path):
    del server.files["KXNet_setting2_x2.pth"]
    assert "HTTP 404" in _fails()
    assert _kept(tmp_path) == []


def test_a_wrong_size_is_one_line_and_nothing_is_kept(server, tmp_path, fixture_registry):
    fixture_registry["models"]["official/setting2_x2"]["bytes"] = len(FIXTURE_BYTES) + 1
    assert "pinned" in _fails()
    assert _kept(tmp_path) == []


def test_a_sha256_mismatch_is_one_line_and_nothing_is_kept(server, tmp_path, monkeypatch):
    monkeypatch.setenv("KXNET_SHA256_OFFICIAL_SETTING2_X2", "0" * 64)
    assert "differs from the pinned" in _fails()
    assert _kept(tmp_path) == []
    monkeypatch.setenv("KXNET_SHA256_OFFICIAL_SETTING2_X2", _sha256(FIXTURE_BYTES))
    path, _ = models.weights_path("official/setting2_x2")
    assert path.read_bytes() == FIXTURE_BYTES


def test_offline_is_one_line(server, monkeypatch):
    server.shutdown()
    server.server_close()
    assert "interrupted" in _fails() and "nothing received" in _fails()


def test_an_unusable_cache_is_one_line(server, monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("KXNET_CACHE", str(blocker / "cache"))
    assert "cannot be used" in _fails() or "not writable" in _fails()


def test_unknown_names_and_contradicting_properties_are_refused_before_any_download(server):
    with pytest.raises(StartupError, match="is not a model name"):
        models.weights_path("official/setting3_x2")
    with pytest.raises(StartupError) as info:
        models.weights_path("official/setting1_x2", {"scale": 4})
    assert "scale=4" in _one_line(info.value) and "x2" in str(info.value)
    with pytest.raises(StartupError, match="needs the setting and scale"):
        models.weights_path("official")
    assert server.requests == []


def test_two_processes_fetching_one_name_get_one_whole_file(server, tmp_path):
    server.delay = 0.02  # the transfer takes about a second: the two overlap
    code = (
        "from kxnet.models import weights_path; import hashlib; "
        "p = weights_path('official/setting2_x2')[0]; "
        "print(hashlib.sha256(p.read_bytes()).hexdigest())"
    )
    env = {**os.environ, "KXNET_CACHE": str(tmp_path / "cache"), "KXNET_MODELS_URL": server.url}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outputs]
    assert {o[0].decode().strip() for o in outputs} == {_sha256(FIXTURE_BYTES)}
    assert len(server.requests) == 1
    assert sorted(p.name for p in (tmp_path / "cache" / "models").iterdir()) == [
        "KXNet_setting2_x2.pth",
        "KXNet_setting2_x2.pth.lock",
        "KXNet_setting2_x2.pth.sha256",
    ]


def test_latest_is_the_newest_weights_of_outputs(tmp_path):
    older = save_weights(KXNet(2, 1, setting="iso"), tmp_path / "outputs/quick/runs/a/weights.pt")
    newer = save_weights(KXNet(3, 1, setting="iso"), tmp_path / "outputs/debug/runs/b/weights.pt")
    os.utime(older, ns=(1, 1))
    assert models.weights_path("latest", root=tmp_path)[0] == newer
    assert models.weights_path("latest/quick", root=tmp_path)[0] == older
    with pytest.raises(StartupError, match="no weights.pt"):
        models.weights_path("latest/setting1_x2", root=tmp_path)


def _authors_file(model: KXNet) -> bytes:
    """``model`` saved in the layout of the authors' released state dicts."""
    state: dict[str, torch.Tensor] = {
        "AV_X_ker": model.aux_x_weight,
        "kernel_map": model.aux_k,
        "kernel_map0": model.aux_k.clone(),
    }
    gammas = []
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if key.endswith("knet.gamma"):
            gammas.append(value.reshape(1))
        elif parts[0] == "stages":
            net = parts[2][0]
            prefix = f"{net.upper()}_stage.{parts[1]}.{net.upper()}_ProNet.res{net}"
            if parts[4] == "blocks":
                state[f"{prefix}{int(parts[5]) + 1}.{parts[6]}.{parts[7]}"] = value
            else:
                state[f"{prefix}5.0.{parts[5]}"] = value
    state["gamma_stage"] = torch.stack(gammas)
    state["eta_stage"] = torch.ones_like(state["gamma_stage"])
    buffer = io.BytesIO()
    torch.save({k: v.detach().clone() for k, v in state.items()}, buffer)
    return buffer.getvalue()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_paper_table1_on_the_official_models_fills_the_table(server, tmp_path):
    """``kxnet-eval paper=table1 weights=official`` fetches the model of every job's scale (here
    S = 19, p = 21 networks of random weights in the authors' format) and writes Table 1 with the
    paper's rows beside, on a one-image stand-in for Set5."""
    for scale in (2, 3, 4):
        net = KXNet(scale, 19, kernel_size=21, setting="iso")
        server.files[f"KXNet_setting1_x{scale}.pth"] = _authors_file(net)
    bench = tmp_path / "bench"
    (bench / "Set5").mkdir(parents=True)
    image = Image.open(REPO / "data" / "benchmarks" / "Set5" / "bird.png").convert("RGB")
    image.crop((60, 60, 108, 108)).save(bench / "Set5" / "bird.png")
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "kxnet.eval", "paper=table1", "weights=official"]
        + [f"paths.benchmark_dir={bench}", f"paths.cache_dir={tmp_path / 'lr'}"]
        + [f"hydra.sweep.dir={sweep}", "eval.datasets=[Set5]", "eval.num_workers=0"]
        + ["eval.progress=false", "eval.warmup=0", "eval.device=cpu"],
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # one thread: S = 19 on tiny images
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(name for name, _ in server.requests) == [
        f"KXNet_setting1_x{s}.pth" for s in (2, 3, 4)
    ]
    table = (sweep / "table.md").read_text()
    for scale in (2, 3, 4):
        assert f"| KXNet (paper) | x{scale} |" in table
        assert f"| KXNet (S=19) | x{scale} |" in table
    jobs = [json.loads((sweep / str(n) / "results.json").read_text()) for n in range(3)]
    assert sorted(j["config"]["weights"] for j in jobs) == ["official"] * 3
    assert sorted(j["config"]["scale"] for j in jobs) == [2, 3, 4]


def _eval(overrides: list[str]) -> int:
    return run_eval(overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["weights=official/setting1_x2", "scale=4"], "is Setting 1 (iso), x2"),
        (["weights=official/setting2_x4", "setting=iso"], "setting=iso was asked"),
        (["weights=official/setting1_x2", "model.net.stages=5"], "model.net.stages=5"),
        (["weights=official/setting1_x2", "ckpt_path=a.pt"], "both name a model"),
        (["weights=official/nothing"], "is not a model name"),
    ],
)
def test_a_contradicting_command_line_is_one_line_exit_2(server, capsys, overrides, message):
    assert _eval([*overrides, "eval.device=cpu", "eval.datasets=[Set5]"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and message in err
    assert server.requests == []


def test_predict_takes_a_name_and_a_download_failure_is_one_line(server, capsys, tmp_path):
    image = tmp_path / "in.png"
    Image.new("RGB", (24, 24), (120, 60, 30)).save(image)
    del server.files["KXNet_setting2_x2.pth"]
    overrides = ["weights=official/setting2_x2", f"input={image}", f"output={tmp_path / 'out'}"]
    assert run_predict([*overrides, "device=cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "HTTP 404" in err and RELEASE in err
    assert not (tmp_path / "out").exists()


def test_the_notebooks_take_a_name_in_kxnet_checkpoint(server, fixture_registry, monkeypatch):
    from kxnet.notebook import notebook_model

    monkeypatch.setenv("KXNET_CHECKPOINT", "official/setting2_x2")
    model, source = notebook_model()
    assert source.startswith("official/setting2_x2: x2, setting aniso, 2 stages")
    assert (model.scale, model.num_stages, model.kernel_size) == (2, 2, 11)
    with pytest.raises(StartupError, match="setting=iso was asked"):
        notebook_model(setting="iso")
