"""DICOM slices and NIfTI volumes as image sources: Hounsfield units, attenuation, windows, slice order, errors, and
a folder of DICOM slices through `invstable dataset make --images` and `invstable train`."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from invstable.data import (CT_WINDOW, MU_WATER, HDF5PairedDataset, ImageFolder, ImageReadError, dataset_info,
                            hu_to_attenuation, make_source)

SPAN = CT_WINDOW[1] - CT_WINDOW[0]


def write_dicom(path, stored: np.ndarray, *, slope=1.0, intercept=-1024.0, z=None, instance=None, series="1.2.3",
                modality="CT", preamble=True):
    """A minimal single-frame DICOM file of ``stored`` (uint16 or int16) written with pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID = modality, series
    if instance is not None:
        ds.InstanceNumber = instance
    if z is not None:
        ds.ImagePositionPatient = [0.0, 0.0, float(z)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = int(stored.dtype == np.int16)
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = stored.astype(stored.dtype.newbyteorder("<")).tobytes()
    ds.save_as(path, enforce_file_format=preamble)


def expected(hu):
    """The default window by hand: attenuation over the attenuation of the window's top, air at 0."""
    mu = MU_WATER * (1 + np.asarray(hu, dtype=np.float64) / 1000)
    return np.clip(mu / (MU_WATER * (1 + CT_WINDOW[1] / 1000)), 0, 1)


def test_hounsfield_units_become_attenuation_in_the_default_window(tmp_path):
    stored = np.array([[24, 1024, 1064], [0, 4095, 5000]], dtype=np.uint16)  # intercept -1024: HU = stored - 1024
    write_dicom(tmp_path / "a.dcm", stored)
    x = ImageFolder(tmp_path)[0][0].double().numpy()
    hu = stored.astype(np.float64) - 1024
    assert np.allclose(x, expected(hu), atol=1e-6)
    assert x[0, 0] == 0 and x[1, 0] == 0  # air, and below air clipped
    assert abs(x[0, 1] - 1000 / SPAN) < 1e-6  # water: 1000 HU above air in a 4071 HU window
    assert x[1, 1] == 1 and x[1, 2] == 1  # the top of the window, and above it clipped
    # slope and intercept both apply: HU = 2 * stored - 1000, signed storage
    write_dicom(tmp_path / "b.dcm", np.array([[-100, 0], [500, 40]], dtype=np.int16), slope=2.0, intercept=-1000.0)
    y = ImageFolder(tmp_path)[1][0].double().numpy()
    assert np.allclose(y, expected(2.0 * np.array([[-100, 0], [500, 40]]) - 1000), atol=1e-6)
    assert float(hu_to_attenuation(0.0)) == MU_WATER and float(hu_to_attenuation(-1000.0)) == 0.0


def test_windows_other_than_the_default(tmp_path):
    stored = np.array([[984, 1024], [1184, 2024]], dtype=np.uint16)  # HU -40, 0, 160, 1000
    write_dicom(tmp_path / "a.dcm", stored)
    soft = ImageFolder(tmp_path, window=(-160, 240))[0][0].double().numpy()  # a soft-tissue window, clipped
    assert np.allclose(soft, np.clip((stored - 1024.0 + 160) / 400, 0, 1), atol=1e-6)
    stretched = ImageFolder(tmp_path, window=None)[0][0].double().numpy()  # min..max of the slice
    assert stretched.min() == 0 and stretched.max() == 1 and abs(stretched[0, 1] - 40 / 1040) < 1e-6
    for bad in ((1, 1), (0, float("nan")), "soft", (1, 2, 3)):
        with pytest.raises(ValueError, match="window must be 'ct'"):
            ImageFolder(tmp_path, window=bad)


def test_slices_follow_the_patient_position_then_the_instance_number(tmp_path):
    # file names in the opposite order of the positions; a second series interleaved by name
    for name, z in (("s1", 30.0), ("s2", 10.0), ("s3", 20.0)):
        write_dicom(tmp_path / f"{name}.dcm", np.full((4, 4), 1024 + int(z), np.uint16), z=z, instance=int(z))
    for name, n in (("s1b", 2), ("s2b", 1)):
        write_dicom(tmp_path / f"{name}.dcm", np.full((4, 4), 2000 + n, np.uint16), instance=n, series="9.9")
    folder = ImageFolder(tmp_path)
    order = [(p.name, k) for p, _, k in folder.items]
    assert order == [("s2.dcm", 0), ("s3.dcm", 0), ("s1.dcm", 0), ("s2b.dcm", 0), ("s1b.dcm", 0)]
    values = [float(folder[i][0, 0, 0]) for i in range(5)]
    assert np.allclose(values, expected([10, 20, 30, 977, 978]), atol=1e-6)  # HU = stored - 1024


def test_mixed_folder_keeps_file_order_with_each_series_and_volume_in_place(tmp_path):
    import imageio.v3 as iio
    import nibabel

    iio.imwrite(tmp_path / "a.png", np.full((4, 4), 255, np.uint8))
    write_dicom(tmp_path / "b1.dcm", np.full((4, 4), 1024, np.uint16), z=5.0)
    write_dicom(tmp_path / "b2.dcm", np.full((4, 4), 1024, np.uint16), z=-5.0)
    nibabel.save(nibabel.Nifti1Image(np.zeros((4, 4, 2), np.int16), np.eye(4)), tmp_path / "c.nii")
    np.save(tmp_path / "d.npy", np.zeros((4, 4)))
    folder = ImageFolder(tmp_path)
    assert [(p.name, k) for p, _, k in folder.items] == [("a.png", 0), ("b2.dcm", 0), ("b1.dcm", 0), ("c.nii", 0),
                                                         ("c.nii", 1), ("d.npy", 0)]
    folder.check()
    assert float(folder[0].min()) == 1.0 and abs(float(folder[4].mean()) - 1000 / SPAN) < 1e-6  # PNG: not windowed


def test_scanner_exports_without_a_suffix_are_found_by_their_dicm_marker(tmp_path):
    write_dicom(tmp_path / "IM0001", np.full((3, 3), 1024, np.uint16))
    (tmp_path / "README").write_text("not an image")
    folder = ImageFolder(tmp_path)
    assert [p.name for p in folder.files] == ["IM0001"] and abs(float(folder[0].mean()) - 1000 / SPAN) < 1e-6


def test_mr_images_need_an_explicit_window(tmp_path):
    write_dicom(tmp_path / "mr.dcm", np.array([[0, 300], [600, 900]], np.uint16), slope=1.0, intercept=0.0,
                modality="MR")
    with pytest.raises(ImageReadError, match=r"mr\.dcm: modality 'MR' has no Hounsfield units"):
        ImageFolder(tmp_path)
    assert np.allclose(ImageFolder(tmp_path, window=None)[0][0].numpy(), [[0, 1 / 3], [2 / 3, 1]], atol=1e-6)


def test_broken_dicom_files_are_named(tmp_path):
    (tmp_path / "junk.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x01\x02 not a header")
    (tmp_path / "text.dcm").write_text("patient notes, not DICOM")
    with pytest.raises(ImageReadError, match=r"2 of 2 files are unusable: .*junk\.dcm: .*text\.dcm: not a DICOM"):
        ImageFolder(tmp_path)
    (tmp_path / "junk.dcm").unlink()
    (tmp_path / "text.dcm").unlink()
    write_dicom(tmp_path / "cut.dcm", np.full((32, 32), 1024, np.uint16))
    data = (tmp_path / "cut.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:-500])  # pixel data cut short: the header still reads
    folder = ImageFolder(tmp_path)
    with pytest.raises(ImageReadError, match=r"cut\.dcm: cannot be read as DICOM"):
        folder[0]
    with pytest.raises(ImageReadError, match=r"1 of 1 files are unusable: .*cut\.dcm"):
        folder.check()


def test_nifti_volume_gives_its_slices_along_the_chosen_axis(tmp_path):
    import nibabel

    hu = np.arange(5 * 6 * 3, dtype=np.int16).reshape(5, 6, 3) * 10 - 1000  # x, y, z in HU
    nibabel.save(nibabel.Nifti1Image(hu, np.eye(4)), tmp_path / "vol.nii.gz")
    folder = ImageFolder(tmp_path)
    assert len(folder) == 3 and folder[0].shape == (1, 5, 6)
    for k in range(3):
        assert np.allclose(folder[k][0].numpy(), expected(hu[:, :, k]), atol=1e-6)
    across = ImageFolder(tmp_path, axis=0)
    assert len(across) == 5 and np.allclose(across[2][0].numpy(), expected(hu[2]), atol=1e-6)
    # the header's scaling applies (scl_slope, scl_inter): stored 0..n, HU = 2 stored - 1000
    scaled = nibabel.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4))
    scaled.header.set_slope_inter(2.0, -1000.0)
    (tmp_path / "vol.nii.gz").unlink()
    nibabel.save(scaled, tmp_path / "scaled.nii")
    assert np.allclose(ImageFolder(tmp_path)[1][0].numpy(), expected(2.0 * np.arange(24).reshape(2, 3, 4)[:, :, 1]
                                                                     - 1000), atol=1e-6)


def test_broken_nifti_files_are_named(tmp_path):
    import nibabel

    (tmp_path / "fake.nii").write_bytes(b"not a nifti header" * 30)
    with pytest.raises(ImageReadError, match=r"fake\.nii: cannot be read as NIfTI"):
        ImageFolder(tmp_path)
    (tmp_path / "fake.nii").unlink()
    nibabel.save(nibabel.Nifti1Image(np.zeros((4, 4, 2, 3), np.int16), np.eye(4)), tmp_path / "series.nii")
    with pytest.raises(ImageReadError, match=r"series\.nii: a NIfTI image of shape \(4, 4, 2, 3\)"):
        ImageFolder(tmp_path)
    (tmp_path / "series.nii").unlink()
    nibabel.save(nibabel.Nifti1Image(np.zeros((64, 64, 8), np.int16), np.eye(4)), tmp_path / "cut.nii.gz")
    raw = gzip.decompress((tmp_path / "cut.nii.gz").read_bytes())
    (tmp_path / "cut.nii.gz").write_bytes(gzip.compress(raw[:len(raw) // 2]))  # half the voxels missing
    folder = ImageFolder(tmp_path)
    with pytest.raises(ImageReadError, match=r"cut\.nii\.gz: cannot be read as NIfTI"):
        folder[7]


def test_size_takes_the_central_square_resized(tmp_path):
    stored = np.full((40, 60), 24, np.uint16)
    stored[:, 10:50] = 1024  # the central 40 x 40 square is water, the sides air
    write_dicom(tmp_path / "wide.dcm", stored)
    x = ImageFolder(tmp_path, size=32)[0]
    assert x.shape == (1, 32, 32) and torch.allclose(x, torch.full_like(x, 1000 / SPAN), atol=1e-6)
    assert ImageFolder(tmp_path, size=40)[0].shape == (1, 40, 40)
    with pytest.raises(ValueError, match="size must be a positive int"):
        ImageFolder(tmp_path, size=0)
    with pytest.raises(ValueError, match="axis must be an axis of a 3-D volume"):
        ImageFolder(tmp_path, axis=3)


def test_folder_config_rebuilds_the_same_source(tmp_path):
    import json

    write_dicom(tmp_path / "a.dcm", np.arange(16, dtype=np.uint16).reshape(4, 4) * 100)
    folder = ImageFolder(tmp_path, size=8, window=(-500, 500), axis=0)
    again = make_source(json.loads(json.dumps(folder.config())))
    assert again.window == (-500.0, 500.0) and again.size == 8 and torch.equal(again[0], folder[0])


@pytest.fixture
def dicom_series(tmp_path):
    """Six 32 x 32 CT slices of a water disc with a bone-like insert that moves from slice to slice."""
    folder = tmp_path / "series"
    folder.mkdir()
    yy, xx = np.mgrid[:32, :32]
    for k in range(6):
        hu = np.full((32, 32), -1000.0)
        hu[(yy - 16) ** 2 + (xx - 16) ** 2 < 12 ** 2] = 40.0
        hu[(yy - 12 - k) ** 2 + (xx - 14) ** 2 < 9] = 900.0
        write_dicom(folder / f"slice{k:02d}.dcm", np.round(hu + 1024).astype(np.uint16), z=2.5 * k, instance=k + 1)
    return folder


def test_a_folder_of_dicom_slices_becomes_a_dataset_and_trains_a_model(dicom_series, tmp_path, capsys):
    from invstable.cli import main

    out = tmp_path / "mine.h5"
    # a protocol task's operator and noise on the user's slices, resized to its 128 x 128
    assert main(["dataset", "make", "--task", "ct-30-lowdose", "--split", "train", "--images", str(dicom_series),
                 "--out", str(out), "--no-progress"]) == 0
    info = dataset_info(out)
    assert info["count"] == 6 and info["x_shape"] == [1, 128, 128] and info["noise"]["photons"] == 4096
    assert info["source"]["name"] == "folder" and info["source"]["params"]["window"] == "ct"
    pairs = HDF5PairedDataset(out)
    first = ImageFolder(dicom_series, size=128)[0]
    assert torch.equal(pairs[0][0], first)
    assert main(["dataset", "info", str(out)]) == 0
    assert "log-Poisson, 4096 photons per detector bin" in capsys.readouterr().out
    model = tmp_path / "m.safetensors"
    code = main(["train", "--task", "ct-30-lowdose", "--data", str(out), "--out", str(model), "--steps", "2",
                 "--family", "gradient_flow", "--iterations", "1", "--channels", "2", "--depth", "1",
                 "--init-degree", "5", "--validation-count", "1", "--batch-size", "2", "--no-progress",
                 "--device", "cpu"])
    assert code == 0 and model.stat().st_size > 0
    # a custom operator at the images' own size: the same slices at 32 x 32, Gaussian noise
    small = tmp_path / "small.h5"
    assert main(["dataset", "make", "--task", "custom", "--operator", "ct", "--param", "image_size=32",
                 "--param", "angles=8", "--noise-level", "0.05", "--relative-noise", "--images", str(dicom_series),
                 "--source-param", "window=[-1000, 1000]", "--out", str(small), "--no-progress"]) == 0
    stored = dataset_info(small)
    assert stored["x_shape"] == [1, 32, 32] and stored["source"]["params"]["window"] == [-1000.0, 1000.0]


def test_images_flag_errors_are_one_line(dicom_series, tmp_path, capsys):
    from invstable.cli import main

    out = str(tmp_path / "x.h5")
    assert main(["dataset", "make", "--task", "ct-30", "--split", "train", "--seed", "3", "--images",
                 str(dicom_series), "--out", out]) == 2
    assert "with --images the noise seed is the split's" in capsys.readouterr().err
    assert main(["dataset", "make", "--task", "custom", "--operator", "ct", "--param", "image_size=32",
                 "--noise-level", "0.1", "--source", "ellipses", "--images", str(dicom_series), "--out", out]) == 2
    assert "--images DIR is the folder source" in capsys.readouterr().err
    assert main(["dataset", "make", "--task", "ct-30", "--split", "test", "--images", str(tmp_path / "none"),
                 "--out", out]) == 2
    assert "none: not a folder" in capsys.readouterr().err
    assert main(["dataset", "make", "--task", "custom", "--operator", "ct", "--param", "image_size=32",
                 "--param", "angles=8", "--noise-kind", "log-poisson", "--photons", "1000",
                 "--images", str(dicom_series), "--out", out]) == 2
    assert "kind='log-poisson' needs attenuation > 0" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()
