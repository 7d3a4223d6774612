import json
import re

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from omegaconf import OmegaConf
from scipy import ndimage

from tests.io.test_volume import OBLIQUE
from volseg.data.preprocess import Preprocessor, Trace, class_argmax, orientation_code
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


# --- geometry helpers for the new options -------------------------------------------------------


def _rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    a, b = [i for i in range(3) if i != axis]
    matrix = np.eye(3)
    matrix[[a, a, b, b], [a, b, a, b]] = [c, -s, s, c]
    return matrix


# Oblique in two planes, and the same with the first axis reversed (an improper direction, as
# files written with a flipped axis have).
TILTED = tuple((_rotation(2, 30) @ _rotation(0, 20)).ravel())
TILTED_FLIPPED = tuple(((_rotation(2, 30) @ _rotation(0, 20)) * [-1, 1, 1]).ravel())
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _sitk_grid(volume: Volume) -> sitk.Image:
    return Volume(np.zeros(volume.spatial_shape, np.float32), volume.spacing, volume.origin,
                  volume.direction).to_sitk()


def _channel(volume: Volume, c: int) -> Volume:
    return Volume(volume.array[c], volume.spacing, volume.origin, volume.direction)


# --- orientation ------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", [IDENTITY, OBLIQUE, TILTED, TILTED_FLIPPED],
                         ids=["identity", "oblique", "tilted", "tilted_flipped"])
@pytest.mark.parametrize("code", ["RAS", "LPS", "SAR", "ILP"])
def test_orientation_keeps_world_positions_and_matches_dicomorient(code, direction):
    image = _ramp((5, 4, 3), (0.8, 1.1, 2.5), (-40.0, 12.0, 100.0), direction)
    pre = Preprocessor(orientation=code, intensity="none").image(image)
    # Every voxel still holds its world position, by SimpleITK's reading of the new header.
    grid = _sitk_grid(pre)
    for index in np.ndindex(*pre.spatial_shape):
        np.testing.assert_allclose(pre.array[(slice(None), *index)],
                                   grid.TransformIndexToPhysicalPoint(index), atol=1e-4)
    assert orientation_code(pre.direction) == code
    # SimpleITK's DICOMOrient makes the same array and header (permutation and flips only).
    theirs = Volume.from_sitk(sitk.DICOMOrient(_channel(image, 0).to_sitk(), code))
    np.testing.assert_array_equal(pre.array[0], theirs.array)
    for name in ("spacing", "origin", "direction"):
        np.testing.assert_allclose(getattr(pre, name), getattr(theirs, name), atol=1e-6)


def test_orientation_code_of_itk_identity_is_lps():
    assert orientation_code(IDENTITY) == "LPS"
    assert Preprocessor(orientation="ras").orientation == "RAS"


# --- crop to non-zero -------------------------------------------------------------------------


def test_crop_nonzero_is_simpleitks_region_of_interest():
    """The box covers voxels non-zero in any channel; the header keeps them in place."""
    rng = np.random.default_rng(4)
    array = np.zeros((2, 10, 9, 7), np.float32)
    array[0, 2:6, 3:8, 1:5] = rng.uniform(1, 2, (4, 5, 4))
    array[1, 7, 4, 2] = -3.0  # only the second channel reaches x = 7
    image = Volume(array, (0.7, 0.9, 2.5), (-10.0, 20.0, 30.5), TILTED)
    pre = Preprocessor(crop_nonzero=True, intensity="none")
    trace = pre.trace(image)
    assert trace.crop == ((2, 8), (3, 8), (1, 5))
    out = pre.image(image, trace)
    for c in range(2):
        theirs = Volume.from_sitk(sitk.RegionOfInterest(
            _channel(image, c).to_sitk(), size=[6, 5, 4], index=[2, 3, 1]))
        np.testing.assert_array_equal(out.array[c], theirs.array)
        for name in ("spacing", "origin", "direction"):
            np.testing.assert_allclose(getattr(out, name), getattr(theirs, name), atol=1e-9)


def test_crop_nonzero_keeps_an_all_zero_image_whole():
    image = Volume(np.zeros((4, 5, 6), np.float32), (1, 1, 1))
    pre = Preprocessor(crop_nonzero=True, intensity="none")
    assert pre.trace(image).crop is None
    assert pre.image(image).spatial_shape == (4, 5, 6)


def test_label_needs_the_image_trace_when_cropping():
    label = Volume(np.zeros((4, 5, 6), np.uint8), (1, 1, 1))
    with pytest.raises(ValueError, match="crop_nonzero.*trace"):
        Preprocessor(crop_nonzero=True).label(label)


# --- interpolation and anisotropy ---------------------------------------------------------------


def _smooth(shape, seed=3) -> np.ndarray:
    coarse = np.random.default_rng(seed).normal(size=(4, 4, 3)).astype(np.float32)
    return torch.nn.functional.interpolate(torch.from_numpy(coarse)[None, None], size=shape,
                                           mode="trilinear")[0, 0].numpy()


@pytest.mark.parametrize("direction", [IDENTITY, TILTED], ids=["identity", "tilted"])
def test_bspline_equals_simpleitk_bspline(direction):
    """Cubic B-spline resampling gives SimpleITK's sitkBSpline values on the same grid.

    Both use mirror boundaries, so the whole volume agrees; 1e-4 is float32 rounding on
    values of order 1.
    """
    image = Volume(_smooth((24, 20, 10)), (0.9, 0.9, 2.4), (5.0, -3.0, 7.0), direction)
    pre = Preprocessor(spacing=(1.3, 0.7, 1.1), intensity="none",
                       image_interpolation="bspline").image(image)
    theirs = sitk.Resample(image.to_sitk(), _sitk_grid(pre), sitk.Transform(), sitk.sitkBSpline,
                           0.0, sitk.sitkFloat64)
    np.testing.assert_allclose(pre.array[0], Volume.from_sitk(theirs).array, atol=1e-4)


def test_linear_path_is_scipy_zoom_on_the_same_grid():
    """The trilinear path and scipy's order-1 zoom with ``grid_mode=True`` (the convention of
    the B-spline path) agree everywhere, edges included, to float32 rounding."""
    array = _smooth((17, 11, 6))
    shape = (9, 23, 13)
    pre = Preprocessor(intensity="none").image(Volume(array, (1, 1, 1)), Trace(
        shape=(17, 11, 6), resampled_shape=shape))
    zoom = [n / m for n, m in zip(shape, array.shape)]
    theirs = ndimage.zoom(array, zoom, order=1, mode="nearest", grid_mode=True)
    np.testing.assert_allclose(pre.array[0], theirs, atol=1e-5)


@pytest.mark.parametrize(("interpolation", "order", "mode"),
                         [("linear", 1, "nearest"), ("bspline", 3, "mirror")])
def test_anisotropic_volume_is_resampled_in_plane_then_nearest_along_z(interpolation, order,
                                                                     mode):
    """nnU-Net's separate z: slices resampled in-plane, then the nearest slice along z.

    The reference follows nnU-Net's resample_data_or_seg: a 2D zoom per slice, then scipy
    ``map_coordinates`` of order 0 at ``(k + 0.5) * n / m - 0.5`` along z.
    """
    array = _smooth((16, 12, 6))
    image = Volume(array, (0.8, 0.8, 4.0))  # 5x coarser along z than in-plane
    pre = Preprocessor(spacing=(1.2, 0.6, 2.0), intensity="none",
                       image_interpolation=interpolation, anisotropy_threshold=3.0)
    trace = pre.trace(image)
    assert trace.lowres_axis == 2 and trace.resampled_shape == (11, 16, 12)
    out = pre.image(image, trace).array[0]
    in_plane = np.stack([
        ndimage.zoom(array[..., k], (11 / 16, 16 / 12), order=order, mode=mode, grid_mode=True)
        for k in range(6)], axis=-1)
    z = (np.arange(12) + 0.5) * 6 / 12 - 0.5
    coords = np.meshgrid(np.arange(11), np.arange(16), z, indexing="ij")
    theirs = ndimage.map_coordinates(in_plane, coords, order=0, mode="nearest")
    np.testing.assert_allclose(out, theirs, atol=1e-5)


def test_anisotropy_below_threshold_is_plain_trilinear():
    array = _smooth((16, 12, 6))
    image = Volume(array, (1.0, 1.0, 2.5))
    pre = Preprocessor(spacing=(0.7, 0.7, 1.0), intensity="none", anisotropy_threshold=3.0)
    assert pre.trace(image).lowres_axis is None
    theirs = torch.nn.functional.interpolate(torch.from_numpy(array)[None, None],
                                             size=(23, 17, 15), mode="trilinear")[0, 0]
    np.testing.assert_allclose(pre.image(image).array[0], theirs.numpy(), atol=1e-6)


@pytest.mark.parametrize(("spacing", "target", "axis"), [
    ((0.8, 0.8, 4.0), (1.0, 1.0, 2.0), 2),   # coarse before resampling
    ((1.0, 1.0, 1.0), (1.0, 4.0, 1.0), 1),   # coarse only after resampling
    ((4.0, 1.0, 1.0), (1.0, 1.0, 5.0), 0),   # the current spacing decides first
    ((0.24, 1.25, 1.25), (0.5, 1.25, 1.25), None),  # two coarse axes: no separate z
    ((1.0, 1.0, 2.0), (1.0, 1.0, 1.0), None),  # not anisotropic enough
])
def test_lowres_axis_follows_nnunet(spacing, target, axis):
    image = Volume(np.zeros((8, 8, 8), np.float32), spacing)
    trace = Preprocessor(spacing=target, anisotropy_threshold=3.0).trace(image)
    assert trace.lowres_axis == axis


# --- intensity ----------------------------------------------------------------------------------


def test_ct_percentile_by_hand():
    rng = np.random.default_rng(5)
    array = rng.uniform(-1500, 1500, (2, 6, 5, 4)).astype(np.float32)
    statistics = {"mean": [40.0, -10.0], "std": [120.0, 300.0], "lower": [-200.0, -900.0],
                  "upper": [300.0, 1000.0]}
    out = Preprocessor(intensity="ct_percentile", statistics=statistics).image(
        Volume(array, (1, 1, 1))).array
    for c in range(2):
        expected = (np.clip(array[c], statistics["lower"][c], statistics["upper"][c])
                    - statistics["mean"][c]) / statistics["std"][c]
        np.testing.assert_allclose(out[c], expected, rtol=1e-5, atol=1e-5)
    # One value per key serves every channel.
    one = Preprocessor(intensity="ct_percentile",
                       statistics={"mean": 40.0, "std": 120.0, "lower": -200.0, "upper": 300.0})
    np.testing.assert_allclose(one.image(Volume(array, (1, 1, 1))).array[0], out[0], atol=1e-5)


def test_ct_percentile_without_statistics_says_how_to_get_them():
    image = Volume(np.zeros((3, 3, 3), np.float32), (1, 1, 1))
    with pytest.raises(ValueError, match=r"statistics.*volseg plan"):
        Preprocessor(intensity="ct_percentile").image(image)


def test_statistics_channels_must_match_the_image():
    stats = {"mean": [0.0, 0.0], "std": [1.0, 1.0], "lower": [-1.0, -1.0], "upper": [1.0, 1.0]}
    image = Volume(np.zeros((3, 3, 3, 3), np.float32), (1, 1, 1))
    with pytest.raises(ValueError, match="data.preprocessing.statistics has 2 channels"):
        Preprocessor(intensity="ct_percentile", statistics=stats).image(image)


# --- fixed size (the 2-channel, 5-class ResNet-50 write-up) -------------------------------------


@pytest.mark.parametrize(("slices", "kept"), [(9, None), (3, slice(1, 4))])
def test_fixed_size_resizes_in_plane_then_centres_the_slices(slices, kept):
    """x, y resized bilinearly, z centred in zero slices (or centre-cropped), as the write-up
    preprocesses to 512 x 1024 x 32; labels resized by nearest neighbour."""
    rng = np.random.default_rng(6)
    array = rng.normal(size=(2, 20, 12, 5)).astype(np.float32)
    image = Volume(array, (0.8, 0.9, 3.0), (1.0, 2.0, 3.0), OBLIQUE)
    pre = Preprocessor(intensity="none", fixed_size={"in_plane": [8, 16], "slices": slices})
    trace = pre.trace(image)
    out = pre.image(image, trace)
    assert out.array.shape == (2, 8, 16, slices)
    resized = np.stack([ndimage.zoom(c, (8 / 20, 16 / 12, 1), order=1, mode="nearest",
                                     grid_mode=True) for c in array])
    if kept is None:  # 4 missing slices: 2 zero slices before, 2 after
        expected = np.pad(resized, [(0, 0), (0, 0), (0, 0), (2, 2)])
    else:
        expected = resized[..., kept]
    np.testing.assert_allclose(out.array, expected, atol=1e-5)
    # In-plane voxels are 20/8 and 12/16 times wider; the slice thickness is unchanged.
    np.testing.assert_allclose(out.spacing, (2.0, 0.675, 3.0))
    label = Volume(rng.integers(0, 5, (20, 12, 5)).astype(np.uint8), image.spacing,
                   image.origin, image.direction)
    out_label = pre.label(label, trace)
    assert out_label.spatial_shape == (8, 16, slices) and out_label.array.dtype == np.uint8
    back = Preprocessor.restore(torch.rand(5, 8, 16, slices), trace)
    assert back.shape == (5, 20, 12, 5)


def test_fixed_size_grid_sits_where_its_geometry_says():
    image = _ramp((12, 10, 4), (0.8, 0.8, 2.5), (-40.0, 12.0, 100.0), OBLIQUE)
    pre = Preprocessor(intensity="none", fixed_size={"in_plane": [6, 20], "slices": 8}).image(
        image)
    grid = _sitk_grid(pre)
    for index in [(1, 1, 2), (3, 10, 3), (4, 18, 5)]:  # interior voxels of the 4 real slices
        np.testing.assert_allclose(pre.array[(slice(None), *index)],
                                   grid.TransformIndexToPhysicalPoint(index), atol=1e-3)
    assert not pre.array[..., :2].any() and not pre.array[..., 6:].any()


# --- the round trip of every option -------------------------------------------------------------


def _case(direction):
    """A (12, 10, 7) image non-zero in a box, and a label inside that box."""
    rng = np.random.default_rng(7)
    image = np.zeros((12, 10, 7), np.float32)
    image[2:10, 1:8, 1:6] = rng.uniform(50, 150, (8, 7, 5))
    label = np.zeros((12, 10, 7), np.uint8)
    label[3:9, 2:7, 2:5] = rng.integers(0, 3, (6, 5, 3))
    geometry = ((0.8, 0.9, 3.0), (-40.0, 12.0, 100.0), direction)
    return Volume(image, *geometry), Volume(label, *geometry)


def _options(name: str, image: Volume) -> dict:
    """Settings under test; spacings and sizes are exactly twice as fine as the input, so
    nearest-neighbour up- then linear down-sampling must give every label back."""
    orientation = {"orientation": "SAR"} if "orient" in name else {}
    crop = {"crop_nonzero": True} if "crop" in name else {}
    base = Preprocessor(intensity="none", **orientation, **crop)
    trace = base.trace(image)
    options = {**orientation, **crop}
    if "spacing" in name:
        spacing = np.asarray(image.spacing)[list(trace.permutation)] / 2
        options["spacing"] = spacing.tolist()
    if "bspline" in name:
        options["image_interpolation"] = "bspline"
    if "anisotropic" in name:
        options["anisotropy_threshold"] = 3.0
    if "fixed" in name:
        x, y, z = trace.cropped_shape
        options["fixed_size"] = {"in_plane": [2 * x, 2 * y],
                                 "slices": z + (3 if "pad" in name else -2)}
    return options


ROUND_TRIPS = ["none", "orient", "crop", "spacing", "spacing_bspline", "spacing_anisotropic",
               "fixed_pad", "fixed_crop", "orient_crop_spacing_bspline_anisotropic",
               "orient_crop_fixed_pad", "orient_crop_fixed_crop"]


@pytest.mark.parametrize("direction", [IDENTITY, TILTED_FLIPPED], ids=["identity", "oblique"])
@pytest.mark.parametrize("name", ROUND_TRIPS)
def test_every_option_round_trips_onto_the_original_grid(name, direction):
    """Preprocess, predict the preprocessed label perfectly, restore: the original label.

    Also checks, through SimpleITK, that each preprocessed label voxel sits inside the original
    voxel it was copied from (background outside the original volume).
    """
    image, label = _case(direction)
    pre = Preprocessor(intensity="none", **_options(name, image))
    trace = pre.trace(image)
    out_image, out_label = pre.image(image, trace), pre.label(label, trace)
    assert out_image.spatial_shape == out_label.spatial_shape == trace.output_shape
    for name_ in ("spacing", "origin", "direction"):
        assert getattr(out_image, name_) == getattr(out_label, name_)

    grid, original = _sitk_grid(out_label), label.to_sitk()
    for index in np.ndindex(*out_label.spatial_shape):
        point = grid.TransformIndexToPhysicalPoint(index)
        source = np.round(original.TransformPhysicalPointToContinuousIndex(point)).astype(int)
        inside = ((source >= 0) & (source < label.spatial_shape)).all()
        assert out_label.array[index] == (label.array[tuple(source)] if inside else 0)

    logits = 10 * torch.nn.functional.one_hot(torch.from_numpy(out_label.array).long(), 3)
    stored = json.loads(json.dumps(trace.to_dict()))  # as the cache would keep it
    probabilities = torch.softmax(logits.permute(3, 0, 1, 2).float(), dim=0)
    back = class_argmax(Preprocessor.restore(probabilities, stored))
    np.testing.assert_array_equal(back.numpy(), label.array)
    probabilities = Preprocessor.restore(torch.rand(3, *trace.output_shape).softmax(0), trace)
    assert probabilities.shape == (3, *label.spatial_shape)
    torch.testing.assert_close(probabilities.sum(0), torch.ones(label.spatial_shape))


def test_restore_rejects_a_prediction_of_another_shape():
    trace = Trace(shape=(4, 4, 4), resampled_shape=(8, 8, 8))
    with pytest.raises(ValueError, match="do not fit"):
        Preprocessor.restore(torch.rand(2, 8, 8, 7), trace)


def test_trace_must_belong_to_the_volume():
    image = Volume(np.zeros((4, 4, 4), np.float32), (1, 1, 1))
    with pytest.raises(ValueError, match="trace of a"):
        Preprocessor().image(image, Trace(shape=(5, 4, 4), resampled_shape=(5, 4, 4)))


# --- settings -----------------------------------------------------------------------------------


def test_settings_round_trip_through_json():
    pre = Preprocessor(
        intensity="ct_percentile", orientation="RAS", crop_nonzero=True,
        image_interpolation="bspline", anisotropy_threshold=3.0,
        fixed_size={"in_plane": [64, 32], "slices": 16},
        statistics={"mean": 1.0, "std": 2.0, "lower": -3.0, "upper": 4.0},
    )
    again = Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert again == pre
    assert again.statistics == {"mean": [1.0], "std": [2.0], "lower": [-3.0], "upper": [4.0]}


def test_defaults_are_the_previous_behaviour():
    pre = Preprocessor()
    assert (pre.orientation, pre.crop_nonzero, pre.image_interpolation, pre.anisotropy_threshold,
            pre.fixed_size, pre.statistics) == (None, False, "linear", None, None, None)


def test_settings_from_a_hydra_config():
    settings = OmegaConf.create({"orientation": "LPS", "fixed_size": {"in_plane": [4, 6],
                                                                      "slices": 2},
                                 "statistics": {"mean": [1], "std": [2], "lower": [0],
                                                "upper": [3]}})
    pre = Preprocessor(**settings)
    assert pre.fixed_size == {"in_plane": [4, 6], "slices": 2}
    json.dumps(pre.to_dict())


@pytest.mark.parametrize(("bad", "key"), [
    ({"intensity": "minmax"}, "data.preprocessing.intensity"),
    ({"spacing": (1.0, 2.0)}, "data.spacing"),
    ({"window": (400, -1000)}, "data.preprocessing.window"),
    ({"nonzero": 1}, "data.preprocessing.nonzero"),
    ({"orientation": "RAX"}, "data.preprocessing.orientation"),
    ({"orientation": "RRS"}, "data.preprocessing.orientation"),
    ({"orientation": "RASL"}, "data.preprocessing.orientation"),
    ({"crop_nonzero": "yes"}, "data.preprocessing.crop_nonzero"),
    ({"image_interpolation": "cubic"}, "data.preprocessing.image_interpolation"),
    ({"anisotropy_threshold": 0.5}, "data.preprocessing.anisotropy_threshold"),
    ({"anisotropy_threshold": "3"}, "data.preprocessing.anisotropy_threshold"),
    ({"fixed_size": {"in_plane": [8], "slices": 4}}, "data.preprocessing.fixed_size"),
    ({"fixed_size": {"in_plane": [8, 8]}}, "data.preprocessing.fixed_size"),
    ({"fixed_size": {"in_plane": [8, 8], "slices": 0}}, "data.preprocessing.fixed_size"),
    ({"fixed_size": [8, 8, 4]}, "data.preprocessing.fixed_size"),
    ({"statistics": {"mean": 0, "std": 1, "lower": 5}}, "data.preprocessing.statistics"),
    ({"statistics": {"mean": 0, "std": 1, "lower": 5, "upper": 1}},
     "data.preprocessing.statistics"),
    ({"statistics": {"mean": [0, 1], "std": 1, "lower": 0, "upper": 1}},
     "data.preprocessing.statistics"),
])
def test_bad_settings_name_the_key(bad, key):
    with pytest.raises(ValueError, match=re.escape(key)):
        Preprocessor(**bad)


def test_fixed_size_and_spacing_exclude_each_other():
    with pytest.raises(ValueError, match=r"data\.spacing and data\.preprocessing\.fixed_size"):
        Preprocessor(spacing=(1, 1, 1), fixed_size={"in_plane": [8, 8], "slices": 4})
