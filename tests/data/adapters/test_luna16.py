"""LUNA16: MetaImage scans in subset folders, nodules from annotations.csv drawn as balls."""

import csv
import math

import numpy as np
import pytest
import SimpleITK as sitk

from volseg.data.adapters.luna16 import LUNA16Layout, render_spheres
from volseg.io import VolumeReadError

# An oblique, flipped grid: 30 degrees about z, then z reversed (columns are axis directions).
_C, _S = math.cos(math.pi / 6), math.sin(math.pi / 6)
DIRECTION = (_C, -_S, 0.0, _S, _C, 0.0, 0.0, 0.0, -1.0)
SPACING = (0.7, 0.8, 2.5)
ORIGIN = (-170.3, -95.2, 310.5)
SHAPE = (40, 36, 16)  # (x, y, z) voxels


def write_scan(root, subset, uid, shape=SHAPE, spacing=SPACING, origin=ORIGIN,
               direction=DIRECTION):
    """A LUNA16 scan ``<root>/<subset>/<uid>.mhd`` + ``.raw``; returns the SimpleITK image."""
    image = sitk.GetImageFromArray(np.full(shape[::-1], -1000, np.int16))  # (z, y, x) array
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    (root / subset).mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(root / subset / f"{uid}.mhd"))
    return image


def write_annotations(root, rows):
    with (root / "annotations.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"])
        writer.writerows(rows)


def write_dataset(root, scans=5, shape=(16, 16, 8), spacing=(1.5, 1.5, 2.5)):
    """A small LUNA16 tree: ``scans`` scans in two subsets, each with one 9 mm nodule near its
    centre, so Dice is defined in every split."""
    rows = []
    for i in range(scans):
        image = write_scan(root, f"subset{i % 2}", f"1.3.6.{i}", shape=shape, spacing=spacing)
        centre = (shape[0] / 2 + 0.2, shape[1] / 2 - 0.3, shape[2] / 2 + 0.1)
        rows.append([f"1.3.6.{i}", *image.TransformContinuousIndexToPhysicalPoint(centre), 9.0])
    write_annotations(root, rows)


def brute_force_ball(image, centre, diameter):
    """Independent reference: the world point of every voxel of the grid, tested one by one.

    World points come from numpy over the full grid (origin + direction @ (index * spacing)),
    checked against SimpleITK's own index-to-world transform at the grid's corners.
    """
    size = image.GetSize()
    index = np.indices(size).reshape(3, -1).astype(float)
    matrix = np.reshape(image.GetDirection(), (3, 3)) * np.asarray(image.GetSpacing())
    world = np.asarray(image.GetOrigin())[:, None] + matrix @ index
    for corner in np.ndindex(2, 2, 2):
        voxel = tuple(int(c * (n - 1)) for c, n in zip(corner, size))
        flat = np.ravel_multi_index(voxel, size)
        np.testing.assert_allclose(world[:, flat], image.TransformIndexToPhysicalPoint(voxel),
                                   atol=1e-9)
    inside = np.linalg.norm(world - np.asarray(centre)[:, None], axis=0) <= diameter / 2
    return inside.reshape(size).astype(np.uint8)


def test_ball_lands_where_simpleitk_says(tmp_path):
    image = write_scan(tmp_path, "subset0", "1.2.3")
    # A centre between voxels, given in world mm as LUNA16 gives it.
    centre = image.TransformContinuousIndexToPhysicalPoint((20.3, 17.6, 8.2))
    diameter = 12.0
    write_annotations(tmp_path, [["1.2.3", *centre, diameter]])
    layout = LUNA16Layout(tmp_path)
    (case,) = layout.list_cases()
    label = layout.read_label(case)

    assert label.array.dtype == np.uint8 and label.spatial_shape == SHAPE
    assert label.geometry_mismatch(layout.read_image(case)) is None
    # The centre's voxel, as SimpleITK rounds the world point to an index, is inside.
    assert label.array[image.TransformPhysicalPointToIndex(centre)] == 1
    # Voxel for voxel what a brute-force test of every voxel centre gives.
    np.testing.assert_array_equal(label.array, brute_force_ball(image, centre, diameter))
    # About the analytic volume: 4/3 pi r^3 / voxel volume. Tolerance 10%: 2.5 mm slices
    # through a 6 mm radius ball leave a discretisation error of a few percent.
    expected = 4 / 3 * math.pi * (diameter / 2) ** 3 / np.prod(SPACING)
    assert abs(label.array.sum() - expected) < 0.1 * expected
    # Its centre of mass sits at the annotated centre (to within a fraction of a voxel).
    mean_index = np.argwhere(label.array).mean(axis=0)
    np.testing.assert_allclose(image.TransformContinuousIndexToPhysicalPoint(mean_index),
                               centre, atol=0.5)


def test_ball_cut_by_the_scan_border_is_clipped(tmp_path):
    image = write_scan(tmp_path, "subset0", "edge")
    centre = image.TransformContinuousIndexToPhysicalPoint((1.0, 34.5, 15.0))  # in a corner
    mask = render_spheres(SHAPE, SPACING, ORIGIN, DIRECTION, [(*centre, 10.0)])
    np.testing.assert_array_equal(mask, brute_force_ball(image, centre, 10.0))
    assert 0 < mask.sum() < 4 / 3 * math.pi * 5**3 / np.prod(SPACING) / 2


def test_ball_between_voxel_centres_marks_the_nearest_voxel(tmp_path):
    """A 1 mm nodule between 2.5 mm slices still labels one voxel: no nodule vanishes."""
    image = write_scan(tmp_path, "subset0", "small")
    centre = image.TransformContinuousIndexToPhysicalPoint((12.4, 20.3, 6.4))
    mask = render_spheres(SHAPE, SPACING, ORIGIN, DIRECTION, [(*centre, 0.5)])
    assert mask.sum() == 1 and mask[image.TransformPhysicalPointToIndex(centre)] == 1


def test_big_scan_renders_only_the_ball_box():
    """A real-size scan (512x512x300) with a small nodule: only the ball is touched."""
    spacing, origin = (0.7, 0.7, 1.25), (-180.0, -180.0, -350.0)
    centre = np.add(origin, np.multiply((300, 200, 100), spacing))
    mask = render_spheres((512, 512, 300), spacing, origin, np.eye(3).ravel(), [(*centre, 6.0)])
    nonzero = np.argwhere(mask)
    assert nonzero.min(axis=0).tolist() == [296, 196, 98]
    assert nonzero.max(axis=0).tolist() == [304, 204, 102]


def test_negatives_and_several_nodules(tmp_path):
    a = write_scan(tmp_path, "subset0", "1.1")
    write_scan(tmp_path, "subset1", "1.2", origin=(0.0, 0.0, 0.0), direction=np.eye(3).ravel())
    near = a.TransformContinuousIndexToPhysicalPoint((10.3, 9.6, 5.2))
    far = a.TransformContinuousIndexToPhysicalPoint((30.4, 25.1, 10.7))
    write_annotations(tmp_path, [["1.1", *near, 5.0], ["1.1", *far, 7.0]])
    layout = LUNA16Layout(tmp_path)
    cases = {c.case_id: c for c in layout.list_cases()}
    assert sorted(cases) == ["1.1", "1.2"]  # the scan without nodules stays in
    assert layout.read_label(cases["1.2"]).array.sum() == 0
    label = layout.read_label(cases["1.1"]).array
    expected = brute_force_ball(a, near, 5.0) | brute_force_ball(a, far, 7.0)
    np.testing.assert_array_equal(label, expected)
    assert layout.class_names == ["background", "nodule"]


def test_unknown_series_warns_and_is_skipped(tmp_path):
    image = write_scan(tmp_path, "subset0", "1.1")
    centre = image.TransformContinuousIndexToPhysicalPoint((20, 18, 8))
    write_annotations(tmp_path, [["1.1", *centre, 5.0], ["9.9.9", 0, 0, 0, 5.0]])
    with pytest.warns(UserWarning, match=r"1 annotated series have no scan .* skipped: 9\.9\.9"):
        cases = LUNA16Layout(tmp_path).list_cases()
    assert [c.case_id for c in cases] == ["1.1"] and len(cases[0].extra["nodules"]) == 1


def test_nodule_outside_its_scan_is_an_error(tmp_path):
    """World coordinates that miss the scan mean a wrong convention, not a negative."""
    write_scan(tmp_path, "subset0", "1.1")
    write_annotations(tmp_path, [["1.1", 5000.0, 0.0, 0.0, 5.0]])
    layout = LUNA16Layout(tmp_path)
    (case,) = layout.list_cases()
    with pytest.raises(ValueError, match=r"annotations.csv: series 1.1: .* outside"):
        layout.read_label(case)


def test_missing_files_are_named(tmp_path):
    write_scan(tmp_path, "subset0", "1.1")
    with pytest.raises(FileNotFoundError, match="annotations.csv: missing"):
        LUNA16Layout(tmp_path).list_cases()
    write_annotations(tmp_path, [])
    (tmp_path / "subset0" / "1.1.raw").unlink()
    with pytest.raises(FileNotFoundError, match=r"1\.1\.raw: missing voxel data"):
        LUNA16Layout(tmp_path).list_cases()
    with pytest.raises(FileNotFoundError, match="no subset"):
        LUNA16Layout(tmp_path / "elsewhere").list_cases()


def test_malformed_annotations_name_the_line(tmp_path):
    write_scan(tmp_path, "subset0", "1.1")
    write_annotations(tmp_path, [["1.1", 1.0, 2.0, "x", 5.0]])
    with pytest.raises(ValueError, match=r"annotations.csv:2: not numbers"):
        LUNA16Layout(tmp_path).list_cases()
    (tmp_path / "annotations.csv").write_text("seriesuid,x,y,z,d\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['coordX'"):
        LUNA16Layout(tmp_path).list_cases()
    (tmp_path / "subset0" / "1.1.mhd").write_text("NDims = 3\n")
    write_annotations(tmp_path, [])
    with pytest.raises(VolumeReadError, match="1.1.mhd: no ElementDataFile"):
        LUNA16Layout(tmp_path).list_cases()


@pytest.mark.slow
def test_trains_end_to_end(tmp_path, train_layout):
    """`data=luna16`: six small scans, one a negative, through a short real run."""
    root = tmp_path / "data" / "luna16"
    rows = []
    for i in range(6):
        image = write_scan(root, f"subset{i % 2}", f"1.3.6.{i}", shape=(20, 18, 10),
                           spacing=(1.5, 1.6, 2.5))
        if i != 2:  # 1.3.6.2 has no nodule
            rows.append([f"1.3.6.{i}", *image.TransformContinuousIndexToPhysicalPoint(
                (10.2, 8.7, 4.6)), 9.0])
    write_annotations(root, rows)
    # Dice is undefined on a scan without nodules; should the split put the negative in
    # validation, early stopping would end the run on the NaN, so it is off here.
    cfg, metrics = train_layout("luna16", "callbacks.early_stopping=null",
                                "data.spacing=[1.5,1.6,2.5]")  # the scans' own: no resampling
    assert cfg.data.class_names == ["background", "nodule"]
    assert "test/dice_nodule" in metrics and metrics["epochs"] == cfg.trainer.max_epochs
