import numpy as np
import pytest

from volseg.data.augment import INTENSITY_TRANSFORMS, Augmentation
from volseg.data.sampling import PatchSampler, crop


def test_crop_pads_outside_by_hand():
    array = np.arange(1, 28).reshape(1, 3, 3, 3)
    out = crop(array, (-1, 1, 2), (3, 3, 2))
    assert out.shape == (1, 3, 3, 2)
    # x index -1 is padding; x=0,1 map to rows 1,2; y 1..2 valid, y 3 padding; z 2 valid, z 3 pad.
    expected = np.zeros((3, 3, 2), int)
    expected[1:, :2, 0] = array[0, :2, 1:, 2]
    np.testing.assert_array_equal(out[0], expected)


def test_foreground_patches_contain_foreground():
    label = np.zeros((40, 40, 20), np.uint8)
    label[30:33, 5:8, 15:17] = 2
    locations = {2: np.flatnonzero(label.ravel() == 2)}
    sampler = PatchSampler((16, 16, 8), foreground_fraction=1.0, flip_prob=0.0)
    rng = np.random.default_rng(0)
    image = label[None].astype(np.float32)
    for _ in range(20):
        _, patch = sampler.sample(image, label, locations, rng)
        assert (patch == 2).any()


def test_foreground_voxel_is_centred_or_anywhere_in_the_patch():
    # One foreground voxel at (30, 10, 9) in a 40 x 40 x 20 volume, patch 16 x 16 x 8.
    locations = {1: np.array([np.ravel_multi_index((30, 10, 9), (40, 40, 20))])}
    rng = np.random.default_rng(0)
    centred = PatchSampler((16, 16, 8), foreground_fraction=1.0)
    assert {centred.start((40, 40, 20), locations, rng) for _ in range(50)} == {(22, 2, 5)}
    anywhere = PatchSampler((16, 16, 8), foreground_fraction=1.0, foreground_position="anywhere")
    starts = np.array([anywhere.start((40, 40, 20), locations, rng) for _ in range(2000)])
    # Every corner that keeps the voxel inside the patch and the patch inside the volume:
    # x 15..24 (30 - 15 .. 40 - 16), y 0..10, z 2..9 (9 - 7 .. 9), each reached.
    for axis, (low, high) in enumerate([(15, 24), (0, 10), (2, 9)]):
        assert sorted(set(starts[:, axis])) == list(range(low, high + 1))
    with pytest.raises(ValueError, match="data.foreground_position"):
        PatchSampler((16, 16, 8), foreground_position="edge")


def test_uniform_patches_stay_inside_and_cover_the_volume():
    sampler = PatchSampler((8, 8, 8), foreground_fraction=0.0, flip_prob=0.0)
    rng = np.random.default_rng(0)
    starts = np.array([sampler.start((20, 12, 8), {}, rng) for _ in range(300)])
    assert starts.min(0).tolist() == [0, 0, 0]
    assert starts.max(0).tolist() == [12, 4, 0]


def test_small_volume_is_padded_and_centred():
    sampler = PatchSampler((8, 8, 8), foreground_fraction=0.0, flip_prob=0.0)
    image = np.ones((1, 4, 8, 2), np.float32)
    patch, label = sampler.sample(image, np.ones((4, 8, 2), np.uint8), {},
                                  np.random.default_rng(0))
    assert patch.shape == (1, 8, 8, 8) and label.shape == (8, 8, 8)
    assert patch[0, 2:6, :, 3:5].all() and patch.sum() == 4 * 8 * 2


def test_flips_move_image_and_label_together():
    rng = np.random.default_rng(1)
    label = rng.integers(0, 3, (10, 10, 10)).astype(np.uint8)
    image = label[None].astype(np.float32) * 10
    sampler = PatchSampler((10, 10, 10), foreground_fraction=0.0, flip_prob=0.5)
    flipped_any = False
    for _ in range(10):
        patch, patch_label = sampler.sample(image, label, {}, rng)
        np.testing.assert_array_equal(patch[0], patch_label * 10)
        flipped_any |= not np.array_equal(patch_label, label)
    assert flipped_any


def test_bad_patch_size():
    with pytest.raises(ValueError, match="data.patch_size"):
        PatchSampler((8, 8))


def test_annotation_is_applied_on_the_volume_grid_before_rotating():
    shape = (24, 24, 16)
    image = np.zeros((1, *shape), np.float32)
    label = np.ones(shape, np.uint8)

    def annotate(patch, start):  # only volume slice z = 7 is annotated
        z = np.arange(start[2], start[2] + patch.shape[2])
        return np.where((z == 7)[None, None, :], patch, 255).astype(np.int64)

    # A rotation about z keeps z planes: the annotated plane must stay one whole z plane.
    rotate = Augmentation.from_config(
        {"rotation_prob": 1.0, "rotation_deg": [0, 0, 30], "scale_prob": 0.0,
         **{f"{n}_prob": 0.0 for n in INTENSITY_TRANSFORMS}}, flip_prob=0.0)
    sampler = PatchSampler((16, 16, 16), 0.0, augmentation=rotate, label_fill=255)
    _, patch = sampler.sample(image, label, {}, np.random.default_rng(0), annotate)
    assert set(np.unique(patch).tolist()) == {1, 255}
    planes = np.flatnonzero((patch == 1).any(axis=(0, 1)))
    assert planes.tolist() == [7] and (patch[:, :, 7] == 1).mean() > 0.9
