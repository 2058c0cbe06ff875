"""Model files (issue 15): a digest of header and tensors checked on load, one mechanism for every model file,
and headers that describe more memory than the machine has refused before anything is allocated."""

import json
import struct
import warnings

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from invstable.models import ModelFileError, load_model, load_regularizer, model_info, save_regularizer
from invstable.models._io import (FORMAT, LEGACY_FORMAT, RIDGE_FORMAT, check_model_size, content_digest,
                                  read_safetensors, write_safetensors)

from ._tiny import TinyPairs, model


def _raw(path):
    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata()), {k: fh.get_tensor(k) for k in fh.keys()}


def _flip(path, offset_from_end, bit=0):
    raw = bytearray(path.read_bytes())
    raw[len(raw) - offset_from_end] ^= 1 << bit
    path.write_bytes(bytes(raw))


@pytest.fixture
def saved(tmp_path):
    return model().save(tmp_path / "m.safetensors")


def test_a_flipped_bit_in_a_weight_is_refused_naming_the_file(saved):
    # issue 15 #3: one flipped bit loaded silently (outputs changed by up to 0.021, the record kept its bound)
    header, _ = _raw(saved)
    assert header["format"] == FORMAT and len(header["digest"]) == 64
    for bit in (0, 6):  # a low mantissa bit, and an exponent bit (loaded, then failed later with "contains NaN")
        path = saved.with_name(f"flip{bit}.safetensors")
        path.write_bytes(saved.read_bytes())
        _flip(path, 2, bit)
        with pytest.raises(ModelFileError, match=rf"flip{bit}\.safetensors.*digest"):
            load_model(path)
        with pytest.raises(ModelFileError, match="digest"):
            model_info(path)


def test_a_changed_header_value_is_refused(saved):
    # the digest covers the header too: a digit changed in the JSON (still valid JSON) changes the model
    raw = saved.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    text = raw[8:8 + n].decode()
    assert '\\"max_step\\": 0.5' in text
    changed = text.replace('\\"max_step\\": 0.5', '\\"max_step\\": 0.4')
    saved.write_bytes(raw[:8] + changed.encode() + raw[8 + n:])
    with pytest.raises(ModelFileError, match="header and tensors do not match the digest"):
        load_model(saved)


def test_a_removed_digest_is_refused(saved):
    header, tensors = _raw(saved)
    del header["digest"]
    save_file(tensors, str(saved), metadata=header)
    with pytest.raises(ModelFileError, match="no digest"):
        load_model(saved)


def test_legacy_files_without_a_digest_load_with_a_warning_and_are_upgraded_by_saving(saved, tmp_path):
    header, tensors = _raw(saved)
    del header["digest"]
    legacy = tmp_path / "legacy.safetensors"
    save_file(tensors, str(legacy), metadata={**header, "format": LEGACY_FORMAT})
    with pytest.warns(UserWarning, match="legacy format.*cannot be checked"):
        m = load_model(legacy)
    m.save(legacy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = load_model(legacy)
    y = TinyPairs(2).y
    with torch.no_grad():
        assert torch.equal(m(y), again(y))


def test_one_digest_for_unrolled_models_and_regularizers(tmp_path):
    from invstable.nn import ConvexRidgeRegularizer

    reg = ConvexRidgeRegularizer((1, 2, 3), kernel_size=3, knots=5)
    path = save_regularizer(reg, tmp_path / "r.safetensors", metadata={})
    header, tensors = _raw(path)
    assert header["digest"] == content_digest(tensors)  # the ridge/1 definition: the tensors
    h2, _ = read_safetensors(path, formats=(RIDGE_FORMAT,))
    assert "digest" not in h2
    _flip(path, 2)
    with pytest.raises(ModelFileError, match="r.safetensors.*digest"):
        load_regularizer(path)
    with pytest.raises(ValueError, match="not one this module writes"):
        write_safetensors(tmp_path / "x.safetensors", tensors, {"format": LEGACY_FORMAT})


def test_content_digest_sees_names_dtypes_shapes_values_and_nesting():
    base = {"a": torch.zeros(2, 3), "b": {"c": [torch.ones(1), 2, None]}}
    d = content_digest(base)
    assert d == content_digest({"b": {"c": [torch.ones(1), 2, None]}, "a": torch.zeros(2, 3)})
    for other in ({"a": torch.zeros(3, 2), "b": base["b"]}, {"a": torch.zeros(2, 3, dtype=torch.float64),
                  "b": base["b"]}, {"a2": torch.zeros(2, 3), "b": base["b"]},
                  {"a": torch.zeros(2, 3), "b": {"c": [torch.ones(1), 3, None]}}):
        assert content_digest(other) != d
    assert content_digest(base, header={"x": "1"}) != d


def test_shipped_models_carry_a_digest_and_load_without_warnings():
    from invstable.models import list_models
    from invstable.models._pretrained import _pretrained_path

    for name in list_models():
        header, _ = _raw(_pretrained_path(name))
        assert header["format"] in (FORMAT, RIDGE_FORMAT) and len(header.get("digest", "")) == 64, name
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_model("blur-gradflow")


def _rewrite(path, out, edit_model=None, edit_operator=None):
    header, tensors = _raw(path)
    del header["digest"]
    cfg, op = json.loads(header["model"]), json.loads(header["operator"])
    if edit_model:
        edit_model(cfg)
    if edit_operator:
        edit_operator(op)
    header["model"], header["operator"] = json.dumps(cfg), json.dumps(op)
    return write_safetensors(out, tensors, header)  # a valid digest: only the size check can refuse it


def test_a_header_claiming_a_huge_image_is_refused_with_the_figure_before_allocating(saved, tmp_path, monkeypatch):
    # issue 15 #13: image_size 30000 in a header ended in a raw MemoryError after allocating
    def huge(cfg):
        cfg["image_shape"] = [1, 30000, 30000]

    def huge_op(op):
        op["params"]["image_size"] = 30000

    path = _rewrite(saved, tmp_path / "huge.safetensors", huge, huge_op)
    import invstable.operators

    def no_operator(*args, **kwargs):
        raise AssertionError("the operator was built before the size check")

    monkeypatch.setattr(invstable.operators, "operator_from_config", no_operator)
    with pytest.raises(ModelFileError, match=r"huge\.safetensors.*30000 x 30000.*about [\d.]+ [GT]iB.*nothing was "
                                             r"allocated"):
        load_model(path)


def test_a_header_claiming_huge_widths_or_disagreeing_sizes_is_refused(saved, tmp_path):
    wide = _rewrite(saved, tmp_path / "wide.safetensors", lambda c: c.update(channels=10 ** 6))
    with pytest.raises(ModelFileError, match="[GT]iB of memory"):
        load_model(wide)
    odd = _rewrite(saved, tmp_path / "odd.safetensors", lambda c: c.update(image_shape=[1, 16, 16]),
                   lambda o: o["params"].update(image_size=64))
    with pytest.raises(ModelFileError, match="disagree"):
        load_model(odd)
    bad = _rewrite(saved, tmp_path / "bad.safetensors", lambda c: c.update(iterations="many"))
    with pytest.raises(ModelFileError, match="iterations must be a positive int"):
        load_model(bad)


def test_the_size_estimate_passes_real_models_and_names_the_limit():
    cfg = model(image_shape=(1, 16, 16)).config()
    op = {"name": "blur", "params": {"image_size": 16}}
    needed = check_model_size(cfg, op, where="m")
    assert 0 < needed < 2 ** 20
    with pytest.raises(ModelFileError, match=r"only [\d.]+ [KM]iB is available here"):
        check_model_size(cfg, op, where="m", limit=needed - 1)


def test_a_regularizer_header_claiming_huge_channels_is_refused(tmp_path):
    from invstable.nn import ConvexRidgeRegularizer

    path = save_regularizer(ConvexRidgeRegularizer((1, 2, 3), kernel_size=3, knots=5), tmp_path / "r.safetensors",
                            metadata={})
    header, tensors = _raw(path)
    cfg = json.loads(header["model"])
    cfg["channels"] = [1, 10 ** 6, 10 ** 6]
    header["model"] = json.dumps(cfg)
    del header["digest"]
    write_safetensors(path, tensors, header)  # ridge/1's digest covers the tensors only
    with pytest.raises(ModelFileError, match="[GT]iB of memory"):
        load_regularizer(path)


# -- the one atomic writer (invstable._files), which model files and every other file go through --------------
def test_atomic_write_replaces_whole_files_or_nothing(tmp_path):
    from invstable import _files
    from invstable.models._io import atomic_write

    assert atomic_write is _files.atomic_write  # one writer, still importable from here
    out = tmp_path / "sub" / "f.txt"
    _files.atomic_write(out, lambda tmp: open(tmp, "w").write("first"))
    assert out.read_text() == "first"

    def broken(tmp):
        open(tmp, "w").write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        _files.atomic_write(out, broken)
    assert out.read_text() == "first" and sorted(p.name for p in out.parent.iterdir()) == ["f.txt"]
    with pytest.raises(FileExistsError, match=r"f\.txt.*overwrite=True"):
        _files.atomic_write(out, lambda tmp: open(tmp, "w").write("second"), overwrite=False)
    assert out.read_text() == "first" and sorted(p.name for p in out.parent.iterdir()) == ["f.txt"]
    fresh = _files.atomic_write(tmp_path / "new.txt", lambda tmp: open(tmp, "w").write("new"), overwrite=False)
    assert fresh.read_text() == "new"
