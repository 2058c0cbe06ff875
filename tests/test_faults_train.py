"""`invstable train` and `invstable benchmark` against the faults of issue 15: a resume that would not reproduce
the run (#2), test data for training (#6), outputs replaced silently (#8), arguments checked only once the run had
started (#16), options reported by internal names (#21). Each test names its defect.

The protocol tasks fix 128 x 128 images; the one run here takes a single step of a one-layer model."""

from __future__ import annotations

import shutil

import pytest

from invstable.cli import main

TINY = ["--steps", "1", "--iterations", "1", "--channels", "2", "--depth", "1", "--init-degree", "5",
        "--validation-count", "1", "--batch-size", "1", "--no-progress", "--device", "cpu"]


def _train(out, *extra, task="blur-g2", train_count="2"):
    argv = ["train", "--task", task, "--out", str(out), *TINY, *extra]
    if train_count is not None:
        argv += ["--train-count", train_count]
    return main(argv)


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "m.safetensors"
    assert _train(out) == 0
    return out


def _snapshot(out):
    return out.read_bytes(), out.with_name(out.name + ".ckpt").read_bytes()


# ---------------------------------------------------------------------------------------------- 2: resume
@pytest.mark.parametrize("change, message", [
    ({"task": "ct-30"}, 'task: checkpoint "blur-g2", now "ct-30"'),
    ({"train_count": "4"}, "training data.pairs.count: checkpoint 2, now 4"),
    ({"extra": ("--validation-count", "2")}, "validation data.subset.count: checkpoint 1, now 2"),
])
def test_resume_refuses_another_task_or_other_data(run, capsys, change, message):
    # issue 15 #2: a blur-g2 checkpoint resumed with --task ct-30 exited 0 and labelled the model ct-30; another
    # --train-count gave other weights than an uninterrupted run
    before = _snapshot(run)
    assert _train(run, "--resume", *change.get("extra", ()), task=change.get("task", "blur-g2"),
                  train_count=change.get("train_count", "2")) == 2
    err = _error(capsys)
    assert message in err and "would not reproduce" in err
    assert _snapshot(run) == before


def test_resume_with_the_same_inputs_still_works(run):
    assert _train(run, "--resume") == 0


# ---------------------------------------------------------------------------------------------- 8: overwrite
def test_an_existing_model_or_checkpoint_is_not_replaced(run, capsys, tmp_path):
    # issue 15 #8: a new run silently replaced the model file and the checkpoint of an earlier one
    before = _snapshot(run)
    assert _train(run) == 2
    err = _error(capsys)
    assert str(run) in err and "--resume" in err and "--overwrite" in err
    assert _snapshot(run) == before
    copy = tmp_path / "m.safetensors"
    shutil.copy(run, copy)
    assert _train(copy) == 2  # the model alone is protected too
    assert _train(copy, "--overwrite") == 0
    assert _train(copy, "--overwrite", "--resume") == 2
    assert "give one of them" in _error(capsys)


def test_missing_output_folders_are_created_and_the_help_says_so(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "missing folders of --out and --checkpoint are created" in text
    assert "its missing folders are created" in text


# ---------------------------------------------------------------------------------------------- 6: test split
@pytest.fixture(scope="module")
def test_split_file(tmp_path_factory):
    from invstable.data import make_dataset, task

    path = tmp_path_factory.mktemp("data") / "blur_test.h5"
    make_dataset(path, task("blur-g2").pairs("test"), count=1, task="blur-g2", split="test", progress=False)
    return path


@pytest.mark.parametrize("flag", ["--data", "--validation-data"])
def test_dataset_files_of_the_test_split_are_refused(test_split_file, tmp_path, capsys, flag):
    # issue 15 #6: `train --data` and `--validation-data` accepted a file made with --split test
    out = tmp_path / "m.safetensors"
    assert _train(out, flag, str(test_split_file), train_count=None if flag == "--data" else "2") == 2
    err = _error(capsys)
    assert "'test' split" in err and "breaks the protocol" in err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- 16: arguments
@pytest.mark.parametrize("argv, message", [
    (["train", "--validation-count", "0"], "argument --validation-count: expected an integer >= 1, got '0'"),
    (["train", "--steps", "-1"], "argument --steps: expected an integer >= 1"),
    (["train", "--batch-size", "0"], "argument --batch-size: expected an integer >= 1"),
    (["train", "--train-count", "0"], "argument --train-count: expected an integer >= 1"),
    (["train", "--lr", "nan"], "argument --lr: expected a number > 0"),
    (["train", "--max-step", "1.5"], "argument --max-step: expected a number in (0, 1]"),
    (["train", "--final-lr-ratio", "0"], "argument --final-lr-ratio: expected a number in (0, 1]"),
    (["train", "--smoothness", "-1"], "argument --smoothness: expected a number >= 0"),
    (["train", "--init-degree", "500"], "argument --init-degree: expected an integer in [1, 200]"),
    (["train", "--seed", "-3"], "argument --seed: expected an integer >= 0"),
    (["train", "--data", "MISSING.h5"], "argument --data: 'MISSING.h5' does not exist"),
    (["train", "--out", "DIR"], "argument --out: 'DIR' is a folder"),
    (["train", "--out", "FILE/m.safetensors"], "is a file, not a folder"),
    (["benchmark", "--images", "0"], "argument --images: expected an integer >= 1, got '0'"),
    (["benchmark", "--steps", "-1"], "argument --steps: expected an integer >= 1, got '-1'"),
    (["benchmark", "--restarts", "0"], "argument --restarts: expected an integer >= 1"),
    (["benchmark", "--threads", "0"], "argument --threads: expected an integer >= 1"),
    (["benchmark", "--results-dir", "FILE"], "argument --results-dir: 'FILE' is a file, not a folder"),
    (["benchmark", "--tasks", "ct-31"], "argument --tasks: invalid choice: 'ct-31'"),
])
def test_arguments_are_checked_when_parsed(argv, message, tmp_path, capsys):
    # issue 15 #16: --validation-count 0 failed in torch.cat after training; benchmark --images 0 with "not enough
    # values to unpack"; --steps -1 and a file as --results-dir were not checked before the run started
    (tmp_path / "file").write_text("x")
    subs = {"MISSING": str(tmp_path / "missing"), "DIR": str(tmp_path), "FILE": str(tmp_path / "file")}
    argv = [next((a.replace(k, v) for k, v in subs.items() if a.startswith(k)), a) for a in argv]
    message = next((message.replace(k, v) for k, v in subs.items() if f"'{k}" in message), message)
    if argv[0] == "train":  # a tiny run before the flag checked (the last one given counts)
        argv = ["train", "--task", "blur-g2", *TINY, "--train-count", "2", *argv[1:]]
        argv += [] if "--out" in argv else ["--out", str(tmp_path / "m.safetensors")]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--data", "FILE", "--train-count", "3"], "--train-count sets the number of pairs made on the fly"),
    (["--init", "zero", "--init-alpha", "0.1"], "--init-alpha and --init-degree set the Tikhonov-like first guess"),
    (["--device", "tpu"], "device 'tpu'"),
])
def test_flags_that_would_be_ignored_or_cannot_work_are_refused_before_training(argv, message, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    argv = [a.replace("FILE", str(tmp_path / "file")) for a in argv]
    out = tmp_path / "m.safetensors"
    assert main(["train", "--task", "blur-g2", "--out", str(out), *TINY, *argv]) == 2
    assert message in _error(capsys)
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--only", "speed", "--images", "3"], "--images only apply to the stability benchmark"),
    (["--only", "speed", "--resume"], "--resume applies to the quality and stability benchmarks"),
    (["--quick"], "pass --results-dir"),
])
def test_benchmark_flags_that_would_be_ignored_are_refused_before_running(argv, message, capsys):
    assert main(["benchmark", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "==" not in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- 21: options
@pytest.mark.parametrize("option, message", [
    ("hidden=abc", '--option hidden="abc": hidden takes int | None (default null), got str'),
    ("bogus=3", "--option bogus: the gradient_flow family has no layer option 'bogus'; its options are activation"),
    ("hidden=0", "--option hidden=0 is refused by the gradient_flow layers (hidden takes int | None"),
    ("rng=1", "--option rng is set by the command itself"),
])
def test_layer_options_are_named_in_their_errors(option, message, tmp_path, capsys):
    # issue 15 #21: --option hidden=abc said "out_channels must be a positive int"
    assert main(["train", "--task", "blur-g2", "--out", str(tmp_path / "m.safetensors"), *TINY, "--train-count", "2",
                 "--option", option]) == 2
    err = _error(capsys)
    assert message in err
    if option.startswith("bogus"):
        assert "hidden" in err and "rng" not in err
