import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from volseg.io import (
    Volume,
    VolumeReadError,
    nifti_findings,
    read_channels,
    read_multichannel,
    read_volume,
    write_volume,
)

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


# --- one file holding every channel (4D NIfTI) ------------------------------------------------

# A non-trivial NIfTI affine: axes permuted and flipped, anisotropic spacing, offset origin.
_AFFINE_4D = np.array([[0.0, -2.0, 0.0, 10.0],
                       [1.5, 0.0, 0.0, -20.0],
                       [0.0, 0.0, 3.0, 5.0],
                       [0.0, 0.0, 0.0, 1.0]])


def nifti_affine(volume: Volume) -> np.ndarray:
    """The RAS affine nibabel gives for ``volume``'s ITK (LPS) geometry (also used elsewhere)."""
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(volume.direction).reshape(3, 3) * np.asarray(volume.spacing)
    affine[:3, 3] = volume.origin
    return np.diag([-1, -1, 1, 1]) @ affine


@pytest.mark.parametrize("layout", ["4d", "vector_5d", "plain_5d"])
def test_read_multichannel_matches_nibabel(tmp_path, layout):
    """Channels first, nibabel's values and affine, for each way a 4D file is stored."""
    data = np.random.default_rng(0).normal(size=(5, 6, 7, 3)).astype(np.float32)
    if layout == "4d":  # (x, y, z, C): what the Decathlon ships
        image = nib.Nifti1Image(data, _AFFINE_4D)
    else:  # (x, y, z, 1, C): the NIfTI vector layout, with or without its intent code
        image = nib.Nifti1Image(data[:, :, :, None, :], _AFFINE_4D)
        if layout == "vector_5d":
            image.header.set_intent("vector")
    nib.save(image, tmp_path / "c.nii.gz")
    volume = read_multichannel(tmp_path / "c.nii.gz")
    assert volume.array.shape == (3, 5, 6, 7) and volume.array.dtype == np.float32
    np.testing.assert_array_equal(volume.array, data.transpose(3, 0, 1, 2))
    np.testing.assert_allclose(nifti_affine(volume), _AFFINE_4D, atol=1e-5)


def test_read_multichannel_geometry_equals_read_volume(tmp_path):
    """A 4D file and its first channel saved as 3D read with identical geometry."""
    data = np.arange(5 * 6 * 7 * 2, dtype=np.float32).reshape(5, 6, 7, 2)
    nib.save(nib.Nifti1Image(data, _AFFINE_4D), tmp_path / "c4.nii.gz")
    nib.save(nib.Nifti1Image(data[..., 0], _AFFINE_4D), tmp_path / "c3.nii.gz")
    four, three = read_multichannel(tmp_path / "c4.nii.gz"), read_volume(tmp_path / "c3.nii.gz")
    assert four.geometry_mismatch(three, tolerance=1e-6) is None
    np.testing.assert_array_equal(four.array[0], three.array)
    one = read_multichannel(tmp_path / "c3.nii.gz")  # a 3D file is one channel
    assert one.array.shape == (1, 5, 6, 7) and one.geometry_mismatch(three) is None


def test_read_multichannel_errors_name_the_file(tmp_path):
    with pytest.raises(VolumeReadError, match="none.nii.gz: no such file"):
        read_multichannel(tmp_path / "none.nii.gz")
    # Two axes past the third with several entries each: not channels of one 3D grid.
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3, 2, 2), np.float32), np.eye(4)),
             tmp_path / "five.nii.gz")
    with pytest.raises(VolumeReadError, match="five.nii.gz: expected a 3D image with channels"):
        read_multichannel(tmp_path / "five.nii.gz")


def _nifti(tmp_path, array, name="v.nii"):
    return write_volume(Volume(array, (1.0, 1.0, 2.0)), tmp_path / name, compress=False)


def test_truncated_uncompressed_nifti_is_found(tmp_path):
    path = _nifti(tmp_path, np.ones((6, 5, 4), np.int16))
    assert nifti_findings(path) == []
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    [(kind, message)] = nifti_findings(path)
    assert kind == "unreadable" and message.startswith(f"{path}: truncated:")
    path.write_bytes(data[:200])  # not even the whole header
    assert "shorter than its NIfTI header" in nifti_findings(path)[0][1]


def test_multi_member_gzip_is_not_mistaken_for_truncation(tmp_path):
    # bgzip-style files hold several gzip members; the trailer states the last one's size only.
    data = _nifti(tmp_path, np.arange(120, dtype=np.float32).reshape(6, 5, 4)).read_bytes()
    path = tmp_path / "multi.nii.gz"
    path.write_bytes(gzip.compress(data[:300]) + gzip.compress(data[300:]))
    assert nifti_findings(path) == []
    path.write_bytes(gzip.compress(data[:300]) + gzip.compress(data[300:])[:-20])
    assert nifti_findings(path)[0][0] == "unreadable"


def test_non_finite_float_voxels_are_counted_though_simpleitk_zeroes_them(tmp_path):
    array = np.zeros((6, 5, 4), np.float32)
    array[1, 2, 3], array[0, 0, 0], array[5, 4, 3] = np.nan, np.inf, -np.inf
    nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / "nan.nii.gz")
    path = tmp_path / "nan.nii.gz"
    assert np.isfinite(read_volume(path).array).all()  # why the file itself is scanned
    assert nifti_findings(path) == [("non-finite", f"{path}: 3 NaN/inf voxel(s) (SimpleITK "
                                                   "would read them as 0)")]
