"""HDF5 storage: round trip, determinism, damaged files rejected by name, killed writer, CLI."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from invstable.data import DatasetFileError, HDF5PairedDataset, Noise, check_dataset, dataset_info, make_dataset
from invstable.cli.dataset import main as cli
from invstable.data._hdf5 import partial_path
from invstable.operators import make_operator

from ._data_helpers import SIZE, small_ct, small_pairs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def made(tmp_path):
    pairs = small_pairs(count=12)
    result = make_dataset(tmp_path / "d.h5", pairs, task="custom", split="train", progress=False)
    return result, pairs


def test_round_trip_gives_the_on_the_fly_pairs(made):
    result, pairs = made
    assert result.count == 12 and result.resumed_from == 0 and result.path.exists()
    stored = HDF5PairedDataset(result.path, operator=pairs.operator)
    assert len(stored) == 12 and stored.checksum == result.checksum
    for i in range(12):
        x, y, sigma = stored.sample(i)
        x0, y0, sigma0 = pairs.sample(i)
        assert torch.equal(x, x0) and torch.equal(y, y0) and float(sigma) == float(sigma0)
    assert stored.noise == pairs.noise
    assert stored.operator().config() == pairs.operator.config()
    info = check_dataset(result.path)
    assert info["checksum"] == result.checksum and info["count"] == 12
    assert info["source"] == pairs.source.config() and info["operator"] == pairs.operator.config()
    assert not partial_path(result.path).exists()
    with h5py.File(result.path) as f:  # chunked and compressed
        assert f["x"].chunks == (1, 1, SIZE, SIZE) and f["x"].compression == "gzip"


def test_same_seed_same_bytes_different_seed_different_data(tmp_path):
    a = make_dataset(tmp_path / "a.h5", small_pairs(seed=4, noise_seed=4), progress=False)
    b = make_dataset(tmp_path / "b.h5", small_pairs(seed=4, noise_seed=4), progress=False)
    c = make_dataset(tmp_path / "c.h5", small_pairs(seed=5, noise_seed=4), progress=False)
    d = make_dataset(tmp_path / "d.h5", small_pairs(seed=4, noise_seed=5), progress=False)
    assert a.checksum == b.checksum
    assert len({a.checksum, c.checksum, d.checksum}) == 3
    with h5py.File(a.path) as fa, h5py.File(b.path) as fb, h5py.File(c.path) as fc, h5py.File(d.path) as fd:
        for key in ("x", "y", "sigma"):
            assert fa[key][:].tobytes() == fb[key][:].tobytes()
        assert not np.array_equal(fa["x"][:], fc["x"][:])
        assert np.array_equal(fa["x"][:], fd["x"][:]) and not np.array_equal(fa["y"][:], fd["y"][:])


def test_reader_works_with_several_dataloader_workers(made):
    result, pairs = made
    loader = torch.utils.data.DataLoader(HDF5PairedDataset(result.path), batch_size=4, num_workers=2)
    ys = torch.cat([y for _, y in loader])
    assert torch.equal(ys, torch.stack([pairs[i][1] for i in range(12)]))


def test_existing_file_is_not_overwritten_unless_asked(made):
    result, pairs = made
    with pytest.raises(FileExistsError, match=r"d\.h5: already exists; pass overwrite=True"):
        make_dataset(result.path, pairs, task="custom", split="train", progress=False)
    again = make_dataset(result.path, pairs, task="custom", split="train", overwrite=True, progress=False)
    assert again.checksum == result.checksum
    relabelled = make_dataset(result.path, pairs, task="custom", split="test", overwrite=True, progress=False)
    assert relabelled.checksum != result.checksum  # the checksum covers the metadata too


def test_truncated_file_rejected_by_name(made):
    result, _ = made
    data = result.path.read_bytes()
    result.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetFileError, match=r"d\.h5: not a readable HDF5 file, truncated or corrupted"):
        HDF5PairedDataset(result.path)


def test_corrupted_chunk_rejected_by_name(made):
    result, _ = made
    with h5py.File(result.path) as f:
        offset = f["y"].id.get_chunk_info(5).byte_offset
    with open(result.path, "r+b") as handle:
        handle.seek(offset + 10)
        byte = handle.read(1)
        handle.seek(offset + 10)
        handle.write(bytes([byte[0] ^ 0xFF]))
    stored = HDF5PairedDataset(result.path)  # the damage is in the data, found when read
    stored[4]
    with pytest.raises(DatasetFileError, match=r"d\.h5: sample 5 cannot be read, corrupted"):
        stored[5]
    with pytest.raises(DatasetFileError, match=r"d\.h5: sample 5 cannot be read"):
        check_dataset(result.path)


def test_altered_sample_rejected_by_its_digest(made):
    result, _ = made
    with h5py.File(result.path, "r+") as f:
        f["x"][7] = f["x"][7] * 0.5
    with pytest.raises(DatasetFileError, match=r"d\.h5: sample 7 does not match its digest"):
        HDF5PairedDataset(result.path)[7]
    assert torch.is_tensor(HDF5PairedDataset(result.path)[6][0])


def test_checksum_mismatch_rejected_by_name(made):
    result, _ = made
    with h5py.File(result.path, "r+") as f:  # a consistent change of a sample and its digest
        f["digest"][2] = np.zeros(32, dtype=np.uint8)
    with pytest.raises(DatasetFileError, match=r"d\.h5: checksum mismatch: stored [0-9a-f]{16}\.\.\., content gives"):
        HDF5PairedDataset(result.path)


@pytest.mark.parametrize("field", ["sigma", "digest", "x", "y"])
def test_missing_dataset_rejected_by_name(made, field):
    result, _ = made
    with h5py.File(result.path, "r+") as f:
        del f[field]
    with pytest.raises(DatasetFileError, match=rf"d\.h5: missing field '{field}'"):
        check_dataset(result.path)


@pytest.mark.parametrize("attr, match", [("meta", r"missing field 'meta'"), ("checksum", r"missing field 'checksum'")])
def test_missing_attribute_rejected_by_name(made, attr, match):
    result, _ = made
    with h5py.File(result.path, "r+") as f:
        del f.attrs[attr]
    with pytest.raises(DatasetFileError, match=r"d\.h5: " + match):
        HDF5PairedDataset(result.path)


def test_missing_metadata_key_and_wrong_format_rejected(made):
    result, _ = made
    with h5py.File(result.path, "r+") as f:
        meta = json.loads(f.attrs["meta"])
        del meta["noise"]
        f.attrs["meta"] = json.dumps(meta)
    with pytest.raises(DatasetFileError, match=r"d\.h5: missing metadata field\(s\) \['noise'\]"):
        check_dataset(result.path)
    with h5py.File(result.path, "r+") as f:
        f.attrs["meta"] = json.dumps({"format": "something-else"})
    with pytest.raises(DatasetFileError, match=r"d\.h5: not an invstable-paired file"):
        check_dataset(result.path)


def test_operator_different_from_the_models_is_rejected(made):
    result, _ = made
    with pytest.raises(DatasetFileError, match=r"d\.h5: made with operator ct\(.* but the model expects ct\(.*\(they differ in angles\); make the dataset again"):
        HDF5PairedDataset(result.path, operator=small_ct(angles=9))
    blur = make_operator("blur", image_size=SIZE, sigma=1.0)
    with pytest.raises(DatasetFileError, match=r"but the model expects blur\(boundary=circular"):
        HDF5PairedDataset(result.path).check_operator(blur)


def test_missing_file_and_non_dataset_file(tmp_path):
    with pytest.raises(DatasetFileError, match=r"nothing\.h5: no such file"):
        HDF5PairedDataset(tmp_path / "nothing.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["a"] = np.zeros(3)
    with pytest.raises(DatasetFileError, match=r"other\.h5: missing field 'meta' \(not an invstable dataset file\)"):
        check_dataset(tmp_path / "other.h5")




KILL_SCRIPT = r"""
import sys, time
from invstable.data import EllipsePhantoms, Noise, PairedDataset, make_dataset
from invstable.operators import make_operator

class StopAt(EllipsePhantoms):
    def __getitem__(self, index):
        if index == 40:
            print("writing", flush=True)
            time.sleep(120)
        return super().__getitem__(index)

source = StopAt(16, count=60, seed=3)
pairs = PairedDataset(source, make_operator("ct", image_size=16, angles=7), Noise(0.05, relative=True), seed=3)
make_dataset(sys.argv[1], pairs, task="custom", progress=False)
"""


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_killed_writer_leaves_no_file_that_passes_and_resume_gives_the_same_bytes(tmp_path):
    out = tmp_path / "killed.h5"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env(), text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "writing", proc.stderr.read()
        assert proc.poll() is None, "the writer ended before it was killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert not out.exists()
    assert partial_path(out).exists()
    with pytest.raises(DatasetFileError, match=r"killed\.h5: no such file \(an unfinished make left \.killed\.h5\.partial"):
        check_dataset(out)
    with pytest.raises(DatasetFileError, match=r"\.killed\.h5\.partial: (incomplete: \d+ of 60|not a readable)"):
        check_dataset(partial_path(out))

    pairs = small_pairs(count=60, seed=3, noise_seed=3)
    resumed = make_dataset(out, pairs, task="custom", progress=False)
    assert resumed.resumed_from == 32  # two blocks of 16 were complete when the writer hung at sample 40
    assert not partial_path(out).exists()
    fresh = make_dataset(tmp_path / "fresh.h5", small_pairs(count=60, seed=3, noise_seed=3), task="custom",
                         progress=False)
    assert check_dataset(out)["checksum"] == fresh.checksum == resumed.checksum


def test_killed_cli_make_at_a_random_moment(tmp_path):
    out = tmp_path / "cli.h5"
    args = [sys.executable, "-m", "invstable.cli.dataset", "dataset", "make", "--task", "custom", "--operator", "ct",
            "--param", f"image_size={SIZE}", "--param", "angles=7", "--noise-level", "0.05", "--relative-noise",
            "--source", "ellipses", "--source-param", f"size={SIZE}", "--source-param", "seed=11",
            "--count", "3000", "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    deadline = time.monotonic() + 60
    while not partial_path(out).exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)
    was_running = proc.poll() is None
    proc.kill()
    proc.wait(timeout=30)
    if out.exists():  # the make won the race: then the file must be whole
        assert not was_running
        check_dataset(out)
    else:
        assert partial_path(out).exists()
        with pytest.raises(DatasetFileError):
            check_dataset(partial_path(out))
    assert was_running, "the make finished before it could be killed; raise --count"


def test_cli_check_and_info(made, tmp_path, capsys):
    result, _ = made
    assert cli(["dataset", "check", str(result.path)]) == 0
    assert f"{result.path}: ok, 12 pairs, sha256 {result.checksum}" in capsys.readouterr().out
    assert cli(["dataset", "info", str(result.path)]) == 0
    out = capsys.readouterr().out
    assert "pairs: 12" in out and "operator: ct" in out and result.checksum in out
    assert cli(["dataset", "info", "--json", str(result.path)]) == 0
    assert json.loads(capsys.readouterr().out)["checksum"] == result.checksum

    bad = tmp_path / "bad.h5"
    bad.write_bytes(result.path.read_bytes()[:1000])
    assert cli(["dataset", "check", str(result.path), str(bad)]) == 1
    captured = capsys.readouterr()
    err_lines = captured.err.strip().splitlines()
    assert len(err_lines) == 1 and err_lines[0].startswith(f"{bad}: not a readable HDF5 file")
    assert cli(["dataset", "info", str(bad)]) == 1


def test_cli_make_protocol_split_and_errors(tmp_path, capsys):
    out = tmp_path / "val.h5"
    code = cli(["dataset", "make", "--task", "blur-g2", "--split", "train", "--count", "3", "--seed", "5",
                "--out", str(out), "--no-progress"])
    assert code == 0
    info = dataset_info(out)
    assert info["task"] == "blur-g2" and info["split"] == "train" and info["count"] == 3
    assert info["source"]["params"]["seed"] == 5 and info["source"]["params"]["region"] == "train"
    assert info["noise"] == Noise(0.01).config() and info["operator"]["name"] == "blur"
    capsys.readouterr()
    assert cli(["dataset", "make", "--task", "ct-30", "--out", str(tmp_path / "x.h5")]) == 2
    assert "--task ct-30 needs --split" in capsys.readouterr().err
    assert cli(["dataset", "make", "--task", "ct-30", "--split", "test", "--seed", "3",
                "--out", str(tmp_path / "x.h5")]) == 2
    assert "--seed only applies to --split train" in capsys.readouterr().err
    assert cli(["dataset", "make", "--task", "custom", "--out", str(tmp_path / "x.h5")]) == 2
    assert "--task custom needs --operator, --noise-level, --source" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()


class _FailAt(torch.utils.data.Dataset):
    """An ellipse source whose item ``fail`` raises, to interrupt a make in-process."""

    def __init__(self, source, fail):
        self.source, self.fail = source, fail

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        if index == self.fail:
            raise RuntimeError("interrupted")
        return self.source[index]

    def config(self):
        return self.source.config()


def _interrupted(out, *, count=40, fail=20):
    pairs = small_pairs(count=count, seed=2, noise_seed=2)
    pairs.source = _FailAt(pairs.source, fail)
    with pytest.raises(RuntimeError, match="interrupted"):
        make_dataset(out, pairs, progress=False)
    assert not out.exists() and partial_path(out).exists()


def test_resume_rewrites_from_the_first_damaged_sample(tmp_path):
    out = tmp_path / "r.h5"
    _interrupted(out)
    with h5py.File(partial_path(out), "r+") as f:
        assert int(f.attrs["n_written"]) == 16
        f["y"][5] = f["y"][5] + 1.0  # damage a sample the partial file claims to hold
    resumed = make_dataset(out, small_pairs(count=40, seed=2, noise_seed=2), progress=False)
    assert resumed.resumed_from == 5
    fresh = make_dataset(tmp_path / "f.h5", small_pairs(count=40, seed=2, noise_seed=2), progress=False)
    assert resumed.checksum == fresh.checksum


def test_partial_file_of_other_settings_is_not_resumed(tmp_path):
    out = tmp_path / "r.h5"
    _interrupted(out)
    with pytest.warns(UserWarning, match=r"\.r\.h5\.partial: cannot resume, it was started with other settings"):
        other = make_dataset(out, small_pairs(count=40, seed=2, noise_seed=9), progress=False)
    assert other.resumed_from == 0
    _interrupted(tmp_path / "s.h5")
    restarted = make_dataset(tmp_path / "s.h5", small_pairs(count=40, seed=2, noise_seed=2), resume=False,
                             progress=False)
    assert restarted.resumed_from == 0 and check_dataset(restarted.path)["checksum"] == restarted.checksum


def test_make_refuses_bad_arguments(tmp_path):
    pairs = small_pairs(count=4)
    with pytest.raises(ValueError, match=r"count must be an int in \[1, 4\] \(the size of the source\), got 5"):
        make_dataset(tmp_path / "a.h5", pairs, count=5, progress=False)
    with pytest.raises(FileNotFoundError, match=r"missing: folder does not exist"):
        make_dataset(tmp_path / "missing" / "a.h5", pairs, progress=False)
    pairs.fixed_noise = False
    with pytest.raises(ValueError, match="one noise draw per pair; pass a PairedDataset with fixed_noise=True"):
        make_dataset(tmp_path / "a.h5", pairs, progress=False)
    assert list(tmp_path.iterdir()) == []
