"""invstable.evaluate on a user's own reconstructor, and the benchmarks from a plain (non-editable) install."""

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import invstable
from invstable.data import task

TASK = "blur-g2"
QUALITY_KEYS = {"task", "count", "seconds", "psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "relative_error_mean",
                "relative_error_std"}
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def op():
    return task(TASK).operator


class ScaledAdjoint(torch.nn.Module):
    """x = c A^T y: Lipschitz constant at most c ||A|| = c (the Gaussian blur has norm 1), or a stated wrong one."""

    def __init__(self, op, c, stated=None):
        super().__init__()
        self.op, self.c, self.stated = op, c, stated

    def forward(self, y):
        return self.c * self.op.A_adjoint(y)

    def lipschitz_bound(self):
        return self.c if self.stated is None else self.stated


def test_evaluate_scores_a_plain_callable(op):
    def tikhonov(y):  # a user's closure: Tikhonov with the identity, solved by invstable
        return invstable.tikhonov(y, op, 0.01, max_iter=50)
    result = invstable.evaluate(tikhonov, task=TASK, count=2)
    assert set(result) == QUALITY_KEYS and result["task"] == TASK and result["count"] == 2
    assert all(math.isfinite(result[k]) for k in QUALITY_KEYS - {"task", "count"})
    assert 0 < result["ssim_mean"] <= 1 and result["relative_error_mean"] > 0
    adjoint = invstable.evaluate(lambda y: op.A_adjoint(y), task=TASK, count=2)
    assert set(adjoint) == QUALITY_KEYS
    assert result["psnr_mean"] != adjoint["psnr_mean"]  # the scores follow the reconstructor


def test_evaluate_with_stability_checks_the_bound(op):
    settings = {"count": 2, "stability": True, "etas": [0.05], "steps": 2, "restarts": 1}
    result = invstable.evaluate(ScaledAdjoint(op, 2.0), task=TASK, **settings)
    st = result["stability"]
    assert {"per_eta", "empirical_lipschitz", "lipschitz_bound", "violations", "clean_psnr", "settings"} <= set(st)
    assert st["lipschitz_bound"] == 2.0 and st["violations"] == 0
    assert 0 < st["empirical_lipschitz"] <= 2.0 and st["pairs_checked"] == 2 * 3  # random + two searches
    assert [row["eta"] for row in st["per_eta"]] == [0.05] and not st["settings"]["protocol"]
    assert all(math.isfinite(row["adversarial_x_psnr"]["mean"]) for row in st["per_eta"])
    wrong = invstable.evaluate(ScaledAdjoint(op, 2.0, stated=0.002), task=TASK, **settings)["stability"]
    assert wrong["violations"] == wrong["pairs_checked"]  # a certificate below the truth is caught
    plain = invstable.evaluate(lambda y: op.A_adjoint(y), task=TASK, **settings)["stability"]
    assert plain["lipschitz_bound"] is None and plain["violations"] is None


def test_evaluate_refuses_bad_reconstructors_clearly(op):
    with pytest.raises(TypeError, match="reconstructor must be a callable"):
        invstable.evaluate("fbp", task=TASK, count=1)
    with pytest.raises(ValueError, match="unknown task .ct-31.; valid tasks are"):
        invstable.evaluate(lambda y: y, task="ct-31", count=1)
    with pytest.raises(TypeError, match="must return a torch.Tensor"):
        invstable.evaluate(lambda y: y.numpy(), task=TASK, count=1)
    with pytest.raises(ValueError, match=r"returned shape \(1, 1, 64, 64\)"):
        invstable.evaluate(lambda y: torch.zeros(len(y), 1, 64, 64), task=TASK, count=1)
    with pytest.raises(ValueError, match="count must be a positive int"):
        invstable.evaluate(lambda y: y, task=TASK, count=0)
    with pytest.raises(TypeError, match="differentiable in y"):
        invstable.evaluate(lambda y: op.A_adjoint(y).detach(), task=TASK, count=1, stability=True, steps=1, restarts=1)


def test_benchmark_needs_a_results_folder_outside_the_checkout(tmp_path, monkeypatch, capsys):
    from invstable.cli import main

    monkeypatch.chdir(tmp_path)  # no benchmarks/results here
    assert main(["benchmark", "--only", "speed"]) == 2
    err = capsys.readouterr().err
    assert "no results folder: pass --results-dir DIR" in err and str(tmp_path) in err


def test_the_package_imports_nothing_from_the_checkout():
    # no sys.path changes and no `benchmarks` import anywhere in the installed package
    for path in (ROOT / "invstable").rglob("*.py"):
        text = path.read_text()
        assert "sys.path" not in text, path
        assert "import benchmarks" not in text and "from benchmarks" not in text, path


@pytest.mark.slow  # minutes on 2 shared cores: the shipped models are loaded (their spectral norms re-derived) and timed
def test_benchmark_runs_from_a_plain_install_in_another_folder(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "invstable", source / "invstable", ignore=shutil.ignore_patterns("__pycache__"))
    target, elsewhere, results = tmp_path / "site", tmp_path / "elsewhere", tmp_path / "results"
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(target), "-q", "."], cwd=source, check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "invstable", "benchmark", "--quick", "--only", "speed", "--tasks",
                           TASK, "--results-dir", str(results)], cwd=elsewhere, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    where = subprocess.run([sys.executable, "-c", "import invstable; print(invstable.__file__)"], cwd=elsewhere,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()).is_relative_to(target)  # the installed copy ran, not the checkout
    assert (results / "speed.json").is_file() and (results / "benchmarks.md").is_file()
    assert "## Speed" in (results / "benchmarks.md").read_text()
    missing = subprocess.run([sys.executable, "-m", "invstable", "benchmark", "--only", "speed"], cwd=elsewhere,
                             env=env, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "pass --results-dir" in missing.stderr
