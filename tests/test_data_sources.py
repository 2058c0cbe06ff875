"""Image sources: random-ellipse phantoms, Shepp-Logan, bundled-image crops and their splits."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from invstable.data import (
    TEST_IMAGES, TRAIN_IMAGES, Concat, EllipsePhantoms, ImageCrops, SheppLogan, bundled_image, make_source,
    random_ellipse_phantom, shepp_logan, task,
)


@settings(max_examples=15, deadline=None)
@given(size=st.integers(1, 40), seed=st.integers(0, 2**31 - 1))
def test_ellipse_phantom_is_in_unit_range_and_a_function_of_its_seed(size, seed):
    x = random_ellipse_phantom(size, rng=seed)
    assert x.shape == (1, size, size) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert torch.equal(x, random_ellipse_phantom(size, rng=seed))
    g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    assert torch.equal(random_ellipse_phantom(size, rng=g1), random_ellipse_phantom(size, rng=g2))


def test_ellipse_phantoms_differ_between_seeds_and_indices():
    a = torch.stack([EllipsePhantoms(32, count=8, seed=3)[i] for i in range(8)])
    b = torch.stack([EllipsePhantoms(32, count=8, seed=4)[i] for i in range(8)])
    assert not torch.equal(a, b)
    flat = a.flatten(1)
    assert len({tuple(row.tolist()) for row in flat}) == 8, "two indices of one stream gave the same phantom"
    assert all(float(row.max()) > 0 for row in flat), "an empty phantom"


def test_ellipse_phantoms_same_bytes_in_any_order():
    source = EllipsePhantoms(24, count=10, seed=7)
    forward = [source[i].numpy().tobytes() for i in range(10)]
    backward = [source[i].numpy().tobytes() for i in reversed(range(10))][::-1]
    assert forward == backward
    assert torch.equal(source[-1], source[9])


def test_phantom_generator_argument_is_advanced_not_reset():
    g = torch.Generator().manual_seed(5)
    first, second = random_ellipse_phantom(16, rng=g), random_ellipse_phantom(16, rng=g)
    assert not torch.equal(first, second)


def test_global_torch_seed_is_neither_used_nor_changed():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = EllipsePhantoms(16, count=2, seed=0)[1]
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)
    assert torch.equal(a, EllipsePhantoms(16, count=2, seed=0)[1])


@pytest.mark.parametrize("bad, match", [(0, "size must be a positive int"), (2.5, "size must be a positive int"),
                                        (True, "size must be a positive int")])
def test_phantom_rejects_bad_size(bad, match):
    with pytest.raises(ValueError, match=match):
        random_ellipse_phantom(bad, rng=0)


def test_sources_reject_bad_seed_and_index():
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2147483647\], got -1"):
        EllipsePhantoms(8, count=2, seed=-1)
    with pytest.raises(TypeError, match="seed must be an int"):
        EllipsePhantoms(8, count=2, seed="1")
    with pytest.raises(IndexError, match="index 2 out of range for length 2"):
        EllipsePhantoms(8, count=2, seed=0)[2]


def test_shepp_logan_any_size_matches_skimage_at_native_size():
    import skimage.data

    native = shepp_logan(400)
    assert np.allclose(native[0].numpy(), skimage.data.shepp_logan_phantom(), atol=1e-6)
    for size in (17, 128):
        x = shepp_logan(size)
        assert x.shape == (1, size, size) and float(x.min()) >= 0 and float(x.max()) <= 1
        # resizing keeps the mean intensity (anti-aliased, area-preserving up to edge effects)
        assert abs(float(x.mean()) - float(native.mean())) < 0.01


def test_bundled_images_load_offline_in_unit_range():
    for name in TRAIN_IMAGES + TEST_IMAGES:
        image = bundled_image(name)
        assert image.ndim == 3 and image.shape[0] == 1 and min(image.shape[1:]) >= 128, name
        assert float(image.min()) >= 0 and float(image.max()) <= 1, name
    with pytest.raises(ValueError, match="unknown bundled image 'brain'"):
        bundled_image("brain")


def test_training_never_sees_a_test_image():
    assert not set(TRAIN_IMAGES) & set(TEST_IMAGES)
    test_arrays = [bundled_image(n).numpy() for n in TEST_IMAGES]
    for name in TRAIN_IMAGES:  # also not the same picture under another name
        a = bundled_image(name).numpy()
        assert not any(a.shape == t.shape and np.array_equal(a, t) for t in test_arrays), name
    blur = task("blur-g2")
    assert set(blur.source("train", count=5, seed=9).images).isdisjoint(TEST_IMAGES)
    assert set(blur.validation.images).isdisjoint(TEST_IMAGES)
    assert set(blur.train.images).isdisjoint(TEST_IMAGES)
    assert set(blur.test.images) == set(TEST_IMAGES)


def test_blur_train_and_validation_crops_share_no_pixel():
    train = ImageCrops(TRAIN_IMAGES, size=128, count=400, seed=0, region="train")
    validation = ImageCrops(TRAIN_IMAGES, size=128, count=200, seed=1, region="validation")
    last_train_col, first_val_col = {}, {}
    for i in range(len(train)):
        name, _, col = train.crop_box(i)
        last_train_col[name] = max(last_train_col.get(name, -1), col + 127)
    for i in range(len(validation)):
        name, _, col = validation.crop_box(i)
        first_val_col[name] = min(first_val_col.get(name, 10**9), col)
    assert set(last_train_col) == set(first_val_col) == set(TRAIN_IMAGES)
    for name in TRAIN_IMAGES:
        assert last_train_col[name] < first_val_col[name], name


def test_crops_are_deterministic_seed_dependent_and_from_the_named_image():
    a = ImageCrops(TEST_IMAGES, size=32, count=6, seed=2018)
    b = ImageCrops(TEST_IMAGES, size=32, count=6, seed=2018)
    c = ImageCrops(TEST_IMAGES, size=32, count=6, seed=2019)
    assert all(torch.equal(a[i], b[i]) for i in range(6))
    assert any(not torch.equal(a[i], c[i]) for i in range(6))
    for i in range(6):
        name, row, col = a.crop_box(i)
        assert name == TEST_IMAGES[i % 3]
        assert torch.equal(a[i], bundled_image(name)[:, row:row + 32, col:col + 32])


def test_crops_reject_bad_arguments():
    with pytest.raises(ValueError, match="unknown bundled image 'lena'"):
        ImageCrops(["lena"], size=8, count=1, seed=0)
    with pytest.raises(ValueError, match="region must be one of"):
        ImageCrops(["camera"], size=8, count=1, seed=0, region="test")
    with pytest.raises(ValueError, match="'coins' .* has a train region of 184 columns, too narrow for crops of 200"):
        ImageCrops(["coins"], size=200, count=1, seed=0, region="train")[0]


def test_sources_rebuild_from_their_config():
    sources = [EllipsePhantoms(8, count=3, seed=2), SheppLogan(8),
               ImageCrops(["moon", "coins"], size=8, count=3, seed=1, region="full"),
               Concat(EllipsePhantoms(8, count=2, seed=0), SheppLogan(8))]
    for s in sources:
        rebuilt = make_source(s.config())
        assert rebuilt.config() == s.config()
        assert all(torch.equal(s[i], rebuilt[i]) for i in range(len(s)))
    with pytest.raises(ValueError, match="unknown source 'spheres'; valid names are"):
        make_source({"name": "spheres", "params": {}})


def test_ct_test_phantoms_are_not_in_a_training_stream():
    # the draws do not depend on the image size, so distinct small rasters mean distinct phantoms
    train = EllipsePhantoms(32, count=1500, seed=task_seed("train"))
    test = EllipsePhantoms(32, count=100, seed=task_seed("test"))
    train_hashes = {train[i].numpy().tobytes() for i in range(len(train))}
    assert not any(test[i].numpy().tobytes() in train_hashes for i in range(len(test)))


def task_seed(split):
    from invstable.data._tasks import SPLIT_SEEDS

    return SPLIT_SEEDS[split]
