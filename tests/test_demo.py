"""`invstable demo` says what it is doing while it runs, and replaces no file but its own figure.

The demo runs here at 32 x 32 with the baselines only (the models are left out, Tikhonov's alpha is fixed), so
these tests are fast; the full demo is run by tests/test_cli.py.
"""

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import invstable._demo as demo_module
from invstable.cli import main


@pytest.fixture
def small_demo(monkeypatch):
    monkeypatch.setattr(demo_module, "IMAGE_SIZE", 32)
    monkeypatch.setattr(demo_module, "list_models", lambda: [])
    monkeypatch.setattr(demo_module, "choose_alpha", lambda y, op, **_: torch.full((y.shape[0],), 1e-2))


def test_a_progress_line_is_printed_before_each_step(small_demo, tmp_path, capsys, monkeypatch):
    seen = []
    real_fbp = demo_module.fbp

    def spy(*args, **kwargs):  # what the user had been told when this step started
        seen.append(capsys.readouterr().err)
        return real_fbp(*args, **kwargs)

    monkeypatch.setattr(demo_module, "fbp", spy)
    assert main(["demo", "--out", str(tmp_path / "d.png")]) == 0
    assert "[1/6] ct-30: FBP (ramp)" in seen[0] and "simulating CT-30" in seen[0]
    assert "[2/6] ct-30: FBP (Hann)" in seen[1]
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert any("[6/6] blur-g2: Tikhonov (gradient)" in line for line in err)
    assert all(line.startswith("invstable demo: ") for line in err)
    assert "Tikhonov (gradient)" in captured.out and "[6/6]" not in captured.out  # the table alone on stdout


def test_quiet_prints_no_progress(small_demo, tmp_path, capsys):
    assert main(["demo", "--quiet", "--out", str(tmp_path / "d.png")]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "FBP (ramp)" in captured.out


def test_the_demo_replaces_its_own_figure_only(small_demo, tmp_path, capsys):
    mine = tmp_path / "photo.png"
    iio.imwrite(mine, np.zeros((4, 4), dtype=np.uint8))
    before = mine.read_bytes()
    assert main(["demo", "--out", str(mine)]) == 2
    err = capsys.readouterr().err
    assert "is not an earlier demo figure; pass --overwrite" in err and "[1/" not in err  # refused before running
    assert mine.read_bytes() == before
    assert main(["demo", "--out", str(tmp_path / "fig.jpg")]) == 2
    assert "the demo figure is a PNG" in capsys.readouterr().err

    figure = tmp_path / "new" / "fig.png"
    assert main(["demo", "--quiet", "--out", str(figure)]) == 0  # missing folders are created
    assert main(["demo", "--quiet", "--out", str(figure)]) == 0  # an earlier demo figure is replaced
    assert main(["demo", "--quiet", "--overwrite", "--out", str(mine)]) == 0
    assert mine.read_bytes() != before
