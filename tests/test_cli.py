"""core.cli, `python -m core`: every subcommand, run as a user would (in a subprocess), and its help (in process)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from core.cli import main

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, env=None, check=True):
    import os

    out = subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, env={**os.environ, **(env or {})})
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.slow  # runs the CLI in a subprocess
def test_data_summary(dataset_factory):
    data = dataset_factory(broken=True)
    out = cli("data", "--data-dir", str(data), "--json")
    summary = json.loads(out.stdout)
    assert summary["classes"] == ["circles", "squares"]
    assert any("zero.jpg" in u[0] for u in summary["unreadable"])
    assert "unreadable (skipped)" in cli("data", "--data-dir", str(data)).stdout


@pytest.mark.slow  # runs the CLI in a subprocess
def test_augment_writes_a_grid(dataset, tmp_path):
    out_png = tmp_path / "grid.png"
    cli("augment", "--data-dir", str(dataset), "-n", "4", "-o", str(out_png))
    assert Image.open(out_png).size == (2 * 150 + 4, 2 * 150 + 4)


@pytest.mark.slow  # runs the CLI in a subprocess
def test_train_evaluate_predict(dataset, tmp_path):
    models = tmp_path / "models"
    out = cli("train", "--level", "1", "--data-dir", str(dataset), "--models-dir", str(models), "--epochs", "2",
              "--image-size", "32", "--batch-size", "8")
    assert "Saved level1-scratch-" in out.stdout
    assert "epoch 2/2" in out.stderr  # the progress report
    result = json.loads(cli("evaluate", "level1", "--data-dir", str(dataset), "--models-dir", str(models),
                            "--json").stdout)
    card = json.loads(next(models.glob("*.json")).read_text())
    assert result["n"] == 12 and result["accuracy"] == card["metrics"]["val_accuracy"]  # the file matches its card
    assert sum(map(sum, result["confusion_matrix"])) == 12
    assert sum(row[i] for i, row in enumerate(result["confusion_matrix"])) == round(12 * result["accuracy"])
    text = cli("evaluate", "level1", "--data-dir", str(dataset), "--models-dir", str(models)).stdout
    assert "confusion matrix" in text
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    out = cli("predict", "level1", str(dataset / "validation/circles/circles.0.jpg"), str(bad),
              "--models-dir", str(models), "--json", check=False)
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert set(lines[0]["probabilities"]) == {"circles", "squares"}
    assert "bad.jpg" in lines[1]["error"] and out.returncode == 1
    assert "level1-scratch" in cli("models", "--models-dir", str(models)).stdout


@pytest.mark.slow  # runs the CLI in a subprocess
def test_errors_are_one_line_not_tracebacks(tmp_path):
    out = cli("data", "--data-dir", str(tmp_path / "missing"), check=False)
    assert out.returncode == 2 and out.stderr == f"error: {tmp_path / 'missing'} is not a folder.\n"
    out = cli("train", "--level", "3", "--data-dir", str(tmp_path / "missing"), check=False)
    assert out.returncode == 2 and out.stderr.endswith(f"error: {tmp_path / 'missing'} is not a folder.\n")
    out = cli("train", "--level", "1", "--augment", "wild", "--data-dir", str(tmp_path), check=False)
    assert out.returncode == 2 and out.stderr.startswith("error: Unknown augmentation preset 'wild'; choose from")


def help_text(capsys, *args) -> str:
    """What `python -m core ARGS --help` prints, from core.cli.main in this process."""
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_help_comes_from_the_registries(capsys, monkeypatch):
    from core.levels import all_levels

    monkeypatch.setenv("COLUMNS", "80")  # argparse wraps to the terminal; a subprocess's pipe gets 80
    top = help_text(capsys)
    assert "SUPPRESS" not in top and "worker" not in top
    train_help = " ".join(help_text(capsys, "train").split())
    for level in all_levels():
        assert f"{level.key}: {level.name}" in train_help
        assert (f"{level.epochs} for level {level.key}" in train_help) == level.trains  # level 0 has no epochs
    assert "--epochs3" in help_text(capsys, "bench")


@pytest.mark.slow  # runs the CLI in a subprocess
def test_bench_small(dataset, tmp_path):
    out_dir = tmp_path / "bench"
    cli("bench", "--data-dir", str(dataset), "--levels", "1,2,3", "--epochs1", "1", "--epochs2", "1", "--epochs3", "1",
        "--backbone", "mobilenet_025", "--weights", "none", "--vgg16-subset", "3", "--out", str(out_dir))
    report = json.loads((out_dir / "report.json").read_text())
    assert report["machine"]["matmul_gflops"] > 0
    assert set(report["levels"]) == {"1", "2", "3"}
    assert report["levels"]["2"]["extract_images_per_s"] > 0
    assert report["levels"]["3"]["val_accuracy_reloaded"] == report["levels"]["3"]["val_accuracy"]
    check = report["random_weights_check"]
    assert check["backbone"] == "vgg16" and set(check["levels"]) == {"2", "3"}
    assert 0 < check["extract_fraction_of_matmul"] < 1.5
    assert "| level |" in (out_dir / "report.md").read_text()
    assert report["machine"]["device"].startswith(("CPU only", "1 x", "2 x", "4 x", "8 x"))
    for level in ("1", "2", "3"):  # training throughput, as a share of the machine's matmul rate
        row = report["levels"][level]
        assert row["train_images_per_s"] > 0 and 0 < row["train_fraction_of_matmul"] < 1.5
        # The Train page's estimate beside the time taken: a small run still costs its seconds of setup.
        assert row["estimated_seconds"] >= 1 and f"{row['train_seconds']:.0f} ({row['estimated_seconds']:.0f})" in \
            (out_dir / "report.md").read_text()
    assert report["levels"]["1"]["train_gflops_per_image"] > report["levels"]["2"]["train_gflops_per_image"]
    assert "training img/s" in (out_dir / "report.md").read_text()
