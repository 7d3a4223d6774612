"""Small datasets in each real on-disk layout, for tests that read whole dataset trees.

Each ``make_<layout>(root)`` writes a few cases with labels (every foreground class in most of
them, so scores are defined) and returns the case ids that layout lists. The documentation's
commands (tests/test_docs.py) use them as the reader's own data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from volseg.io import Volume, write_volume


def make_luna16(root: Path) -> list[str]:
    """Five MetaImage scans in two subsets, each with one nodule, and ``annotations.csv``: noisy
    lung (about -800 HU) with a soft-tissue ball where the annotation puts the nodule."""
    import SimpleITK as sitk

    from tests.data.adapters import test_luna16

    test_luna16.write_dataset(root, shape=(24, 24, 12))
    rng = np.random.default_rng(2)
    for scan in sorted(root.glob("subset*/*.mhd")):
        image = sitk.ReadImage(str(scan))
        array = rng.normal(-800, 60, sitk.GetArrayFromImage(image).shape)
        z, y, x = np.indices(array.shape)
        centre = [(n - 1) / 2 for n in array.shape]
        array[(z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= 9] = 30
        noisy = sitk.GetImageFromArray(array.astype(np.int16))
        noisy.CopyInformation(image)
        sitk.WriteImage(noisy, str(scan))
    return [f"1.3.6.{i}" for i in range(5)]


def make_kits23(root: Path, cases: int = 5) -> list[str]:
    """``dataset/case_XXXXX/imaging`` + ``segmentation`` with kidney, tumor and cyst (label 3)."""
    rng = np.random.default_rng(0)
    names = [f"case_{i:05d}" for i in range(cases)]
    for i, name in enumerate(names):
        label = np.zeros((8, 16, 16), np.uint8)  # (slices, rows, columns), as KiTS23 stores it
        label[2:6, 3 + i % 2:11, 3:11] = 1  # kidney
        label[3:5, 5:8, 5:8] = 2  # tumor
        label[3:5, 8:10, 8:10] = 3  # cyst
        image = rng.normal(40, 20, label.shape) + 100 * (label > 0)
        folder = root / "dataset" / name
        write_volume(Volume(image.astype(np.int16), (3.0, 0.78, 0.78)), folder / "imaging.nii.gz")
        write_volume(Volume(label, (3.0, 0.78, 0.78)), folder / "segmentation.nii.gz")
    return names


def make_hipmri(root: Path) -> list[str]:
    """Five weekly MR scans of four patients with their ``_SEMANTIC_`` labels."""
    from tests.data.adapters import test_hipmri

    names = ["Case_001_Week0", "Case_001_Week1", "Case_002_Week0", "Case_003_Week0",
             "Case_004_Week0"]
    for name in names:
        test_hipmri.write_scan(root, name, shape=(16, 16, 8))
    return [f"{name}_LFOV" for name in names]


def make_decathlon(root: Path) -> list[str]:
    """A four-channel BraTS-like Medical Segmentation Decathlon task (4D images)."""
    from tests.data.adapters import test_decathlon_msd

    names = tuple(f"BRATS_{i:03d}" for i in range(5))
    test_decathlon_msd.write_msd(root, cases=names)
    return list(names)


def make_nnunet(root: Path, cases: int = 5) -> list[str]:
    """A one-channel nnU-Net v2 raw dataset: ``imagesTr/<case>_0000``, ``labelsTr``, json."""
    rng = np.random.default_rng(1)
    names = [f"liver_{i:03d}" for i in range(cases)]
    meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1, "lesion": 2},
            "numTraining": cases, "file_ending": ".nii.gz"}
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(meta))
    for i, name in enumerate(names):
        label = np.zeros((16, 14, 8), np.uint8)
        label[3:12, 3:11, 2:6] = 1
        label[5 + i % 3:8 + i % 3, 5:8, 3:5] = 2
        image = rng.normal(0, 30, label.shape) + 80 * label
        spacing, origin = (0.9, 0.8, 2.5), (-10.0 * i, 4.0, 30.0)
        write_volume(Volume(image.astype(np.float32), spacing, origin),
                     root / "imagesTr" / f"{name}_0000.nii.gz")
        write_volume(Volume(label, spacing, origin), root / "labelsTr" / f"{name}.nii.gz")
    return names


def make_nifti_folder(root: Path) -> list[str]:
    """Seven two-channel 4D volumes in ``images/`` with five-class ``labels/``."""
    from tests.data.adapters import test_nifti_folder

    names = [f"volume{i}" for i in range(7)]  # 70/15/15: 5/1/1
    for name in names:
        test_nifti_folder.write_pair(root, name)
    return names


def make_dicom(root: Path) -> None:
    """One CT series, a slice a file."""
    from tests.inference.test_inputs import write_dicom_series

    body = np.full((40, 40, 12), -1000, np.int16)
    body[8:32, 8:32, 2:10] = 40
    write_dicom_series(root, body)
