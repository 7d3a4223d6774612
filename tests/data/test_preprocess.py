import numpy as np
import pytest
import SimpleITK as sitk
import torch

from tests.test_io import OBLIQUE
from volseg.data.preprocess import Preprocessor
from volseg.io import Volume


def _ramp(shape, spacing, origin, direction) -> Volume:
    """An image whose value at each voxel is that voxel's world x, y and z (three channels)."""
    reference = Volume(np.zeros(shape, np.float32), spacing, origin, direction).to_sitk()
    world = np.zeros((3, *shape), np.float32)
    for index in np.ndindex(*shape):
        world[(slice(None), *index)] = reference.TransformIndexToPhysicalPoint(
            tuple(int(i) for i in index))
    return Volume(world, spacing, origin, direction)


def test_resampled_grid_sits_where_its_geometry_says():
    """Resampled voxels hold the world position that SimpleITK computes from the new header.

    A linear ramp is reproduced exactly by trilinear interpolation away from the border, so
    the check is independent of our own geometry bookkeeping.
    """
    image = _ramp((12, 10, 6), (0.8, 0.8, 2.5), (-40.0, 12.0, 100.0), OBLIQUE)
    pre = Preprocessor(spacing=(1.6, 1.6, 1.25), intensity="none").image(image)
    assert pre.spatial_shape == (6, 5, 12)
    grid = Volume(np.zeros(pre.spatial_shape, np.float32), pre.spacing, pre.origin,
                  pre.direction).to_sitk()
    for index in [(1, 1, 2), (3, 2, 5), (4, 3, 9)]:  # interior voxels
        expected = grid.TransformIndexToPhysicalPoint(index)
        np.testing.assert_allclose(pre.array[(slice(None), *index)], expected, atol=1e-3)


def test_same_spacing_is_left_alone():
    image = Volume(np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32),
                   (1.0, 1.0, 2.0))
    pre = Preprocessor(spacing=(1.005, 1.0, 2.0), intensity="none").image(image)
    np.testing.assert_array_equal(pre.array[0], image.array)


def test_ct_window_by_hand():
    image = Volume(np.array([-2000, -1000, -300, 400, 900], np.float32).reshape(5, 1, 1),
                   (1, 1, 1))
    out = Preprocessor(intensity="ct_window", window=(-1000, 400)).image(image).array.ravel()
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])


def test_zscore_nonzero():
    array = np.zeros((4, 4, 4), np.float32)
    array[:2] = np.arange(32, dtype=np.float32).reshape(2, 4, 4) + 1
    out = Preprocessor(intensity="zscore", nonzero=True).image(Volume(array, (1, 1, 1))).array
    inside = out[0][array != 0]
    assert abs(inside.mean()) < 1e-5 and abs(inside.std() - 1) < 1e-5


def test_label_stays_integer_and_restore_returns_original_shape():
    label = Volume(np.random.default_rng(1).integers(0, 3, (9, 8, 5)).astype(np.uint8),
                   (1.0, 1.0, 3.0))
    pre = Preprocessor(spacing=(2.0, 2.0, 1.5), intensity="none")
    out = pre.label(label)
    assert out.array.dtype == np.uint8 and set(np.unique(out.array)) <= {0, 1, 2}
    probabilities = torch.rand(3, *out.spatial_shape)
    assert Preprocessor.restore(probabilities, label.spatial_shape).shape == (3, 9, 8, 5)


def test_round_trip_through_target_spacing_keeps_a_label_map():
    """Down- then up-sampling one-hot probabilities gives back a smooth object nearly intact."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in (40, 40, 16)], indexing="ij"))
    sphere = (((grid - np.array([20, 20, 8])[:, None, None, None]) ** 2
               * np.array([1, 1, 6.25])[:, None, None, None]).sum(0) < 100).astype(np.uint8)
    label = Volume(sphere, (1.0, 1.0, 2.5))
    pre = Preprocessor(spacing=(2.0, 2.0, 2.0), intensity="none")
    small = torch.from_numpy(pre.label(label).array).long()
    onehot = torch.nn.functional.one_hot(small, 2).permute(3, 0, 1, 2).float()
    back = Preprocessor.restore(onehot, label.spatial_shape).argmax(0).numpy()
    dice = 2 * (back & sphere).sum() / (back.sum() + sphere.sum())
    # A 10 mm sphere at 2 mm loses ~6% to the coarse grid; a half-voxel misalignment between
    # the two resamplings would cost about twice that.
    assert dice > 0.92


@pytest.mark.parametrize("bad", [{"intensity": "minmax"}, {"spacing": (1.0, 2.0)},
                                 {"window": (400, -1000)}])
def test_bad_settings_name_the_key(bad):
    with pytest.raises(ValueError, match="intensity|spacing|window"):
        Preprocessor(**bad)


def test_resample_matches_simpleitk_on_smooth_image():
    """Away from borders our trilinear resampling agrees with SimpleITK's linear resampler."""
    rng = np.random.default_rng(3)
    coarse = rng.normal(size=(4, 4, 3)).astype(np.float32)
    smooth = torch.nn.functional.interpolate(torch.from_numpy(coarse)[None, None],
                                             size=(24, 20, 10), mode="trilinear")[0, 0].numpy()
    image = Volume(smooth, (0.9, 0.9, 2.4), (5.0, -3.0, 7.0))
    pre = Preprocessor(spacing=(1.8, 1.8, 1.2), intensity="none").image(image)
    reference = sitk.Resample(
        image.to_sitk(), Volume(pre.array[0], pre.spacing, pre.origin).to_sitk(),
        sitk.Transform(), sitk.sitkLinear)
    theirs = sitk.GetArrayFromImage(reference).transpose(2, 1, 0)
    np.testing.assert_allclose(pre.array[0][2:-2, 2:-2, 2:-2], theirs[2:-2, 2:-2, 2:-2],
                               atol=1e-4)
