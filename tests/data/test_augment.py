"""Augmentation: one composed resampling per patch, checked against independent references."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from volseg.data.augment import (
    INTENSITY_TRANSFORMS,
    Augmentation,
    BatchAugmentation,
    IntensityAugment,
    SpatialAugment,
    SpatialParams,
    adjust_contrast,
    adjust_gamma,
    coarse_displacements,
    control_offsets,
    crop,
    elastic_field,
    gaussian_blur,
    resample_patch,
    sampling_offsets,
    simulate_low_resolution,
)
from volseg.data.sampling import PatchSampler

NO_INTENSITY = {f"{name}_prob": 0.0 for name in INTENSITY_TRANSFORMS}


def _volume(shape, seed=0, classes=3):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(2, *shape)).astype(np.float32)
    label = rng.integers(0, classes, shape).astype(np.uint8)
    return image, label


def _patch(image, label, params, start, size, spacing=(1.0, 1.0, 1.0), fill=0):
    centre = [s + (p - 1) / 2 for s, p in zip(start, size)]
    return resample_patch(image, label, centre, control_offsets(params, size, spacing), size,
                          fill)


@pytest.mark.parametrize("start", [(3, 2, 1), (-2, 5, 4)])  # inside; overhanging x < 0, z > 11
def test_identity_parameters_return_the_plain_crop(start):
    image, label = _volume((14, 12, 11))
    size = (6, 7, 8)
    image_patch, label_patch = _patch(image, label, SpatialParams(), start, size, fill=7)
    # Trilinear weights at integer coordinates are 0 and 1 up to float32 rounding.
    np.testing.assert_allclose(image_patch.numpy(), crop(image, start, size), atol=1e-5)
    np.testing.assert_array_equal(label_patch.numpy(), crop(label, start, size, fill=7))


@pytest.mark.parametrize("axis, dims", [(0, (1, 2)), (1, (2, 0)), (2, (0, 1))])
def test_90_degree_rotation_equals_rot90(axis, dims):
    image, label = _volume((8, 8, 8), seed=axis)
    angles = [0.0, 0.0, 0.0]
    angles[axis] = math.pi / 2
    image_patch, label_patch = _patch(image, label, SpatialParams(angles=tuple(angles)),
                                      (0, 0, 0), (8, 8, 8))
    # A right-handed rotation of the sampling grid about `axis` is rot90 by -1 in its plane.
    expected_image = torch.rot90(torch.from_numpy(image), -1, [d + 1 for d in dims])
    expected_label = torch.rot90(torch.from_numpy(label), -1, list(dims))
    torch.testing.assert_close(image_patch, expected_image, atol=1e-5, rtol=0)
    assert torch.equal(label_patch, expected_label)


def test_flips_fold_into_the_grid():
    image, label = _volume((6, 7, 8))
    params = SpatialParams(flips=(True, False, True))
    image_patch, label_patch = _patch(image, label, params, (0, 0, 0), (6, 7, 8))
    torch.testing.assert_close(image_patch, torch.from_numpy(image).flip(1, 3), atol=1e-5,
                               rtol=0)
    assert torch.equal(label_patch, torch.from_numpy(label).flip(0, 2))


def _all_spatial(**overrides):
    settings = dict(flip_prob=0.5, rotation_prob=1.0, rotation_deg=(30, 30, 30), scale_prob=1.0,
                    scale_range=(0.8, 1.3), scale_isotropic=False, elastic_prob=1.0,
                    elastic_sigma=3.0, elastic_max=6.0, elastic_spacing=8)
    settings.update(overrides)
    return Augmentation(SpatialAugment(**settings), IntensityAugment(**NO_INTENSITY))


def test_image_and_label_move_together():
    shape = (40, 36, 32)
    label = np.zeros(shape, np.uint8)
    # Asymmetric marker blocks: a mirror or rotation applied to one of them only shows.
    label[4:14, 6:12, 3:9] = 1
    label[22:35, 20:30, 18:30] = 1
    label[25:30, 5:9, 20:28] = 1
    image = label[None].astype(np.float32)
    sampler = PatchSampler((24, 24, 20), foreground_fraction=0.5,
                           augmentation=_all_spatial())
    locations = {1: np.flatnonzero(label.ravel() == 1)}
    rng = np.random.default_rng(0)
    for _ in range(10):
        image_patch, label_patch = sampler.sample(image, label, locations, rng)
        # With labels 0/1 a trilinear value of exactly 1 (or 0) means all eight neighbours are
        # 1 (or 0), so the nearest one must be too.
        ones, zeros = image_patch[0] > 1 - 1e-5, image_patch[0] < 1e-5
        assert (label_patch[ones] == 1).all() and (label_patch[zeros] == 0).all()
        assert ones.sum() + zeros.sum() > 0.5 * label_patch.size


def test_labels_stay_in_the_class_set_and_ignore_survives():
    image, label = _volume((30, 30, 30), classes=3)
    label[::4] = 255  # unannotated slices
    sampler = PatchSampler((20, 20, 20), 0.0, augmentation=_all_spatial(), label_fill=255)
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(5):
        _, label_patch = sampler.sample(image, label, {}, rng)
        seen |= set(np.unique(label_patch).tolist())
    assert seen == {0, 1, 2, 255}


def test_outside_the_volume_reads_fill_values():
    image, label = _volume((10, 10, 10))
    image += 5  # no zeros inside
    params = SpatialParams(angles=(0.0, 0.0, 0.3))
    image_patch, label_patch = _patch(image, label, params, (-6, 0, 0), (10, 10, 10), fill=9)
    assert (image_patch[:, 0] == 0).all() and (label_patch[0] == 9).all()
    # A small rotation keeps the middle of the far x face inside the volume.
    assert (label_patch[-1, 3:7] != 9).all()


def test_elastic_displacement_stays_within_its_bound():
    rng = np.random.default_rng(0)
    size = (41, 33, 17)  # (size - 1) multiples of 8: control points fall on voxels
    # sigma far above the bound: most control vectors are clipped, so the bound is tight.
    coarse = coarse_displacements(rng, size, spacing=8, sigma=20.0, max_length=5.0)
    assert coarse.shape == (3, 6, 5, 3)
    dense = elastic_field(torch.from_numpy(coarse), size)
    length = dense.norm(dim=-1)
    assert length.max() <= 5.0 + 1e-4 and length.max() > 4.0
    # The same field through the whole grid: offsets minus the plain grid are the displacement.
    params = SpatialParams(elastic=coarse)
    moved = sampling_offsets(params, size) - sampling_offsets(SpatialParams(), size)
    torch.testing.assert_close(moved, dense, atol=1e-4, rtol=0)
    # Separable interpolation agrees with torch's dense trilinear one (an independent path).
    reference = torch.nn.functional.interpolate(
        torch.from_numpy(coarse)[None], size=size, mode="trilinear", align_corners=True)[0]
    torch.testing.assert_close(dense, reference.permute(1, 2, 3, 0), atol=1e-5, rtol=0)
    # The field interpolates the control vectors: it equals them on the control points.
    torch.testing.assert_close(dense[::8, ::8, ::8], torch.from_numpy(coarse).permute(1, 2, 3, 0),
                               atol=1e-5, rtol=0)


def test_same_seed_same_patches():
    image, label = _volume((30, 30, 30))
    augmentation = _all_spatial()
    augmentation = Augmentation(augmentation.spatial, IntensityAugment())
    sampler = PatchSampler((16, 16, 16), 0.0, augmentation=augmentation)
    first = [sampler.sample(image, label, {}, np.random.default_rng(5)) for _ in range(2)]
    other = sampler.sample(image, label, {}, np.random.default_rng(6))
    for a, b in zip(*first):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0][0], other[0])


def _dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("axis", [0, 1])
def test_rotation_keeps_a_sphere_in_mm_a_sphere(axis):
    spacing = (1.0, 1.0, 3.0)
    shape = (48, 48, 16)
    grid = np.indices(shape).astype(np.float32)
    mm = (grid - (np.array(shape)[:, None, None, None] - 1) / 2) * np.array(
        spacing)[:, None, None, None]
    label = ((mm**2).sum(0) <= 15.0**2).astype(np.uint8)  # a 15 mm ball, 10 slices thick
    image = label[None].astype(np.float32)
    angles = [0.0, 0.0, 0.0]
    angles[axis] = math.radians(40)  # tilts the ball's z extent into x or y
    params = SpatialParams(angles=tuple(angles))
    _, plain = _patch(image, label, SpatialParams(), (0, 0, 0), shape, spacing)
    _, physical = _patch(image, label, params, (0, 0, 0), shape, spacing)
    _, in_voxels = _patch(image, label, params, (0, 0, 0), shape)  # ignores the spacing
    assert _dice(physical.numpy() == 1, plain.numpy() == 1) > 0.9
    assert _dice(in_voxels.numpy() == 1, plain.numpy() == 1) < 0.8


def test_anisotropic_scaling_per_axis_is_used():
    augment = SpatialAugment(flip_prob=0, rotation_prob=0, scale_prob=1, scale_isotropic=False)
    scales = augment.draw(np.random.default_rng(0), (8, 8, 8)).scales
    assert len(set(scales)) == 3 and all(0.85 <= s <= 1.25 for s in scales)


# --- intensity ---------------------------------------------------------------------------------


def test_no_intensity_probability_leaves_the_image():
    image = torch.randn(2, 6, 6, 6)
    out = IntensityAugment(**NO_INTENSITY)(image, np.random.default_rng(0))
    assert torch.equal(out, image)


def test_every_intensity_transform_changes_the_image_reproducibly():
    image = torch.randn(1, 12, 12, 12)
    everything = IntensityAugment(**{k: 1.0 for k in NO_INTENSITY})
    first = everything(image, np.random.default_rng(3))
    again = everything(image, np.random.default_rng(3))
    assert torch.equal(first, again) and not torch.allclose(first, image, atol=1e-3)


def test_intensity_transforms_by_hand():
    ramp = torch.linspace(0, 1, 1000).reshape(1, 10, 10, 10)
    gamma = adjust_gamma(ramp, 2.0)
    # Mean and std restored (nnU-Net's retain_stats) and the order kept.
    torch.testing.assert_close(gamma.mean(), ramp.mean(), atol=1e-5, rtol=0)
    torch.testing.assert_close(gamma.std(), ramp.std(), atol=1e-5, rtol=0)
    assert (gamma.flatten().diff() >= -1e-6).all()
    contrast = adjust_contrast(ramp, 2.0)
    assert contrast.min() == 0 and contrast.max() == 1  # clipped to the old range
    constant = torch.full((2, 7, 8, 9), 3.0)
    torch.testing.assert_close(gaussian_blur(constant, 1.0), constant)
    torch.testing.assert_close(simulate_low_resolution(constant, 0.5), constant)
    impulse = torch.zeros(1, 9, 9, 9)
    impulse[0, 4, 4, 4] = 1
    blurred = gaussian_blur(impulse, 1.0)
    torch.testing.assert_close(blurred.sum(), torch.tensor(1.0))
    # Separable Gaussian: the ratio of neighbours along each axis is exp(-1/2) for sigma 1.
    for axis in range(3):
        index = [0, 4, 4, 4]
        index[axis + 1] = 5
        ratio = blurred[tuple(index)] / blurred[0, 4, 4, 4]
        torch.testing.assert_close(ratio, torch.tensor(math.exp(-0.5)), atol=2e-3, rtol=0)


# --- configuration, batches on the device -------------------------------------------------------


def test_config_builds_and_refuses_unknown_settings():
    augmentation = Augmentation.from_config({"rotation_prob": 0.5, "gamma_range": [0.8, 1.2]},
                                            flip_prob=0.3)
    assert augmentation.spatial.flip_prob == 0.3 and augmentation.spatial.rotation_prob == 0.5
    assert tuple(augmentation.intensity.gamma_range) == (0.8, 1.2)
    with pytest.raises(ValueError, match="unknown settings.*rotaton_prob"):
        Augmentation.from_config({"rotaton_prob": 0.5}, flip_prob=0.5)
    with pytest.raises(ValueError, match="data.augment.scale_prob"):
        Augmentation.from_config({"scale_prob": 2}, flip_prob=0.5)


def test_batch_augmentation_of_plain_crops_matches_per_patch_resampling():
    image, label = _volume((8, 8, 8))
    batch = {"image": torch.from_numpy(image)[None].repeat(2, 1, 1, 1, 1),
             "label": torch.from_numpy(label.astype(np.int64))[None].repeat(2, 1, 1, 1),
             "spacing": torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 2.0]])}
    rotate = Augmentation(SpatialAugment(flip_prob=0, rotation_prob=1, rotation_deg=(0, 0, 20),
                                         scale_prob=0), IntensityAugment(**NO_INTENSITY))
    out = BatchAugmentation(rotate, label_fill=4)(batch, torch.Generator().manual_seed(0))
    assert out["image"].shape == batch["image"].shape and out["label"].dtype == torch.int64
    # Replay the first patch's draw and resample it on its own from the volume.
    seed = int(torch.randint(0, 2**62, (), generator=torch.Generator().manual_seed(0)))
    params = rotate.spatial.draw(np.random.default_rng(seed), (8, 8, 8))
    image_patch, label_patch = _patch(image, label, params, (0, 0, 0), (8, 8, 8), fill=4)
    torch.testing.assert_close(out["image"][0], image_patch, atol=1e-5, rtol=0)
    assert torch.equal(out["label"][0], label_patch.long())
    assert set(out["label"].unique().tolist()) <= {0, 1, 2, 4}


def test_data_module_hook_augments_training_batches_only():
    from volseg.data.datamodule import SegmentationDataModule

    hook = SegmentationDataModule.on_after_batch_transfer
    image, label = _volume((6, 6, 6))
    batch = {"image": torch.from_numpy(image)[None], "label": torch.from_numpy(label)[None]}
    flip = Augmentation.from_config({**NO_INTENSITY, "rotation_prob": 0, "scale_prob": 0},
                                    flip_prob=1.0)
    data = SimpleNamespace(batch_augmentation=BatchAugmentation(flip),
                           trainer=SimpleNamespace(training=True))
    out = hook(data, batch, 0)
    assert torch.equal(out["label"], batch["label"].flip(1, 2, 3))
    torch.testing.assert_close(out["image"], batch["image"].flip(2, 3, 4), atol=1e-5, rtol=0)
    data.trainer.training = False  # validation, test: whole volumes, untouched
    assert hook(data, batch, 0) is batch
    data.trainer.training, data.batch_augmentation = True, None  # augment_device: cpu
    assert hook(data, batch, 0) is batch


@pytest.mark.slow
def test_gpu_augment_device_trains_with_the_data_module_hook(train_config, monkeypatch):
    import volseg

    calls = []
    original = BatchAugmentation.__call__

    def counted(self, batch, generator=None):
        calls.append(tuple(batch["image"].shape))
        return original(self, batch, generator)

    monkeypatch.setattr(BatchAugmentation, "__call__", counted)
    cfg = train_config("debug=fdr", "data.augment_device=gpu", "data.augment.rotation_prob=1.0")
    metrics = volseg.train(cfg)
    assert np.isfinite(metrics["val/loss"])
    assert len(calls) == 1 and len(calls[0]) == 5  # the one fdr training batch, not val
