import json

import numpy as np
import pytest
from hydra.utils import instantiate

from tests.conftest import compose_config
from volseg.data.adapters.base import Case, DatasetLayout
from volseg.data.fingerprint import (
    Fingerprint,
    compute_fingerprint,
    load_or_compute_fingerprint,
    with_dataset_statistics,
)
from volseg.data.preprocess import Preprocessor
from volseg.io import Volume, write_volume


class MemoryLayout(DatasetLayout):
    """Cases held in memory, read through the same `read_image` / `read_label` calls."""

    def __init__(self, volumes: dict[str, tuple[Volume, Volume]]) -> None:
        super().__init__("memory")
        self.volumes = volumes
        self.reads = 0

    def list_cases(self) -> list[Case]:
        return [Case(case_id, ()) for case_id in self.volumes]

    def read_image(self, case: Case) -> Volume:
        self.reads += 1
        return self.volumes[case.case_id][0]

    def read_label(self, case: Case) -> Volume:
        return self.volumes[case.case_id][1]


def _dataset(num_cases: int = 3, seed: int = 0) -> MemoryLayout:
    """Two-channel cases of different shapes and spacings, zero outside a box, labels 0..2."""
    rng = np.random.default_rng(seed)
    volumes = {}
    for i in range(num_cases):
        shape = (10 + 2 * i, 9, 6 + i)
        image = np.zeros((2, *shape), np.float32)
        image[:, 1:-2, 2:-1, 1:] = rng.normal([[[[100]]], [[[-50]]]], 30,
                                              (2, shape[0] - 3, shape[1] - 3, shape[2] - 1))
        label = np.zeros(shape, np.uint8)
        label[3:7, 3:6, 2:5] = 1
        if i != 1:  # class 2 in two of three cases
            label[4:6, 4, 3] = 2
        spacing = (0.8 + 0.1 * i, 0.8 + 0.1 * i, 2.0 + i)
        volumes[f"case_{i}"] = (Volume(image, spacing, (1.0, 2.0, 3.0)),
                                Volume(label, spacing, (1.0, 2.0, 3.0)))
    return MemoryLayout(volumes)


def test_statistics_equal_numpy_on_every_foreground_voxel():
    layout = _dataset()
    fingerprint = compute_fingerprint(layout, layout.list_cases(), num_classes=3)
    for channel, stats in enumerate(fingerprint.intensity):
        voxels = np.concatenate([image.array[channel][label.array > 0]
                                 for image, label in layout.volumes.values()]).astype(float)
        low, median, high = np.percentile(voxels, [0.5, 50, 99.5])
        assert stats.voxels == voxels.size
        np.testing.assert_allclose(
            [stats.percentile_00_5, stats.percentile_50, stats.percentile_99_5, stats.mean,
             stats.std, stats.min, stats.max],
            [low, median, high, voxels.mean(), voxels.std(), voxels.min(), voxels.max()],
            rtol=1e-12)


def test_dataset_summary_by_hand():
    layout = _dataset()
    fingerprint = compute_fingerprint(layout, layout.list_cases(), num_classes=3)
    cases = list(layout.volumes.values())
    spacings = np.array([image.spacing for image, _ in cases])
    summary = fingerprint.summary()
    np.testing.assert_allclose(summary["median_spacing"], np.median(spacings, 0))
    np.testing.assert_allclose(summary["min_spacing"], spacings.min(0))
    np.testing.assert_allclose(summary["max_spacing"], spacings.max(0))
    assert summary["median_shape"] == [12, 9, 7]
    # Non-zero box: x from 1 to n-2, y from 2 to 8, z from 1 to the end.
    assert [c.cropped_shape for c in fingerprint.cases] == [[7, 6, 5], [9, 6, 6], [11, 6, 7]]
    expected = sum(np.bincount(label.array.ravel(), minlength=3) for _, label in cases)
    assert summary["class_voxels"] == expected.tolist()
    assert summary["class_case_fraction"] == [1.0, 1.0, pytest.approx(2 / 3)]
    assert {c.orientation for c in fingerprint.cases} == {"LPS"}


def test_sampling_draws_at_most_the_budget_and_is_reproducible():
    layout = _dataset()
    cases = layout.list_cases()
    first = compute_fingerprint(layout, cases, num_classes=3, samples_per_case=20)
    again = compute_fingerprint(layout, cases, num_classes=3, samples_per_case=20)
    sizes = [int((label.array > 0).sum()) for _, label in layout.volumes.values()]
    assert first.intensity[0].voxels == sum(min(n, 20) for n in sizes)
    assert first == again
    everything = compute_fingerprint(layout, cases, num_classes=3)
    assert everything.intensity[0].min <= first.intensity[0].min
    assert first.intensity[0].max <= everything.intensity[0].max


def test_values_past_num_classes_are_not_foreground():
    """An ignore label (sparse annotation) is neither counted nor sampled."""
    layout = _dataset(1)
    image, label = layout.volumes["case_0"]
    label.array[0, 0, 0] = 255
    fingerprint = compute_fingerprint(layout, layout.list_cases(), num_classes=3)
    assert sum(fingerprint.class_voxels) == label.array.size - 1
    assert fingerprint.intensity[0].voxels == int(((label.array > 0) & (label.array < 3)).sum())


def test_spacing_and_shape_follow_the_requested_orientation():
    layout = _dataset(1)
    image, label = layout.volumes["case_0"]
    # Axis 0 runs along world z (S), axis 2 along world x (L): "SPL" in the file.
    swapped = (0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0)
    layout.volumes["case_0"] = tuple(Volume(v.array, v.spacing, v.origin, swapped)
                                     for v in (image, label))
    fingerprint = compute_fingerprint(layout, layout.list_cases(), 3, orientation="LPS")
    case = fingerprint.cases[0]
    assert case.orientation == "SPL"
    assert case.spacing == list(reversed(image.spacing))
    assert case.shape == list(reversed(image.spatial_shape))


def test_save_load_round_trip(tmp_path):
    layout = _dataset()
    fingerprint = compute_fingerprint(layout, layout.list_cases(), num_classes=3)
    path = fingerprint.save(tmp_path / "fingerprint.json")
    data = json.loads(path.read_text())  # plain JSON, with the summary for readers
    assert data["summary"]["cases"] == 3
    assert Fingerprint.load(path) == fingerprint


def test_saved_fingerprint_is_reused_for_the_same_cases(tmp_path):
    layout = _dataset()
    cases = layout.list_cases()
    path = tmp_path / "fingerprint.json"
    first = load_or_compute_fingerprint(path, layout, cases, 3)
    reads = layout.reads
    assert load_or_compute_fingerprint(path, layout, cases, 3) == first
    assert layout.reads == reads
    fewer = load_or_compute_fingerprint(path, layout, cases[:2], 3)
    assert len(fewer.cases) == 2 and layout.reads == reads + 2


def test_with_dataset_statistics_gives_nnunet_ct_normalisation():
    layout = _dataset()
    fingerprint = compute_fingerprint(layout, layout.list_cases(), num_classes=3)
    pre = Preprocessor(intensity="ct_percentile")
    assert pre.needs_statistics
    pre = with_dataset_statistics(pre, fingerprint)
    assert not pre.needs_statistics
    s = fingerprint.intensity
    assert pre.statistics == {"mean": [s[0].mean, s[1].mean], "std": [s[0].std, s[1].std],
                              "lower": [s[0].percentile_00_5, s[1].percentile_00_5],
                              "upper": [s[0].percentile_99_5, s[1].percentile_99_5]}
    image = layout.volumes["case_0"][0]
    out = pre.image(image).array
    expected = (np.clip(image.array[1], s[1].percentile_00_5, s[1].percentile_99_5)
                - s[1].mean) / s[1].std
    np.testing.assert_allclose(out[1], expected, rtol=1e-5, atol=1e-5)


def test_with_dataset_statistics_needs_foreground():
    layout = _dataset(1)
    layout.volumes["case_0"][1].array[:] = 0
    fingerprint = compute_fingerprint(layout, layout.list_cases(), num_classes=3)
    assert fingerprint.intensity[0].mean is None
    json.dumps(fingerprint.to_dict(), allow_nan=False)  # no NaN in the file
    with pytest.raises(ValueError, match="no foreground voxels"):
        with_dataset_statistics(Preprocessor(intensity="ct_percentile"), fingerprint)


def _raw_task(root, offset: float) -> np.ndarray:
    """An nnU-Net raw task with cases c0, c1 (1 channel, labels 0..1); its foreground voxels."""
    rng = np.random.default_rng(int(offset) % 1000)
    (root / "dataset.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1},
        "file_ending": ".nii.gz"}))
    foreground = []
    for case in ("c0", "c1"):
        image = rng.normal(offset, 20.0, (8, 8, 4)).astype(np.float32)
        label = np.zeros((8, 8, 4), np.uint8)
        label[2:6, 2:6, 1:3] = 1
        write_volume(Volume(image, (1.0, 1.0, 2.0)), root / "imagesTr" / f"{case}_0000.nii.gz")
        write_volume(Volume(label, (1.0, 1.0, 2.0)), root / "labelsTr" / f"{case}.nii.gz")
        foreground.append(image[label > 0])
    return np.concatenate(foreground).astype(np.float64)


def test_datasets_sharing_a_cache_dir_keep_their_own_fingerprints(tmp_path):
    cache_dir = tmp_path / "cache"
    tasks = {"a": tmp_path / "one" / "Task", "b": tmp_path / "two" / "Task"}  # one folder name
    voxels = {"a": _raw_task(tasks["a"], 100.0), "b": _raw_task(tasks["b"], -500.0)}
    modules = {}
    for name, root in tasks.items():  # a, then b: b must not take a's saved statistics
        cfg = compose_config("train", tmp_path, [
            "data=decathlon", f"data.root={root}", f"data.cache_dir={cache_dir}",
            "data.preprocessing.intensity=ct_percentile", "data.cache_workers=0"])
        modules[name] = instantiate(cfg.data)
        modules[name].prepare_data()

    paths = {name: dm.fingerprint_path for name, dm in modules.items()}
    assert paths["a"] != paths["b"]
    assert sorted(cache_dir.glob("*/fingerprint.json")) == sorted(paths.values())
    for name, dm in modules.items():
        assert paths[name].parent.name.startswith("Task-")
        saved = Fingerprint.load(paths[name]).intensity[0]
        assert saved.mean == pytest.approx(voxels[name].mean())
        assert saved.voxels == voxels[name].size
        assert dm.preprocessor.statistics["mean"] == [pytest.approx(voxels[name].mean())]
        # The preprocessed cases live in the same dataset folder, apart from the other's.
        assert dm.cache.folder.parent == paths[name].parent
        assert sorted(p.name for p in dm.cache.folder.glob("*.image.npy")) == [
            "c0.image.npy", "c1.image.npy"]
