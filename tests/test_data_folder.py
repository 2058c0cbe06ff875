"""Users' own images: mixed-format folders, bad files reported by name, HDF5 image arrays."""

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from invstable.data import HDF5Images, ImageFolder, ImageReadError, to_unit_float


@pytest.fixture
def mixed_folder(tmp_path):
    rng = np.random.default_rng(0)
    gray8 = rng.integers(0, 256, (12, 10), dtype=np.uint8)
    rgb8 = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    gray16 = rng.integers(0, 65536, (12, 10), dtype=np.uint16)
    iio.imwrite(tmp_path / "a_gray.png", gray8)
    iio.imwrite(tmp_path / "b_rgb.png", rgb8)
    iio.imwrite(tmp_path / "c_gray16.tif", gray16)
    iio.imwrite(tmp_path / "d_rgb.jpg", rgb8, quality=95)
    np.save(tmp_path / "e_float.npy", rng.random((12, 10)))
    np.save(tmp_path / "f_bool.npy", rng.random((12, 10)) > 0.5)
    (tmp_path / "notes.txt").write_text("not an image, ignored")
    return tmp_path, {"gray8": gray8, "rgb8": rgb8, "gray16": gray16}


def test_mixed_folder_converts_every_format_to_unit_float(mixed_folder):
    root, arrays = mixed_folder
    folder = ImageFolder(root)
    assert [p.name for p in folder.files] == ["a_gray.png", "b_rgb.png", "c_gray16.tif", "d_rgb.jpg",
                                              "e_float.npy", "f_bool.npy"]
    folder.check()
    for i in range(len(folder)):
        x = folder[i]
        assert x.dtype == torch.float32 and x.shape == (1, 12, 10)
        assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert torch.allclose(folder[0][0], torch.from_numpy(arrays["gray8"] / 255.0).float())
    assert torch.allclose(folder[2][0], torch.from_numpy(arrays["gray16"] / 65535.0).float())
    assert set(torch.unique(folder[5]).tolist()) <= {0.0, 1.0}


def test_channel_axis_kept_on_request(mixed_folder):
    root, arrays = mixed_folder
    keep = ImageFolder(root, channels="keep")
    assert keep[1].shape == (3, 12, 10) and keep[0].shape == (1, 12, 10)
    assert torch.allclose(keep[1], torch.from_numpy(arrays["rgb8"].transpose(2, 0, 1) / 255.0).float())
    gray = ImageFolder(root)[1][0].numpy()
    import skimage.color

    assert np.allclose(gray, skimage.color.rgb2gray(arrays["rgb8"]), atol=1e-6)


def test_unreadable_image_is_reported_by_name(mixed_folder):
    root, _ = mixed_folder
    (root / "g_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    np.save(root / "h_wide.npy", np.full((4, 4), 7.5))
    folder = ImageFolder(root)
    with pytest.raises(ImageReadError, match=r"g_broken\.png: cannot be read as PNG"):
        folder[folder.files.index(root / "g_broken.png")]
    with pytest.raises(ImageReadError, match=r"h_wide\.npy: float values span \[7\.5, 7\.5\], outside \[0, 1\]; pass rescale=True"):
        folder[folder.files.index(root / "h_wide.npy")]
    with pytest.raises(ImageReadError, match=r"2 of 8 files are unusable: .*g_broken\.png.*h_wide\.npy") as info:
        folder.check()
    assert "a_gray.png" not in str(info.value)


def test_pickled_npy_is_refused_not_executed(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ImageReadError, match=r"obj\.npy: cannot be read as NPY .*allow_pickle"):
        ImageFolder(tmp_path)[0]


def test_rescale_maps_float_range(tmp_path):
    np.save(tmp_path / "ct.npy", np.linspace(-1000.0, 3000.0, 20).reshape(4, 5))
    x = ImageFolder(tmp_path, rescale=True)[0]
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0


def test_folder_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere: not a folder"):
        ImageFolder(tmp_path / "nowhere")
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(ValueError, match=r"no image files"):
        ImageFolder(tmp_path)
    with pytest.raises(ValueError, match="channels must be one of"):
        ImageFolder(tmp_path, channels="rgb")


def test_to_unit_float_rejects_bad_arrays():
    with pytest.raises(ImageReadError, match=r"img: shape \(2, 3, 4, 5\)"):
        to_unit_float(np.zeros((2, 3, 4, 5)), what="img")
    with pytest.raises(ImageReadError, match="NaN"):
        to_unit_float(np.array([[np.nan, 0.0]]), what="img")
    with pytest.raises(ImageReadError, match="negative values"):
        to_unit_float(np.array([[-1, 2]], dtype=np.int16), what="img")


@pytest.mark.parametrize("layout, shape", [("NHW", (3, 8, 6)), ("NHWC", (3, 8, 6, 3)), ("NCHW", (3, 3, 8, 6))])
def test_hdf5_images_layouts(tmp_path, layout, shape):
    data = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    with h5py.File(tmp_path / "imgs.h5", "w") as f:
        f.create_dataset("group/images", data=data)
    source = HDF5Images(tmp_path / "imgs.h5", key="group/images", channels="keep")
    assert source.layout == layout and len(source) == 3
    x = source[2]
    expected = data[2] if layout != "NHWC" else data[2].transpose(2, 0, 1)
    expected = expected[None] if layout == "NHW" else expected
    assert torch.allclose(x, torch.from_numpy(expected / 255.0).float())
    # works in DataLoader workers (the file is reopened in each process)
    loader = torch.utils.data.DataLoader(source, batch_size=3, num_workers=2)
    assert torch.equal(next(iter(loader))[2], x)


def test_hdf5_images_errors_name_the_file(tmp_path):
    with h5py.File(tmp_path / "imgs.h5", "w") as f:
        f.create_dataset("images", data=np.zeros((2, 4, 4)))
    with pytest.raises(ImageReadError, match=r"imgs\.h5: has no dataset 'x'; datasets in the file: \['images'\]"):
        HDF5Images(tmp_path / "imgs.h5", key="x")
    (tmp_path / "junk.h5").write_bytes(b"junk" * 100)
    with pytest.raises(ImageReadError, match=r"junk\.h5: not a readable HDF5 file"):
        HDF5Images(tmp_path / "junk.h5", key="images")


@settings(max_examples=25, deadline=None)
@given(dtype=st.sampled_from([np.uint8, np.uint16, np.int32, np.bool_]), seed=st.integers(0, 2**32 - 1),
       channels=st.sampled_from([1, 3, 4]))
def test_integer_images_map_linearly_into_unit_range(dtype, seed, channels):
    rng = np.random.default_rng(seed)
    top = 1 if dtype is np.bool_ else np.iinfo(dtype).max
    a = rng.integers(0, top, (5, 4, channels), endpoint=True).astype(dtype)
    x = to_unit_float(a, channels="keep")
    assert x.shape == (channels, 5, 4)
    assert torch.allclose(x, torch.from_numpy(a.transpose(2, 0, 1).astype(np.float64) / top).float())
    g = to_unit_float(a, channels="gray")
    assert g.shape == (1, 5, 4) and float(g.min()) >= 0 and float(g.max()) <= 1
