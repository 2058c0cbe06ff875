"""The training loop's guards (issue 15): a resume that would not reproduce the run, checkpoints that would be
replaced, damaged checkpoints, empty validation sets and dataset files of the wrong split. Tiny runs on 16 x 16
images (tests/_tiny.py)."""

import warnings

import pytest
import torch

from invstable.data import HDF5PairedDataset, Noise, PairedDataset, make_dataset
from invstable.models import ModelFileError, UnrolledInverse
from invstable.operators import Blur, gaussian_kernel
from invstable.training import train
from invstable.training._loop import (CHECKPOINT_FORMAT, LEGACY_CHECKPOINT_FORMAT, describe_data, evaluate,
                                      load_checkpoint, run_inputs)

from ._tiny import SIZE, TinyPairs, config, model


def _two_steps(tmp_path, data=None, validation=None, **kw):
    ckpt = tmp_path / "c.ckpt"
    train(model(), data if data is not None else TinyPairs(8), validation=validation, config=config(steps=2),
          checkpoint=ckpt, **kw)
    return ckpt


# ---------------------------------------------------------------------------------------------- 2: resume
def test_resume_refuses_another_operator(tmp_path):
    # issue 15 #2: the model settings were compared, the operator not (a blur-g2 run resumed as ct-30 exited 0)
    ckpt = _two_steps(tmp_path)
    other = UnrolledInverse(Blur(gaussian_kernel(1.5), image_size=SIZE), **{
        k: v for k, v in model().config().items() if k not in ("class", "image_shape", "options")})
    with pytest.raises(ValueError, match=r"other inputs.*operator\.params\.kernel"):
        train(other, TinyPairs(8), config=config(steps=2), checkpoint=ckpt, resume=True)


def test_resume_refuses_another_number_of_training_pairs(tmp_path):
    # issue 15 #2: another --train-count gave other weights than the uninterrupted run
    ckpt = _two_steps(tmp_path)
    with pytest.raises(ValueError, match=r"training data\.dataset\.count: checkpoint 8, now 16"):
        train(model(), TinyPairs(16), config=config(steps=2), checkpoint=ckpt, resume=True)


def test_resume_refuses_other_validation_pairs_and_another_context(tmp_path):
    ckpt = _two_steps(tmp_path, validation=TinyPairs(4, seed=1), context={"task": "a"})
    with pytest.raises(ValueError, match=r"validation data\.dataset\.count: checkpoint 4, now 3"):
        train(model(), TinyPairs(8), validation=TinyPairs(3, seed=1), config=config(steps=2), checkpoint=ckpt,
              resume=True, context={"task": "a"})
    with pytest.raises(ValueError, match=r'task: checkpoint "a", now "b"'):
        train(model(), TinyPairs(8), validation=TinyPairs(4, seed=1), config=config(steps=2), checkpoint=ckpt,
              resume=True, context={"task": "b"})


def _file(tmp_path, name, *, split="train", seed=0, count=4):
    op = Blur(gaussian_kernel(1.0), image_size=SIZE)
    from invstable.data import EllipsePhantoms

    pairs = PairedDataset(EllipsePhantoms(SIZE, count=count, seed=seed), op, Noise(0.01), seed=seed)
    make_dataset(tmp_path / name, pairs, task="custom", split=split, progress=False)
    return HDF5PairedDataset(tmp_path / name, operator=op)


def test_resume_refuses_another_data_file_but_not_a_moved_copy(tmp_path):
    a = _file(tmp_path, "a.h5")
    ckpt = _two_steps(tmp_path, data=a)
    b = _file(tmp_path, "b.h5", seed=3)
    with pytest.raises(ValueError, match=r"training data\.file\.checksum"):
        train(model(), b, config=config(steps=2), checkpoint=ckpt, resume=True)
    (tmp_path / "moved").mkdir()
    (tmp_path / "moved" / "a.h5").write_bytes((tmp_path / "a.h5").read_bytes())
    moved = HDF5PairedDataset(tmp_path / "moved" / "a.h5")
    assert describe_data(moved) == describe_data(a)
    assert train(model(), moved, config=config(steps=2), checkpoint=ckpt, resume=True).steps == 2


def test_describe_data_sees_source_noise_seed_and_subsets():
    op = Blur(gaussian_kernel(1.0), image_size=SIZE)
    from invstable.data import EllipsePhantoms

    def pairs(count=4, seed=0, level=0.01):
        return PairedDataset(EllipsePhantoms(SIZE, count=count, seed=seed), op, Noise(level), seed=seed)

    base = describe_data(pairs())
    assert base == describe_data(pairs())
    for other in (pairs(count=5), pairs(seed=3), pairs(level=0.02),
                  torch.utils.data.Subset(pairs(), range(3))):
        assert describe_data(other) != base
    assert (describe_data(torch.utils.data.Subset(pairs(), [0, 1]))
            != describe_data(torch.utils.data.Subset(pairs(), [0, 2])))
    inputs = run_inputs(model(), pairs(), None, {"task": "t"})
    assert inputs["task"] == "t" and inputs["operator"]["name"] == "blur" and inputs["validation data"] is None


def test_an_exact_resume_still_works_and_records_its_inputs(tmp_path):
    ckpt = _two_steps(tmp_path, context={"task": "a"})
    state = load_checkpoint(ckpt)
    assert state["format"] == CHECKPOINT_FORMAT and state["inputs"]["task"] == "a"
    result = train(model(), TinyPairs(8), config=config(steps=2), checkpoint=ckpt, resume=True, context={"task": "a"})
    assert result.steps == 2


# ---------------------------------------------------------------------------------------------- 8: overwrite
def test_an_existing_checkpoint_is_not_replaced_without_resume_or_overwrite(tmp_path):
    # issue 15 #8: a new run silently replaced the checkpoint of an earlier one
    ckpt = _two_steps(tmp_path)
    before = ckpt.read_bytes()
    with pytest.raises(FileExistsError, match="resume=True.*overwrite=True"):
        train(model(), TinyPairs(8), config=config(steps=2), checkpoint=ckpt)
    assert ckpt.read_bytes() == before
    train(model(), TinyPairs(8), config=config(steps=2), checkpoint=ckpt, overwrite=True)


# ---------------------------------------------------------------------------------------------- 3: checkpoint digest
def test_a_damaged_checkpoint_is_refused(tmp_path):
    # the sibling of the model files' digest: torch.load read a flipped bit in a checkpoint's weights silently
    ckpt = _two_steps(tmp_path)
    payload = torch.load(ckpt, weights_only=True)
    name = next(k for k, v in payload["model"].items() if v.is_floating_point() and v.numel() > 4)
    payload["model"][name].view(-1)[0] += 1e-3  # as a flipped low bit would: the file stays readable
    torch.save(payload, ckpt)
    with pytest.raises(ModelFileError, match=r"c\.ckpt.*digest"):
        load_checkpoint(ckpt)
    with pytest.raises(ModelFileError, match="digest"):
        train(model(), TinyPairs(8), config=config(steps=2), checkpoint=ckpt, resume=True)


def test_a_legacy_checkpoint_resumes_with_a_warning(tmp_path):
    ckpt = _two_steps(tmp_path)
    payload = torch.load(ckpt, weights_only=True)
    for key in ("digest", "inputs"):
        payload.pop(key)
    payload["format"] = LEGACY_CHECKPOINT_FORMAT
    torch.save(payload, ckpt)
    with pytest.warns(UserWarning, match="legacy format"):
        train(model(), TinyPairs(8), config=config(steps=2), checkpoint=ckpt, resume=True)


# ---------------------------------------------------------------------------------------------- 16: empty validation
def test_an_empty_validation_set_is_refused_before_training(tmp_path):
    # issue 15 #16: "torch.cat(): expected a non-empty list" after the first steps
    with pytest.raises(ValueError, match="validation set is empty"):
        train(model(), TinyPairs(8), validation=torch.utils.data.Subset(TinyPairs(4), []), config=config(steps=2))
    with pytest.raises(ValueError, match="at least one pair"):
        evaluate(model(), torch.utils.data.Subset(TinyPairs(4), []))


# ---------------------------------------------------------------------------------------------- 6: splits
def test_dataset_files_of_the_test_split_are_refused(tmp_path):
    # issue 15 #6: a file made with --split test was accepted for training, silently breaking the protocol
    test = _file(tmp_path, "test.h5", split="test")
    with pytest.raises(ValueError, match=r"training pairs .*test\.h5.* 'test' split"):
        train(model(), test, config=config(steps=2))
    with pytest.raises(ValueError, match=r"validation pairs .*test\.h5.* 'test' split"):
        train(model(), TinyPairs(8), validation=torch.utils.data.Subset(test, range(2)), config=config(steps=2))
    validation = _file(tmp_path, "val.h5", split="validation")
    with pytest.raises(ValueError, match="'validation' split"):
        train(model(), torch.utils.data.ConcatDataset([TinyPairs(4), validation]), config=config(steps=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(model(), _file(tmp_path, "train.h5"), validation=validation, config=config(steps=1))
