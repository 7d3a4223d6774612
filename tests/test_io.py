from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from volseg.io import Volume, VolumeReadError, read_channels, read_volume, write_volume

# An oblique direction: a 30 degree rotation about z (columns are the axis directions).
_C, _S = np.cos(np.pi / 6), np.sin(np.pi / 6)
OBLIQUE = (_C, -_S, 0.0, _S, _C, 0.0, 0.0, 0.0, 1.0)


def _volume(shape=(7, 5, 3), dtype=np.int16) -> Volume:
    array = np.arange(np.prod(shape), dtype=dtype).reshape(shape)
    return Volume(array, spacing=(0.7, 0.9, 2.5), origin=(-10.0, 20.0, 30.5), direction=OBLIQUE)


def test_round_trip_keeps_array_and_geometry(tmp_path):
    volume = _volume()
    back = read_volume(write_volume(volume, tmp_path / "v.nii.gz"))
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.geometry_mismatch(volume, tolerance=1e-5) is None


def test_axis_order_matches_nibabel(tmp_path):
    """nibabel, an independent reader, sees the same (x, y, z) array and the same affine."""
    volume = _volume()
    path = write_volume(volume, tmp_path / "v.nii.gz")
    image = nib.load(path)
    np.testing.assert_array_equal(np.asarray(image.dataobj), volume.array)
    # ITK affine (LPS) -> NIfTI affine (RAS): flip the sign of the x and y rows.
    itk_affine = np.eye(4)
    itk_affine[:3, :3] = np.asarray(volume.direction).reshape(3, 3) * np.asarray(volume.spacing)
    itk_affine[:3, 3] = volume.origin
    np.testing.assert_allclose(image.affine, np.diag([-1, -1, 1, 1]) @ itk_affine, atol=1e-4)


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(VolumeReadError, match="missing.nii.gz: no such file"):
        read_volume(tmp_path / "missing.nii.gz")
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"")
    with pytest.raises(VolumeReadError, match="broken.nii.gz: unreadable"):
        read_volume(broken)


def test_read_channels_stacks_and_checks_grids(tmp_path):
    a, b = _volume(), _volume()
    write_volume(a, tmp_path / "c_0000.nii.gz")
    write_volume(b, tmp_path / "c_0001.nii.gz")
    image = read_channels([tmp_path / "c_0000.nii.gz", tmp_path / "c_0001.nii.gz"])
    assert image.array.shape == (2, 7, 5, 3)
    moved = Volume(b.array, b.spacing, (0.0, 0.0, 0.0), b.direction)
    write_volume(moved, tmp_path / "c_0001.nii.gz")
    with pytest.raises(VolumeReadError, match="c_0001.nii.gz: channel grid differs.*origin"):
        read_channels([tmp_path / "c_0000.nii.gz", tmp_path / "c_0001.nii.gz"])


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    import SimpleITK as sitk

    def crash(image, path, **kwargs):
        Path(path).write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", crash)
    with pytest.raises(RuntimeError):
        write_volume(_volume(), tmp_path / "out.nii.gz")
    assert list(tmp_path.iterdir()) == []
