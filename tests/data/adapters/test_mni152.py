"""Real anatomy through the whole data pipeline: nilearn's bundled MNI152 template.

nilearn ships the ICBM152 2009a T1 template and its grey/white-matter probability maps inside
the package (no download). Four cases are built from them in the `nifti_folder` layout: a
2-channel 4D image (T1 and its inverse, standing in for a second contrast) and a label map of
0 background, 1 grey matter, 2 white matter.
"""

import nibabel as nib
import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import compose_config
from tests.io.test_volume import nifti_affine

datasets = pytest.importorskip("nilearn.datasets")

pytestmark = pytest.mark.slow  # importing nilearn and resampling take ~5 s
CLASSES = "data.class_names=[background,grey_matter,white_matter]"


@pytest.fixture(scope="module")
def mni_root(tmp_path_factory):
    """``<tmp>/data/nifti_folder`` with four MNI152 cases at 4 mm (about 50x59x48 voxels)."""
    t1 = datasets.load_mni152_template(resolution=4)
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=4).dataobj, np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=4).dataobj, np.float32)
    label = np.zeros(gm.shape, np.uint8)
    label[(gm > 0.5) & (gm >= wm)] = 1
    label[(wm > 0.5) & (wm > gm)] = 2
    base = np.asarray(t1.dataobj, np.float32)
    root = tmp_path_factory.mktemp("mni") / "data" / "nifti_folder"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        noisy = base + rng.normal(0, 0.02 * base.max(), base.shape).astype(np.float32)
        image = np.stack([noisy, base.max() - noisy], axis=-1)  # (x, y, z, 2)
        nib.save(nib.Nifti1Image(image, t1.affine), root / "images" / f"mni_{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, t1.affine), root / "labels" / f"mni_{i}.nii.gz")
    return root


def test_mni152_through_the_data_module(mni_root):
    tmp_path = mni_root.parents[1]
    cfg = compose_config("train", tmp_path, [
        "data=nifti_folder", "data.num_classes=3", CLASSES, "data.patch_size=[32,32,32]",
        "data.batch_size=2", "data.num_workers=0",
    ])
    dm = instantiate(cfg.data)
    assert [c.case_id for c in dm.cases()] == [f"mni_{i}" for i in range(4)]

    # Original geometry: the file's own affine, as nibabel (an independent reader) sees it.
    image, label = dm.load_case("mni_1")
    file = nib.load(mni_root / "images" / "mni_1.nii.gz")
    assert image.array.shape == (2, *file.shape[:3])
    np.testing.assert_allclose(nifti_affine(image), file.affine, atol=1e-4)
    np.testing.assert_allclose(image.array, np.moveaxis(np.asarray(file.dataobj), -1, 0))
    assert image.geometry_mismatch(label) is None
    counts = np.bincount(label.array.ravel(), minlength=3)
    assert counts[1] > 1000 and counts[2] > 1000  # real grey and white matter

    dm.prepare_data()
    cached_image, cached_label, _ = dm.cache.load("mni_1")
    assert cached_image.shape == (2, *file.shape[:3])  # data.spacing null keeps the 4 mm grid
    # z-score per channel: zero mean, unit variance.
    np.testing.assert_allclose(cached_image.mean(axis=(1, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(cached_image.std(axis=(1, 2, 3)), 1, atol=1e-3)
    np.testing.assert_array_equal(cached_label, label.array)

    dm.setup("fit")
    parts = [dm.split[name] for name in ("train", "val", "test")]
    assert all(parts) and sorted(sum(parts, [])) == [f"mni_{i}" for i in range(4)]
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 2, 32, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (2, 32, 32, 32)
    assert set(batch["label"].unique().tolist()) <= {0, 1, 2}
    assert batch["label"].max() > 0  # foreground oversampling reaches the brain
