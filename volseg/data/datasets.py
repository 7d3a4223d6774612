"""Torch datasets over the case cache: random training patches, and whole volumes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from volseg.data.adapters.base import Case, DatasetLayout
from volseg.data.cache import CaseCache
from volseg.data.sampling import PatchSampler
from volseg.data.sparse import SparseAnnotation


class PatchDataset(Dataset):
    """``length`` random patches per epoch, each from a random training case.

    Randomness comes from torch's generator, which Lightning seeds per worker and per epoch
    (``seed_everything(workers=True)``), so a seeded run draws the same patches again.
    With ``sparse``, each patch keeps labels only on the case's simulated annotated slices.
    Items are ``{"image": (C, *patch) float32, "label": (*patch) int64, "spacing": (3,) mm}``.
    """

    def __init__(
        self,
        cache: CaseCache,
        case_ids: Sequence[str],
        sampler: PatchSampler,
        length: int,
        sparse: SparseAnnotation | None = None,
    ) -> None:
        if not case_ids:
            raise ValueError("no training cases: check data.root and data.split")
        self.cache = cache
        self.case_ids = list(case_ids)
        self.sampler = sampler
        self.length = length
        self.sparse = sparse
        self._locations: dict[str, dict[int, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        case_id = self.case_ids[rng.integers(len(self.case_ids))]
        image, label, meta = self.cache.load(case_id)
        spacing = [float(s) for s in meta["preprocessed"]["spacing"]]
        if case_id not in self._locations:
            self._locations[case_id] = self.cache.locations(case_id)
        annotate = None
        if self.sparse is not None:
            sparse, shape = self.sparse, label.shape

            def annotate(patch: np.ndarray, start: Sequence[int]) -> np.ndarray:
                return sparse.apply(patch.astype(np.int64), case_id, shape, start)

        image_patch, label_patch = self.sampler.sample(
            image, label, self._locations[case_id], rng, annotate, spacing
        )
        return {
            "image": torch.from_numpy(image_patch),
            "label": torch.from_numpy(label_patch.astype(np.int64)),
            # mm per voxel: GPU augmentation (`BatchAugmentation`) rotates in physical space
            "spacing": torch.tensor(spacing, dtype=torch.float64),
        }


class VolumeDataset(Dataset):
    """Whole preprocessed volumes for validation and testing.

    Args:
        with_original: also return the label in its original geometry and the original grid,
            so test metrics and saved predictions are measured where the annotation lives.
    """

    def __init__(
        self, cache: CaseCache, cases: Sequence[Case], layout: DatasetLayout,
        with_original: bool = False,
    ) -> None:
        self.cache = cache
        self.cases = list(cases)
        self.layout = layout
        self.with_original = with_original

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict:
        case = self.cases[index]
        image, label, meta = self.cache.load(case.case_id)
        item = {
            "case_id": case.case_id,
            "image": torch.from_numpy(np.array(image)),
            "label": torch.from_numpy(label.astype(np.int64)),
            "meta": meta,
        }
        if self.with_original:
            original = self.layout.read_label(case).array
            item["original_label"] = torch.from_numpy(original.astype(np.int64))
        return item


def collate_volume(batch: list[dict]) -> dict:
    """Batch of one whole volume: tensors get a batch axis, the rest passes through."""
    if len(batch) != 1:
        raise ValueError("whole-volume loaders take batch_size=1 (volumes differ in shape)")
    return {k: v[None] if isinstance(v, torch.Tensor) else v for k, v in batch[0].items()}
