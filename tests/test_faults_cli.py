"""Faults a new user meets (issue 15): concurrent writers, files that are not what their name says, outputs
that would replace a file, flags that do nothing, devices that are not there. Each test names its defect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from invstable.cli import main
from invstable.data import (DatasetFileError, EllipsePhantoms, ImageFolder, ImageReadError, check_dataset,
                            make_dataset)
from invstable.data._hdf5 import lock_path, partial_path
from invstable.data._memory import InsufficientMemoryError, format_bytes
from invstable.operators import ParallelBeamCT

from ._data_helpers import SIZE, small_pairs

ROOT = Path(__file__).resolve().parents[1]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# ------------------------------------------------------------------ 1: two makes to one file
class _Gate(torch.utils.data.Dataset):
    """A source that stops at item ``at`` until ``go`` is set, announcing it with ``reached``."""

    def __init__(self, source, at):
        self.source, self.at = source, at
        self.reached, self.go = threading.Event(), threading.Event()

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        if index == self.at:
            self.reached.set()
            assert self.go.wait(60)
        return self.source[index]

    def config(self):
        return self.source.config()


def test_a_second_make_to_the_same_file_is_refused_while_the_first_writes(tmp_path):
    out = tmp_path / "d.h5"
    first = small_pairs(count=40, seed=4, noise_seed=4)
    first.source = _Gate(first.source, 20)
    result = {}
    writer = threading.Thread(target=lambda: result.update(r=make_dataset(out, first, progress=False)))
    writer.start()
    try:
        assert first.source.reached.wait(60)
        assert partial_path(out).exists() and lock_path(out).exists()
        with pytest.raises(DatasetFileError, match=rf"d\.h5: another make is writing this file now \(process "
                                                   rf"{os.getpid()}"):
            make_dataset(out, small_pairs(count=40, seed=4, noise_seed=4), progress=False, resume=False)
        with pytest.raises(DatasetFileError, match="another make is writing"):
            make_dataset(out, small_pairs(count=40, seed=4, noise_seed=4), progress=False, overwrite=True)
        assert partial_path(out).exists()  # the refused makes left the first one's partial file alone
    finally:
        first.source.go.set()
        writer.join(60)
    assert check_dataset(out)["checksum"] == result["r"].checksum  # the reported success is a whole file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5"]  # no lock or partial file left behind


HOLD_SCRIPT = r"""
import sys, time
from invstable.data import EllipsePhantoms, Noise, PairedDataset, make_dataset
from invstable.operators import make_operator

class Hold(EllipsePhantoms):
    def __getitem__(self, index):
        if index == 20:
            print("writing", flush=True)
            time.sleep(120)
        return super().__getitem__(index)

pairs = PairedDataset(Hold(16, count=40, seed=5), make_operator("ct", image_size=16, angles=7),
                      Noise(0.05, relative=True), seed=5)
make_dataset(sys.argv[1], pairs, task="custom", progress=False)
"""


def test_a_make_in_another_process_holds_the_lock_until_it_dies(tmp_path, capsys):
    out = tmp_path / "p.h5"
    proc = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env(), text=True)
    try:
        assert proc.stdout.readline().strip() == "writing", proc.stderr.read()
        args = ["dataset", "make", "--task", "custom", "--operator", "ct", "--param", f"image_size={SIZE}",
                "--param", "angles=7", "--noise-level", "0.05", "--relative-noise", "--source", "ellipses",
                "--source-param", f"size={SIZE}", "--source-param", "seed=5", "--noise-seed", "5", "--count", "40",
                "--out", str(out), "--no-progress"]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"another make is writing this file now (process {proc.pid}" in err
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert not out.exists() and lock_path(out).exists()  # killed: its lock file stays, but nobody holds it
    assert main(args) == 0  # the kernel released the dead writer's lock: this make resumes its partial file
    assert "resumed at 16" in capsys.readouterr().out
    check_dataset(out)
    assert not lock_path(out).exists() and not partial_path(out).exists()


def test_make_never_replaces_the_file_its_source_reads(tmp_path):
    images = tmp_path / "images.h5"
    with h5py.File(images, "w") as f:
        f["x"] = np.random.default_rng(0).random((3, SIZE, SIZE))
    from invstable.data import HDF5Images, Noise, PairedDataset
    from invstable.operators import make_operator

    pairs = PairedDataset(HDF5Images(images, key="x"), make_operator("ct", image_size=SIZE, angles=7), Noise(0.1),
                          seed=0)
    with pytest.raises(ValueError, match=r"images\.h5: is the file the source reads"):
        make_dataset(images, pairs, overwrite=True, progress=False)
    assert h5py.File(images, "r")["x"].shape == (3, SIZE, SIZE)


# ------------------------------------------------------------------ dataset make: folders, stray flags, memory
def _custom(out, *extra):
    return ["dataset", "make", "--task", "custom", "--operator", "ct", "--param", f"image_size={SIZE}",
            "--param", "angles=7", "--noise-level", "0.05", "--source", "ellipses", "--source-param", f"size={SIZE}",
            "--source-param", "seed=1", "--count", "2", "--out", str(out), "--no-progress", *extra]


def test_dataset_make_creates_the_output_folder_as_the_other_commands_do(tmp_path, capsys):
    out = tmp_path / "new" / "deeper" / "d.h5"
    assert main(_custom(out)) == 0
    check_dataset(out)


@pytest.mark.parametrize("flag", [["--param", "angles=9"], ["--source-param", "size=8"], ["--relative-noise"],
                                  ["--noise-seed", "3"]])
def test_dataset_make_refuses_custom_flags_with_a_protocol_task(flag, tmp_path, capsys):
    code = main(["dataset", "make", "--task", "ct-30", "--split", "validation", "--count", "1",
                 "--out", str(tmp_path / "v.h5"), "--no-progress", *flag])
    assert code == 2
    assert f"{flag[0]} only applies to --task custom" in capsys.readouterr().err


def test_unknown_operator_and_source_parameters_name_the_ones_taken(tmp_path, capsys):
    assert main(_custom(tmp_path / "d.h5", "--param", "bogus=3")) == 2
    err = capsys.readouterr().err
    assert "operator 'ct' has no parameter 'bogus'" in err and "image_size, angles" in err and "_ct()" not in err
    assert main(_custom(tmp_path / "d.h5", "--source-param", "colour=3")) == 2
    err = capsys.readouterr().err
    assert "source 'ellipses' has no parameter 'colour'" in err and "size, count, seed" in err


@pytest.mark.parametrize("flag, value, message", [
    ("--param", "angles=1.5", "angles=1.5 is a single non-integer value"),
    ("--source-param", "seed=1.5", "seed must be an int"),
])
def test_a_value_of_the_wrong_type_is_the_users_mistake_named_by_its_flag(flag, value, message, tmp_path, capsys):
    """The operator or source refuses it with a TypeError; the command reports it in one line naming the flag
    (a TypeError from the library itself is a bug and keeps its traceback)."""
    assert main(_custom(tmp_path / "d.h5", flag, value)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"invstable dataset make: error: {flag} ")
    assert value in err and message in err


def test_reconstruct_names_the_flag_of_a_value_of_the_wrong_type(sino, tmp_path, capsys):
    argv = _fbp(sino, tmp_path / "x.npy", "--param", "angles=1.5")
    del argv[argv.index("--angles"):argv.index("--angles") + 2]  # else --angles 7 would replace the value
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("invstable reconstruct: error: --param ") and "angles=1.5 is a single non-integer" in err
    assert not (tmp_path / "x.npy").exists()


def test_dataset_make_of_a_huge_image_is_refused_before_allocating(tmp_path, capsys):
    args = ["dataset", "make", "--task", "custom", "--operator", "ct", "--param", "image_size=30000",
            "--param", "angles=30", "--noise-level", "0.05", "--source", "ellipses", "--source-param", "size=30000",
            "--source-param", "seed=0",
            "--count", "1", "--out", str(tmp_path / "big.h5"), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "30000 x 30000" in err and "GiB of memory" in err and "available" in err
    assert not list(tmp_path.iterdir())
    with pytest.raises(InsufficientMemoryError, match=r"ellipse phantom needs about 60\.3 GiB"):
        EllipsePhantoms(30000, count=1, seed=0)
    assert format_bytes(1536) == "1.5 KiB" and format_bytes(12) == "12 B"


# ------------------------------------------------------------------ reading: one reader for every format
@pytest.fixture(scope="module")
def sino(tmp_path_factory):
    op = ParallelBeamCT(SIZE, 7)
    from invstable.data import shepp_logan

    y = op.A(shepp_logan(SIZE)[None])[0, 0].numpy()
    path = tmp_path_factory.mktemp("sino") / "y.npy"
    np.save(path, y)
    return path


def _fbp(inp, out, *extra):
    return ["reconstruct", "--operator", "ct", "--angles", "7", "--image-size", str(SIZE), "--method", "fbp",
            "--input", str(inp), "--out", str(out), *extra]


def _last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("suffix", [".png", ".tif", ".npy", ".h5"])
def test_integer_input_is_scaled_by_one_rule_whatever_the_format(suffix, sino, tmp_path, capsys):
    y = np.load(sino)
    counts = np.round((y - y.min()) / (y.max() - y.min()) * 65535).astype(np.uint16)
    src = tmp_path / f"y{suffix}"
    if suffix == ".png":
        import imageio.v3 as iio

        iio.imwrite(src, counts)
    elif suffix == ".tif":
        import tifffile

        tifffile.imwrite(src, counts)
    elif suffix == ".npy":
        np.save(src, counts)
    else:
        with h5py.File(src, "w") as f:
            f["y"] = counts
    np.save(tmp_path / "f.npy", counts / 65535.0)
    assert main(_fbp(src, tmp_path / "x.npy")) == 0
    assert _last_json(capsys)["input_scaling"] == "uint16 divided by 65535"
    assert main(_fbp(tmp_path / "f.npy", tmp_path / "ref.npy")) == 0
    assert "input_scaling" not in _last_json(capsys)  # floats are taken as they are
    np.testing.assert_allclose(np.load(tmp_path / "x.npy"), np.load(tmp_path / "ref.npy"), rtol=1e-5, atol=1e-6)


def test_the_scaling_rule_is_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["reconstruct", "--help"])
    assert "divided by the largest value of their dtype" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("content, suffix, message", [
    (b"", ".npy", "the file is empty (0 bytes)"),
    (b"", ".png", "the file is empty (0 bytes)"),
    (b"hello, not an image\n", ".png", "not a PNG file (it starts with b'hello, n', a text file)"),
    (b"hello", ".tif", "not a TIF file"),
    (b"\x93NUMPY\x01\x00", ".npy", "cannot be read as NPY"),
    (b"", ".h5", "the file is empty (0 bytes)"),
    (b"text", ".h5", "not a readable HDF5 file"),
])
def test_unreadable_input_is_one_clear_line(content, suffix, message, tmp_path, capsys):
    src = tmp_path / f"in{suffix}"
    src.write_bytes(content)
    assert main(_fbp(src, tmp_path / "x.npy")) == 2
    err = capsys.readouterr().err
    assert message in err and str(src) in err and len(err.strip().splitlines()) == 1
    assert "plugin" not in err and "pip install" not in err and "Traceback" not in err


def test_complex_input_is_called_complex_in_every_format(sino, tmp_path, capsys):
    y = np.load(sino).astype(np.complex64)
    np.save(tmp_path / "c.npy", y)
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f["y"] = y
    import tifffile

    tifffile.imwrite(tmp_path / "c.tif", y)
    for src in (tmp_path / "c.npy", tmp_path / "c.h5", tmp_path / "c.tif"):
        assert main(_fbp(src, tmp_path / "x.npy")) == 2
        err = capsys.readouterr().err
        assert "complex" in err and "shape" not in err


def test_missing_hdf5_key_is_named_with_the_keys_there(sino, tmp_path, capsys):
    src = tmp_path / "y.h5"
    with h5py.File(src, "w") as f:
        f["y"] = np.load(sino)
        f["group/inner"] = np.load(sino)
    assert main(_fbp(src, tmp_path / "x.npy", "--key", "zzz")) == 2
    err = capsys.readouterr().err
    assert "has no dataset 'zzz'" in err and "'y'" in err and "'group/inner'" in err
    assert main(_fbp(src, tmp_path / "x.npy", "--key", "group")) == 2
    assert "'group' is a group, not a dataset" in capsys.readouterr().err
    assert main(_fbp(src, tmp_path / "x.npy", "--key", "group/inner")) == 0
    assert main(_fbp(sino, tmp_path / "x2.npy", "--key", "y")) == 2
    assert "--key applies to HDF5 input" in capsys.readouterr().err


def test_image_folder_closes_unreadable_files(tmp_path):
    (tmp_path / "a.png").write_text("not a png")
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (tmp_path / "c.jpg").write_bytes(b"\xff\xd8\xff" + b"0" * 40)
    folder = ImageFolder(tmp_path)
    import gc
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for i in range(len(folder)):
            with pytest.raises(ImageReadError):
                folder[i]
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


# ------------------------------------------------------------------ 7: the output never replaces a file silently
def test_reconstruct_refuses_an_existing_output_unless_overwrite(sino, tmp_path, capsys):
    out = tmp_path / "x.h5"
    with h5py.File(out, "w") as f:
        f["keep"] = np.arange(3)
    assert main(_fbp(sino, out)) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err
    with h5py.File(out, "r") as f:
        assert list(f) == ["keep"]
    assert main(_fbp(sino, out, "--overwrite")) == 0
    with h5py.File(out, "r") as f:
        assert list(f) == ["x"]


def test_reconstruct_never_writes_over_its_input(sino, tmp_path, capsys):
    before = sino.read_bytes()
    for out in (sino, sino.parent / "." / sino.name):
        assert main(_fbp(sino, out, "--overwrite")) == 2
        assert "is the input" in capsys.readouterr().err
    link = tmp_path / "link.npy"
    os.link(sino, link)
    assert main(_fbp(sino, link, "--overwrite")) == 2
    assert sino.read_bytes() == before


def test_reconstruct_creates_the_output_folder(sino, tmp_path, capsys):
    assert main(_fbp(sino, tmp_path / "a" / "b" / "x.npy")) == 0
    assert np.load(tmp_path / "a" / "b" / "x.npy").shape == (SIZE, SIZE)


# ------------------------------------------------------------------ 11: devices
@pytest.mark.parametrize("device, message", [("tpu", "'tpu' is not a torch device"),
                                             ("cuda", "CUDA is not available here")])
def test_reconstruct_on_a_missing_device_is_one_clear_line(device, message, sino, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(_fbp(sino, tmp_path / "x.npy", "--device", device)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not (tmp_path / "x.npy").exists()


# ------------------------------------------------------------------ flags that would do nothing
@pytest.mark.parametrize("method, flag", [
    ("fbp", ["--alpha", "0.1"]), ("fbp", ["--noise-level", "0.1"]), ("fbp", ["--regularizer", "gradient"]),
    ("tv", ["--filter", "hann"]), ("tv", ["--noise-level", "0.1"]), ("tikhonov", ["--filter", "hann"]),
    ("fbp", ["--preset", "ct-30"]),
])
def test_a_flag_the_method_does_not_use_is_refused(method, flag, sino, tmp_path, capsys):
    argv = _fbp(sino, tmp_path / "x.npy", *flag)
    argv[argv.index("fbp")] = method
    assert main(argv) == 2
    assert f"{flag[0]} does not apply to --method {method}" in capsys.readouterr().err


def test_unknown_operator_parameter_in_reconstruct(sino, tmp_path, capsys):
    assert main(_fbp(sino, tmp_path / "x.npy", "--param", "bogus=3")) == 2
    err = capsys.readouterr().err
    assert "operator 'ct' has no parameter 'bogus'" in err and "detectors" in err


def test_reconstruct_of_a_huge_image_is_refused_before_allocating(sino, tmp_path, capsys):
    argv = _fbp(sino, tmp_path / "x.npy")
    argv[argv.index(str(SIZE))] = "30000"
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "30000 x 30000" in err and "GiB of memory" in err


@pytest.mark.parametrize("method, flag, message", [
    ("ct30-gradflow", ["--alpha", "0.1"], "--alpha does not apply to --method ct30-gradflow (a learned model)"),
    ("ct30-gradflow", ["--filter", "hann"], "--filter does not apply to --method ct30-gradflow"),
    ("ct30-gradflow", ["--noise-level", "0.1"], "--noise-level does not apply to --method ct30-gradflow"),
    ("ct30-gradflow", ["--preset", "ct-30"], "--preset does not apply to --method ct30-gradflow"),
    ("ct30-gradflow", ["--sigma", "2"], "--sigma describes an operator: give --operator NAME"),
    ("universal", ["--alpha", "0.1"], "--alpha does not apply to --method universal (the universal regulariser)"),
])
def test_a_flag_a_model_ignores_is_refused(method, flag, message, sino, tmp_path, capsys):
    from invstable.models import list_models

    if method not in list_models():
        pytest.skip(f"{method} is not in this installation")
    argv = ["reconstruct", "--method", method, "--input", str(sino), "--out", str(tmp_path / "x.npy"), *flag]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_full_disk_is_foreseen_and_stops_the_make_resumably(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10_000, 9_000, 1_000))
    with pytest.warns(UserWarning, match=r"d\.h5: 12 pairs take up to .* before compression and 1000 B are free"):
        make_dataset(tmp_path / "d.h5", small_pairs(count=12), progress=False)
    monkeypatch.undo()

    class Full(torch.utils.data.Dataset):  # the disk fills at sample 20
        def __init__(self, source):
            self.source = source

        def __len__(self):
            return len(self.source)

        def __getitem__(self, index):
            if index == 20:
                raise OSError(28, "No space left on device")
            return self.source[index]

        def config(self):
            return self.source.config()

    pairs = small_pairs(count=40, seed=6, noise_seed=6)
    pairs.source = Full(pairs.source)
    out = tmp_path / "full.h5"
    with pytest.raises(DatasetFileError, match=r"full\.h5: the make stopped \(OSError: \[Errno 28\] No space left "
                                                r"on device\); the samples written so far are kept in "
                                                r"\.full\.h5\.partial"):
        make_dataset(out, pairs, progress=False)
    resumed = make_dataset(out, small_pairs(count=40, seed=6, noise_seed=6), progress=False)
    assert resumed.resumed_from == 16 and not lock_path(out).exists()


def test_an_hdf5_image_file_removed_after_opening_is_named(tmp_path):
    from invstable.data import HDF5Images

    path = tmp_path / "imgs.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros((2, 4, 4))
    source = HDF5Images(path, key="x")
    path.unlink()
    with pytest.raises(ImageReadError, match=r"imgs\.h5: cannot be reopened"):
        source[0]


def test_a_folder_as_input_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "dir.npy").mkdir()
    assert main(_fbp(tmp_path / "dir.npy", tmp_path / "x.npy")) == 2
    assert "is a folder; give a file" in capsys.readouterr().err
