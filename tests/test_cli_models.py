"""`invstable train` and `invstable reconstruct` end to end in a temporary directory."""

import argparse
import json

import h5py
import numpy as np
import pytest
import tifffile
import torch

from invstable.cli import build_parser, main
from invstable.data import shepp_logan
from invstable.models import load_model
from invstable.operators import ParallelBeamCT


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "tiny.safetensors"
    code = main(["train", "--task", "ct-30", "--out", str(out), "--steps", "2", "--iterations", "1", "--channels", "2",
                 "--depth", "1", "--init-degree", "5", "--validation-count", "2", "--validate-every", "1",
                 "--batch-size", "2", "--no-progress", "--device", "cpu"])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def sinogram(tmp_path_factory):
    op = ParallelBeamCT(128, 30)
    x = shepp_logan(128)[None]
    y = op.A(x)[0, 0].numpy()
    path = tmp_path_factory.mktemp("input") / "sino.npy"
    np.save(path, y)
    return path


def _json_line(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_train_writes_a_loadable_model_with_its_record(trained):
    model = load_model(trained)
    assert model.family == "gradient_flow" and model.iterations == 1
    from invstable.models import model_info

    info = model_info(trained)
    assert info["training"]["steps"] == 2 and "invstable train" in info["training"]["command"]


@pytest.mark.parametrize("suffix", [".png", ".npy", ".tiff", ".h5"])
def test_reconstruct_with_a_model_file_in_every_output_format(trained, sinogram, tmp_path, capsys, suffix):
    out = tmp_path / f"x{suffix}"
    assert main(["reconstruct", "--operator", "ct", "--angles", "30", "--input", str(sinogram), "--method",
                 str(trained), "--out", str(out)]) == 0
    record = _json_line(capsys)
    assert record["shape"] == [128, 128] and record["lipschitz_bound"] > 0
    if suffix == ".npy":
        x = np.load(out)
        want = load_model(trained)(torch.from_numpy(np.load(sinogram)).float()[None, None])[0, 0]
        assert np.allclose(x, want.detach().numpy(), atol=1e-5)
    elif suffix == ".tiff":
        assert tifffile.imread(out).shape == (128, 128)
    elif suffix == ".h5":
        with h5py.File(out) as fh:
            assert fh["x"].shape == (128, 128)
    else:
        from skimage import io

        assert io.imread(out).shape == (128, 128)


@pytest.mark.parametrize("suffix", [".tiff", ".h5"])
def test_reconstruct_reads_tiff_and_hdf5(sinogram, tmp_path, capsys, suffix):
    y = np.load(sinogram)
    src = tmp_path / f"y{suffix}"
    if suffix == ".tiff":
        tifffile.imwrite(src, y.astype(np.float32))
    else:
        with h5py.File(src, "w") as fh:
            fh["y"] = y
    assert main(["reconstruct", "--operator", "ct", "--angles", "30", "--input", str(src), "--method", "fbp",
                 "--out", str(tmp_path / "x.npy")]) == 0
    assert np.load(tmp_path / "x.npy").shape == (128, 128)


def test_reconstruct_with_tikhonov_fixed_and_automatic_alpha(sinogram, tmp_path, capsys):
    base = ["reconstruct", "--operator", "ct", "--angles", "30", "--input", str(sinogram), "--method", "tikhonov"]
    assert main(base + ["--alpha", "0.01", "--out", str(tmp_path / "a.npy")]) == 0
    assert _json_line(capsys)["alpha"] == [0.01]
    assert main(base + ["--noise-level", "0.05", "--out", str(tmp_path / "b.npy")]) == 0
    assert _json_line(capsys)["alpha"][0] > 0


def test_reconstruct_batches(sinogram, tmp_path, capsys):
    y = np.load(sinogram)
    np.save(tmp_path / "batch.npy", np.stack([y, y]))
    assert main(["reconstruct", "--operator", "ct", "--angles", "30", "--input", str(tmp_path / "batch.npy"),
                 "--method", "fbp", "--out", str(tmp_path / "x.npy")]) == 0
    assert np.load(tmp_path / "x.npy").shape == (2, 1, 128, 128)


@pytest.mark.parametrize("argv, message", [
    (["--input", "MISSING.npy", "--method", "fbp", "--operator", "ct", "--angles", "30"], "does not exist"),
    (["--input", "SINO", "--method", "no-such-model"], "unknown method 'no-such-model'"),
    (["--input", "SINO", "--method", "fbp", "--operator", "ct", "--angles", "60"], "measurement has shape"),
    (["--input", "SINO", "--method", "fbp"], "needs --operator"),
    (["--input", "SINO", "--method", "fbp", "--operator", "fan", "--param", "image_size=32",
      "--param", "angles=8"],
     "--method fbp inverts parallel-beam CT (--operator ct) only, got --operator fan (FanBeamCT)"),
    (["--input", "SINO", "--method", "MODEL", "--operator", "ct", "--angles", "60"], "trained for"),
    (["--input", "SINO", "--method", "fbp", "--operator", "ct", "--angles", "30", "--out", "x.gif"], "extension"),
])
def test_reconstruct_errors_are_one_clear_line(argv, message, sinogram, trained, tmp_path, capsys):
    argv = [a.replace("SINO", str(sinogram)).replace("MODEL", str(trained)).replace("MISSING", str(tmp_path / "m"))
            for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "x.npy")]
    assert main(["reconstruct"] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_unknown_model_error_lists_the_known_ones(sinogram, tmp_path, capsys):
    main(["reconstruct", "--input", str(sinogram), "--method", "ct30-nope", "--out", str(tmp_path / "x.npy")])
    assert "pretrained model" in capsys.readouterr().err


def test_every_option_of_every_command_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, (name, action.dest)


def test_models_command_lists_the_pretrained_models(capsys):
    assert main(["models"]) == 0
    assert "ct30-gradflow" in capsys.readouterr().out
