"""A case's prediction on disk: the one writer of ``volseg predict`` and of a run's test cases.

``<case_id>.nii.gz`` (labels), ``<case_id>_probabilities.nii.gz`` and
``<case_id>_uncertainty.nii.gz``, each written atomically (complete or absent) and only under
the output folder: a case id that is not a plain file name is refused before anything is
written (`volseg.io.safe_names.output_path`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from volseg.io import Volume, write_volume
from volseg.io.atomic import atomic_path
from volseg.io.safe_names import output_path

# Every file a case's prediction may write, after its name.
OUTPUT_SUFFIXES = (".nii.gz", "_probabilities.nii.gz", "_uncertainty.nii.gz")


@dataclass
class Prediction:
    """A case's outputs on its own grid.

    Attributes:
        labels: uint8 ``(x, y, z)`` label map.
        probabilities: float32 ``(K, x, y, z)`` mean class probabilities, or ``None``.
        uncertainty: float32 ``(x, y, z)`` map with Monte-Carlo dropout, else ``None``.
    """

    labels: Volume
    probabilities: Volume | None = None
    uncertainty: Volume | None = None


def write_prediction(prediction: Prediction, output_dir: str | Path, case_id: str,
                     save_probabilities: bool = False) -> Path:
    """Write ``prediction``'s files under ``output_dir``; return the label map's path.

    The probabilities are written only with ``save_probabilities``; the uncertainty whenever
    there is one. Every name is checked before the first file is written.
    """
    labels_path = output_path(output_dir, case_id)
    probabilities_path = output_path(output_dir, case_id, "_probabilities.nii.gz")
    uncertainty_path = output_path(output_dir, case_id, "_uncertainty.nii.gz")
    if save_probabilities and prediction.probabilities is not None:
        write_channels(prediction.probabilities, probabilities_path)
    if prediction.uncertainty is not None:
        write_volume(prediction.uncertainty, uncertainty_path)
    return write_volume(prediction.labels, labels_path)


def write_channels(volume: Volume, path: str | Path) -> Path:
    """Write a ``(C, x, y, z)`` volume as one 4D NIfTI ``(x, y, z, C)``, atomically.

    The first three axes carry the volume's spacing, origin and direction (the fourth has
    spacing 1); `volseg.io.read_multichannel` and nibabel read it back as written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.JoinSeries([volume.with_array(np.ascontiguousarray(c)).to_sitk()
                             for c in volume.array])
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
    return path


def refuse_existing_outputs(case_ids: Sequence[str], output: Path) -> None:
    """Refuse, before any work, outputs that would replace files already in ``output``.

    Raises:
        ValueError: listing the first few files and the ``overwrite=true`` that allows it.
    """
    existing = [output / f"{case_id}{suffix}" for case_id in case_ids
                for suffix in OUTPUT_SUFFIXES if (output / f"{case_id}{suffix}").exists()]
    if existing:
        shown = ", ".join(str(p) for p in existing[:3])
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise ValueError(f"output={output} already holds {shown}{more}: set overwrite=true to "
                         "replace them, or choose another output folder")
