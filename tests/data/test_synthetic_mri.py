"""The synthetic MR generator: thin oblique vessels, a lobed organ beside a neighbour that only the
second channel tells apart, faint lesions, bias field and geometry; written by the shared phantom
writer, through `SyntheticLayout` and ``data=synthetic_mri``."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from hydra.utils import instantiate
from scipy import ndimage

from tests.conftest import compose_config
from volseg.data import synthetic, synthetic_mri
from volseg.data.adapters.synthetic import SyntheticLayout
from volseg.data.synthetic import generate_phantom_dataset
from volseg.data.synthetic_mri import LABELS, synthetic_mri_case

# Two thirds of the default field of view: about 105 x 105 x 26 voxels, a tenth of a second a case.
SIZE = (96.0, 96.0, 90.0)
SEED = 11
SIX_NEIGHBOURS = ndimage.generate_binary_structure(3, 1)
VESSEL, ORGAN, LESION = LABELS["vessel"], LABELS["organ"], LABELS["lesion"]
# Without noise, blur or bias field every tissue has one exact intensity per channel.
CLEAN = {"noise": (0.0, 0.0), "blur_sigma_mm": 0.0}


@pytest.fixture(scope="module")
def cases() -> list:
    return [synthetic_mri_case(SEED, i, size_mm=SIZE) for i in range(4)]


@pytest.fixture(scope="module")
def clean_cases() -> list:
    """The same anatomy as `cases`, noise-free; ``(biased, flat, label)`` per case."""
    result = []
    for i in range(4):
        biased, label = synthetic_mri_case(SEED, i, size_mm=SIZE, **CLEAN)
        flat, _ = synthetic_mri_case(SEED, i, size_mm=SIZE, bias=(0.0, 0.0), **CLEAN)
        result.append(([c.array.astype(float) for c in biased],
                       [c.array.astype(float) for c in flat], label.array))
    return result


def test_deterministic_per_seed_and_index():
    (t1, t2), label = synthetic_mri_case(3, 1, size_mm=SIZE)
    (t1_again, t2_again), label_again = synthetic_mri_case(3, 1, size_mm=SIZE)
    for array, again in [(t1, t1_again), (t2, t2_again), (label, label_again)]:
        np.testing.assert_array_equal(array.array, again.array)
        assert array.geometry() == again.geometry()
    (other, _), _ = synthetic_mri_case(3, 2, size_mm=SIZE)
    assert other.spacing != t1.spacing  # continuous draws: equal only by accident
    assert other.array.shape != t1.array.shape or not np.array_equal(other.array, t1.array)


def test_geometry(cases):
    spacings = []
    for (t1, t2), label in cases:
        sx, sy, sz = t1.spacing
        assert sx == sy and 0.8 <= sx <= 1.0 and 3.0 <= sz <= 4.0
        assert sz / sx >= 3.0
        expected = tuple(int(round(s / d)) for s, d in zip(SIZE, t1.spacing, strict=True))
        assert t1.spatial_shape == expected
        assert np.linalg.norm(t1.origin) > 1
        assert t1.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
        assert t2.geometry() == label.geometry() == t1.geometry()
        spacings.append(t1.spacing)
    assert len(set(spacings)) == len(spacings)  # spacing varies per case


def test_labels_and_intensities(cases):
    organ_t1 = []
    for (t1, t2), label in cases:
        assert t1.array.dtype == t2.array.dtype == np.int16 and label.array.dtype == np.uint8
        assert set(np.unique(label.array)) == {0, VESSEL, ORGAN, LESION}
        counts = np.bincount(label.array.ravel(), minlength=4)
        assert counts[LESION] < counts[ORGAN] / 10 and counts[VESSEL] < counts[ORGAN] / 5
        _, n_lesions = ndimage.label(label.array == LESION, SIX_NEIGHBOURS)
        assert 1 <= n_lesions <= 4
        for channel in (t1.array, t2.array):
            # Magnitude images: nothing negative; the air in the corners is Rician noise, not
            # zeros (why data=synthetic_mri z-scores with nonzero: false).
            assert channel.min() >= 0
            air = channel[:4, :4, :]
            assert air.mean() > 1 and air.std() > 1
        organ_t1.append(np.median(t1.array[label.array == ORGAN]))
    # An arbitrary scale per case: raw intensities are not comparable between cases.
    assert max(organ_t1) / min(organ_t1) > 1.5


def test_vessels_are_thin_and_cross_the_slices_obliquely(cases):
    for _, label in cases:
        vessel, organ = label.array == VESSEL, label.array == ORGAN
        # Radii of 1.2-3 mm at the default field of view (2 mm here): up to one in-plane voxel
        # more, because the distance is measured to the centre of the nearest outside voxel.
        assert _inscribed_radius(vessel, label.spacing) < 3.5
        assert _inscribed_radius(organ, label.spacing) > 10.0  # it tells a blob from a tube
        per_slice = vessel.sum(axis=(0, 1))
        assert np.count_nonzero(per_slice) >= 4
        # Oblique: the tree moves in-plane from slice to slice, so no slice holds much of its
        # in-plane footprint (a tube along z would put all of it in every slice).
        footprint = vessel.any(axis=2).sum()
        assert max(vessel[:, :, k].sum() for k in range(vessel.shape[2])) < 0.6 * footprint


def _inscribed_radius(mask: np.ndarray, spacing: tuple[float, ...]) -> float:
    """Largest in-plane distance (mm) from a mask voxel to the nearest voxel outside it."""
    return max(ndimage.distance_transform_edt(mask[:, :, k], sampling=spacing[:2]).max()
               for k in range(mask.shape[2]))


def test_lesions_are_enclosed_by_the_organ(cases):
    for _, label in cases:
        # Every 6-neighbour of a lesion voxel is organ or lesion: not background, not vessel,
        # not outside the array (border_value).
        other = ~np.isin(label.array, (ORGAN, LESION))
        near_other = ndimage.binary_dilation(other, SIX_NEIGHBOURS, border_value=1)
        assert not (near_other & (label.array == LESION)).any()


def test_lesions_differ_faintly_and_oppositely_on_the_two_channels(clean_cases):
    for _, (t1, t2), label in clean_cases:
        organ = label == ORGAN
        lesions, n_lesions = ndimage.label(label == LESION, SIX_NEIGHBOURS)
        for i in range(1, n_lesions + 1):
            lesion = lesions == i
            darker = t1[lesion].mean() / t1[organ].mean()
            brighter = t2[lesion].mean() / t2[organ].mean()
            # 10-20% either way, drawn per lesion (+-1% for rounding to integers).
            assert 0.79 < darker < 0.91 and 1.09 < brighter < 1.21


def test_organ_touches_a_neighbour_that_only_t2_tells_apart(clean_cases):
    for _, (t1, t2), label in clean_cases:
        organ = label == ORGAN
        organ_t1, organ_t2 = t1[organ].mean(), t2[organ].mean()
        touching = ndimage.binary_dilation(organ, SIX_NEIGHBOURS) & (label == 0)
        # Unlabelled voxels against the organ that T1 cannot tell from it: the neighbour organ.
        alike_on_t1 = touching & (np.abs(t1 / organ_t1 - 1) < 0.05)
        assert alike_on_t1.sum() >= 20
        # T2 tells every one of them apart.
        assert (t2[alike_on_t1] > 1.4 * organ_t2).all()


def test_bias_field_is_smooth_large_and_differs_per_channel(clean_cases):
    for biased, flat, label in clean_cases:
        body = flat[0] > 0
        fields = [np.where(body, b / np.maximum(f, 1), np.nan) for b, f in zip(biased, flat)]
        organ = label == ORGAN
        for field in fields:
            # +-20-30% over the body: max / min is at least 1.2 ** 2.
            assert np.nanmax(field) / np.nanmin(field) > 1.4
            # Smooth: a few percent at most between neighbouring voxels, where independent
            # per-voxel gains would differ by tens of percent.
            assert np.nanmax(np.abs(np.diff(field, axis=0))) < 0.03
            assert np.nanmax(np.abs(np.diff(field, axis=2))) < 0.1
        # Within the organ alone, the intensity drifts by over 10% on at least one channel.
        assert max(field[organ].max() / field[organ].min() for field in fields) > 1.1
        assert np.nanmax(np.abs(fields[0] - fields[1])) > 0.05  # one field per channel


def test_dataset_files_and_json(tmp_path):
    root = generate_phantom_dataset(synthetic_mri.PHANTOM, tmp_path / "ds", num_cases=2,
                                    seed=SEED, size_mm=SIZE)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "T1", "1": "T2"}
    assert meta["labels"] == {"background": 0, "vessel": 1, "organ": 2, "lesion": 3}
    assert meta["numTraining"] == 2 and meta["file_ending"] == ".nii.gz"
    assert meta["name"] != "volseg_synthetic" and meta["description"]
    assert meta["volseg_synthetic"] == {"phantom": "mri", "generator_version": 1,
                                        "num_cases": 2, "seed": SEED, "size_mm": list(SIZE)}
    assert sorted(p.name for p in (root / "imagesTr").iterdir()) == [
        "synthmr_000_0000.nii.gz", "synthmr_000_0001.nii.gz",
        "synthmr_001_0000.nii.gz", "synthmr_001_0001.nii.gz"]
    assert sorted(p.name for p in (root / "labelsTr").iterdir()) == [
        "synthmr_000.nii.gz", "synthmr_001.nii.gz"]
    (t1, t2), label = synthetic_mri_case(SEED, 1, size_mm=SIZE)
    for name, volume in [("imagesTr/synthmr_001_0000", t1), ("imagesTr/synthmr_001_0001", t2),
                         ("labelsTr/synthmr_001", label)]:
        nifti = nib.load(root / f"{name}.nii.gz")
        np.testing.assert_allclose(nifti.header.get_zooms(), volume.spacing, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(nifti.dataobj), volume.array)

    written = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    generate_phantom_dataset(synthetic_mri.PHANTOM, root, num_cases=2, seed=SEED, size_mm=SIZE)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == written
    # Same parameters, other phantom: not taken for the dataset already there, but replacing it.
    generate_phantom_dataset(synthetic.PHANTOM, root, num_cases=2, seed=SEED, size_mm=SIZE)
    assert sorted(p.name for p in (root / "labelsTr").iterdir()) == [
        "synth_000.nii.gz", "synth_001.nii.gz"]


def test_data_config_generates_and_reads_the_dataset(tmp_path):
    size = ",".join(map(str, SIZE))
    cfg = compose_config("train", tmp_path, ["data=synthetic_mri", "data.layout.num_cases=2",
                                             f"data.layout.size_mm=[{size}]"])
    assert cfg.data.root == str(tmp_path / "data" / "synthetic_mri")
    assert cfg.model.in_channels == 2 and cfg.model.out_channels == 4
    datamodule = instantiate(cfg.data)
    layout = datamodule.layout
    assert isinstance(layout, SyntheticLayout) and layout.phantom is synthetic_mri.PHANTOM
    layout.prepare()
    assert layout.channel_names == ["T1", "T2"]
    assert layout.class_names == list(cfg.data.class_names)
    cases = layout.list_cases()
    assert [c.case_id for c in cases] == ["synthmr_000", "synthmr_001"]
    image = layout.read_image(cases[0])
    assert image.array.shape[0] == 2
    np.testing.assert_array_equal(image.array[1],
                                  synthetic_mri_case(0, 0, size_mm=SIZE)[0][1].array)


def test_config_sizes_fit_the_default_volumes(tmp_path):
    """A training patch fits in every default-size volume, and the tile is the patch (instance
    norm normalises over the tile: see volseg.inference.norm_checks)."""
    cfg = compose_config("train", tmp_path, ["data=synthetic_mri"])
    preprocessor = instantiate(cfg.data).preprocessor
    patch = cfg.data.patch_size
    assert list(cfg.module.inference.tile_size) == list(patch)
    for index in range(3):
        _, label = synthetic_mri_case(0, index)
        shape = preprocessor.target_shape(label)
        assert all(p <= s for p, s in zip(patch, shape, strict=True)), shape


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"noise": (0.05, 0.01)}, "noise"), ({"bias": (-0.1, 0.2)}, "bias"),
     ({"blur_sigma_mm": -1.0}, "blur_sigma_mm"), ({"size_mm": (96.0, 96.0)}, "size_mm")],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic_mri_case(0, **kwargs)


def test_layout_names_the_unknown_phantom(tmp_path):
    with pytest.raises(ValueError, match="phantom must be one of"):
        SyntheticLayout(tmp_path, phantom="pet")
