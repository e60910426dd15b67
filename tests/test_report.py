"""Tables from evaluation results: kxnet.report and experiments/report.py."""

import csv
import importlib.util
import io
import json

import pytest

from kxnet.config import project_root
from kxnet.eval import report

REPO = project_root()
PAPER = json.loads(report.PAPER_TABLES.read_text())


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("report_script", REPO / "experiments/report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _payload(method, setting, scale, stages, cells, seconds=0.5, params=1_000_000):
    """A results.json of kxnet.eval with only its averages: cells (dataset, noise) → PSNR."""
    summary = [
        {
            "setting": setting,
            "scale": scale,
            "noise": float(noise),
            "dataset": dataset,
            "count": 8,
            "psnr_y": psnr,
            "ssim_y": psnr / 40,
            "psnr_rgb": psnr - 1,
            "kernel_l1": 0.001 * stages,
            "kernel_psnr": 30.0 + stages,
            "seconds": seconds,
            "stage_psnr_y": [psnr - stages + t for t in range(stages + 1)],
        }
        for (dataset, noise), psnr in cells.items()
    ]
    config = {
        "scale": scale,
        "stages": stages,
        "kernel_size": 11,
        "setting": setting,
        "parameters": params,
        "ckpt_path": None,
        "true_kernel": False,
    }
    return {
        "method": method,
        "config": config,
        "device": "cpu (test)",
        "command": f"python -m kxnet.eval S={stages}",
        "summary": summary,
        "records": [],
    }


def _write(folder, payload):
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(payload))


def _csv(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_table3_report_on_a_synthetic_multirun(tmp_path, script, capsys):
    sweep = tmp_path / "multirun"
    for job, stages in enumerate((21, 0, 5, 19)):
        payload = _payload(
            "Bicubic" if stages == 0 else f"KXNet (S={stages})",
            "aniso",
            2,
            stages,
            {("Set14", 0): 25.0 + stages / 4, ("Set14", 15): 20.0},
            seconds=0.01 * stages,
            params=340_000 * stages,
        )
        _write(sweep / str(job), payload)
    out = tmp_path / "table3"
    assert script.main(["table3", str(sweep), "--out", str(out)]) == 0
    rows = {int(r["stages"]): r for r in _csv(out / "table.csv")}
    assert sorted(rows) == [0, 5, 10, 17, 19, 21]
    assert float(rows[19]["psnr"]) == 25.0 + 19 / 4
    assert float(rows[19]["ssim"]) == pytest.approx((25.0 + 19 / 4) / 40)
    assert float(rows[19]["params_m"]) == pytest.approx(6.46)
    assert float(rows[19]["seconds"]) == pytest.approx(0.19)
    assert float(rows[19]["paper_psnr"]) == 31.14 and float(rows[19]["paper_params_m"]) == 6.5
    assert rows[0]["params_m"] == "" and rows[0]["paper_seconds"] == ""
    assert rows[10]["psnr"] == "" and float(rows[10]["paper_psnr"]) == 30.57
    table = (out / "table.md").read_text()
    assert "| 19 | 29.75 | 0.7438 | 6.46 | 0.190 | 31.14 | 0.8672 | 6.50 | 0.590 |" in table
    assert table in capsys.readouterr().out
    commands = (out / "command.txt").read_text().splitlines()
    assert commands[:4] == [f"python -m kxnet.eval S={s}" for s in (21, 0, 5, 19)]
    assert commands[4] == f"python experiments/report.py table3 {sweep} --out {out}"
    summary = json.loads((out / "report.json").read_text())
    assert [run["config"]["stages"] for run in summary["runs"]] == [21, 0, 5, 19]
    assert all("records" not in run for run in summary["runs"])


def test_table3_refuses_runs_that_are_not_the_ablation(tmp_path, script, capsys):
    _write(tmp_path / "a", _payload("KXNet (S=5)", "aniso", 4, 5, {("Set14", 0): 25.0}))
    assert script.main(["table3", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"error: {tmp_path / 'a' / 'results.json'}: a aniso x4 run, but this table is aniso x2"
    )
    _write(tmp_path / "b", _payload("KXNet (S=5)", "aniso", 2, 5, {("Set5", 0): 25.0}))
    assert script.main(["table3", str(tmp_path / "b")]) == 2
    assert "no Set14 at noise 0" in capsys.readouterr().err
    _write(tmp_path / "c" / "0", _payload("KXNet (S=5)", "aniso", 2, 5, {("Set14", 0): 25.0}))
    _write(tmp_path / "c" / "1", _payload("KXNet (S=5)", "aniso", 2, 5, {("Set14", 0): 26.0}))
    assert script.main(["table3", str(tmp_path / "c")]) == 2
    assert "a second run with S = 5" in capsys.readouterr().err
    assert script.main(["table3", str(tmp_path / "nothing")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_table2_puts_each_paper_row_before_ours_in_blocks_per_noise(tmp_path, script):
    cells = {(d, n): 20.0 + n / 10 for d in ("Set5", "Set14") for n in (0, 15)}
    for scale in (2, 4):
        _write(tmp_path / "bicubic" / str(scale), _payload("Bicubic", "aniso", scale, 0, cells))
        _write(
            tmp_path / "kxnet" / str(scale),
            _payload("KXNet (S=19)", "aniso", scale, 19, cells),
        )
    out = tmp_path / "out"
    args = ["table2", str(tmp_path / "bicubic"), str(tmp_path / "kxnet"), "--out", str(out)]
    assert script.main(args) == 0
    rows = _csv(out / "table.csv")
    assert list(rows[0])[:6] == [
        "method",
        "setting",
        "scale",
        "noise",
        "Urban100_psnr",
        "Urban100_ssim",
    ]
    assert list(rows[0])[-2:] == ["Set5_psnr", "Set5_ssim"]
    order = [(r["method"], r["scale"], r["noise"]) for r in rows]
    block = ["Bicubic (paper)", "Bicubic", "KXNet (paper)", "KXNet (S=19)"]
    assert order == [(m, str(s), n) for n in ("0.0", "15.0") for s in (2, 4) for m in block]
    paper_x4_15 = rows[12]
    assert paper_x4_15["method"] == "Bicubic (paper)"
    assert (float(paper_x4_15["Set5_psnr"]), float(paper_x4_15["Urban100_ssim"])) == (23.33, 0.469)
    assert rows[13]["Urban100_psnr"] == "" and float(rows[13]["Set5_psnr"]) == 21.5
    table = (out / "table.md").read_text()
    assert table.index("noise σ = 0**") < table.index("noise σ = 15**")
    assert (
        "| KXNet (paper) | x2 | 28.33 | 0.8627 | 30.21 | 0.8456 | 31.14 | 0.8672 | 34.59 | 0.9315 |"
        in table
    )
    assert "| KXNet (S=19) | x2 | – | – | – | – | 20.00 | 0.5000 | 20.00 | 0.5000 |" in table


def test_runs_on_other_datasets_of_one_method_share_its_row(tmp_path, script, capsys):
    _write(tmp_path / "a", _payload("Bicubic", "iso", 2, 0, {("Set5", 0): 29.0}))
    _write(tmp_path / "b", _payload("Bicubic", "iso", 2, 0, {("Urban100", 0): 24.0}))
    out = tmp_path / "out"
    assert script.main(["table1", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    ours = [r for r in _csv(out / "table.csv") if r["method"] == "Bicubic"]
    assert len(ours) == 1
    assert (ours[0]["Urban100_psnr"], ours[0]["Set5_psnr"]) == ("24.0", "29.0")
    _write(tmp_path / "c", _payload("Bicubic", "iso", 2, 0, {("Set5", 0): 28.0}))
    assert script.main(["table1", str(tmp_path / "a"), str(tmp_path / "c"), "--no-paper"]) == 2
    assert "on Set5 is in another of the runs too" in capsys.readouterr().err


def test_table1_refuses_a_setting2_run(tmp_path, script, capsys):
    _write(tmp_path / "r", _payload("Bicubic", "aniso", 2, 0, {("Set5", 0): 27.0}))
    assert script.main(["table1", str(tmp_path / "r"), "--no-paper"]) == 2
    assert "but table1 is Setting 1 (iso)" in capsys.readouterr().err


def test_table4_lists_seconds_beside_the_papers(tmp_path):
    _write(tmp_path / "r", _payload("KXNet (S=19)", "aniso", 2, 19, {("Set5", 0): 34.0}, 0.25))
    files = report.paper_table("table4", report.load_results([tmp_path]), PAPER)
    rows = _csv_text(files["table.csv"])
    assert [(r["method"], float(r["seconds"])) for r in rows] == [
        ("IKC (paper)", 2.15),
        ("DAN (paper)", 0.52),
        ("KXNet (paper)", 0.38),
        ("KXNet (S=19)", 0.25),
    ]
    assert rows[-1]["device"] == "cpu (test)"
    assert "| KXNet (S=19) | 0.250 | cpu (test) |" in files["table.md"]


def _csv_text(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_run_tables_show_each_stage_and_kernel_error():
    payload = _payload("KXNet (S=2)", "iso", 3, 2, {("Set5", 0): 30.0, ("Urban100", 0): 25.0})
    files = report.run_files(payload)
    assert set(files) == {"results.json", "table.md", "table.csv", "stages.csv", "kernels.csv"}
    stages = _csv_text(files["stages.csv"])
    assert [(r["dataset"], int(r["stage"]), float(r["psnr_y"])) for r in stages] == [
        ("Set5", 0, 28.0),
        ("Set5", 1, 29.0),
        ("Set5", 2, 30.0),
        ("Urban100", 0, 23.0),
        ("Urban100", 1, 24.0),
        ("Urban100", 2, 25.0),
    ]
    markdown = files["table.md"]
    assert "| Stage t | Urban100 | Set5 |" in markdown
    assert "| 1 | 24.00 | 29.00 |" in markdown
    assert "| x3 | 0 | Set5 | 0.002000 | 32.00 |" in markdown
    assert "| Method | Scale | Urban100 PSNR | Urban100 SSIM | Set5 PSNR | Set5 SSIM |" in markdown


def test_write_files_leaves_nothing_behind_on_failure(tmp_path):
    (tmp_path / "table.md").write_text("old")
    with pytest.raises(TypeError):
        report.write_files(tmp_path, {"table.md": "new", "table.csv": None})
    assert [p.name for p in tmp_path.iterdir()] == ["table.md"]
    assert (tmp_path / "table.md").read_text() == "old"
