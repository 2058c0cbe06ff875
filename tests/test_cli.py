"""The README's main job: ``invstable demo`` runs with no files and writes its figure."""

import subprocess
import sys

import pytest

from invstable.cli import main


def test_demo_prints_a_table_and_writes_a_png(tmp_path, capsys):
    out = tmp_path / "figures" / "demo.png"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for method in ("FBP (ramp)", "FBP (Hann)", "Tikhonov (identity)", "Tikhonov (gradient)"):
        assert method in printed
    assert "ct-30" in printed and "blur-g2" in printed
    assert str(out) in printed
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["demo.png"]  # no temporary file left behind


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "invstable.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout and "dataset" in result.stdout


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_unknown_command_is_an_error():
    with pytest.raises(SystemExit):
        main(["reconstruct-everything"])
