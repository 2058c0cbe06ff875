"""The README's main job (``invstable demo`` runs with no files and writes its figure) and the command line's
plumbing: its entry points, the train defaults read from the library, which errors are reported in one line."""

import subprocess
import sys

import pytest

from invstable.cli import build_parser, main


def test_demo_prints_a_table_and_writes_a_png(tmp_path, capsys):
    out = tmp_path / "figures" / "demo.png"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for method in ("FBP (ramp)", "FBP (Hann)", "Tikhonov (identity)", "Tikhonov (gradient)"):
        assert method in printed
    assert "ct-30" in printed and "blur-g2" in printed
    rows = [line.split()[:2] for line in printed.splitlines() if "blur-ridge" in line]
    assert rows == [["blur-g2", "blur-ridge"]]  # fine-tuned for Blur-G2: run on that task only
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


def test_train_flags_take_the_library_defaults(tmp_path):
    """The defaults of `invstable train` are read from TrainConfig and UnrolledInverse, never copied."""
    import dataclasses
    import inspect

    from invstable.cli.train import model_kwargs, train_config
    from invstable.models import UnrolledInverse
    from invstable.training import TrainConfig

    args = build_parser().parse_args(["train", "--task", "ct-30", "--out", str(tmp_path / "m.safetensors")])
    config = train_config(args)
    for field in dataclasses.fields(TrainConfig):
        assert getattr(config, field.name) == field.default, field.name
    signature = inspect.signature(UnrolledInverse).parameters
    kwargs = model_kwargs(args)
    assert {"iterations", "channels", "depth", "init_alpha", "seed"} <= set(kwargs)
    resolved = {"family": UnrolledInverse.DEFAULT_FAMILY, "channels": UnrolledInverse.DEFAULT_CHANNELS}
    for name, value in kwargs.items():
        default = signature[name].default
        assert value == (resolved[name] if default is None and name in resolved else default), name


def test_a_flag_given_reaches_the_config_and_the_model(tmp_path):
    from invstable.cli.train import model_kwargs, train_config

    args = build_parser().parse_args(["train", "--task", "ct-30", "--out", str(tmp_path / "m.safetensors"),
                                      "--iterations", "3", "--batch-size", "5", "--grad-clip", "0", "--no-progress",
                                      "--init-alpha", "0.5"])
    config = train_config(args)
    assert (config.batch_size, config.grad_clip, config.progress) == (5, None, False)
    assert model_kwargs(args)["iterations"] == 3 and model_kwargs(args)["init_alpha"] == 0.5


def test_a_bug_inside_a_command_keeps_its_traceback(monkeypatch, capsys):
    """Only the user's mistakes (ValueError, OSError) are one line; a TypeError or KeyError is a bug, re-raised."""
    import invstable.cli.models as models_command

    for error in (TypeError("unsupported operand"), KeyError("shape")):
        def broken(args, error=error):
            raise error

        monkeypatch.setattr(models_command, "run", broken)
        with pytest.raises(type(error)):
            main(["models"])
    monkeypatch.setattr(models_command, "run", lambda args: (_ for _ in ()).throw(ValueError("bad --flag")))
    assert main(["models"]) == 2
    assert capsys.readouterr().err.strip() == "invstable models: error: bad --flag"


@pytest.mark.parametrize("module", ["invstable", "invstable.cli"])
def test_both_module_entry_points_run_the_command_line(module):
    result = subprocess.run([sys.executable, "-m", module, "train", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--iterations" in result.stdout
