"""The shared LightningDataModule: layout -> preprocess -> cache -> split -> loaders."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytorch_lightning as pl
from rich.progress import Progress
from torch.utils.data import DataLoader

from volseg.data.adapters.base import Case, DatasetLayout
from volseg.data.cache import CaseCache
from volseg.data.datasets import PatchDataset, VolumeDataset, collate_volume
from volseg.data.preprocess import Preprocessor
from volseg.data.sampling import PatchSampler
from volseg.data.splits import load_or_make_split
from volseg.io import Volume


class SegmentationDataModule(pl.LightningDataModule):
    """One data module for every dataset; the layout adapter is the only per-dataset part.

    Args:
        root: the dataset folder, in the layout's own structure.
        layout: a callable ``layout(root) -> DatasetLayout`` (a Hydra ``_partial_`` config).
        num_classes: label classes including background; labels must lie in ``[0, K)``.
        in_channels: image channels.
        class_names: one name per class, background first (used in metric names).
        spacing: target voxel spacing (x, y, z) in mm, or ``None`` for each case's own.
        patch_size: training patch (x, y, z) in voxels of the target spacing.
        batch_size: training patches per batch.
        num_workers: data loader worker processes (0 loads in the training process).
        preprocessing: intensity settings for `Preprocessor` (``intensity``, ``window``, ...).
        cache_dir: where preprocessed cases are kept.
        split: ``val``/``test`` fractions, ``seed`` and ``file`` (the saved ``splits.json``).
        samples_per_epoch: training patches per epoch.
        foreground_fraction: share of patches centred on foreground (see `PatchSampler`).
        flip_prob: per-axis mirroring probability for training patches.
    """

    def __init__(
        self,
        root: str,
        layout: Callable[[str], DatasetLayout],
        num_classes: int,
        in_channels: int,
        class_names: Sequence[str],
        spacing: Sequence[float] | None,
        patch_size: Sequence[int],
        batch_size: int,
        num_workers: int,
        preprocessing: Mapping,
        cache_dir: str,
        split: Mapping,
        samples_per_epoch: int = 250,
        foreground_fraction: float = 0.33,
        flip_prob: float = 0.5,
    ) -> None:
        super().__init__()
        if len(class_names) != num_classes:
            raise ValueError(
                f"data.class_names has {len(class_names)} names but data.num_classes={num_classes}"
            )
        self.layout = layout(root)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.class_names = list(class_names)
        self.preprocessor = Preprocessor(spacing=spacing, **preprocessing)
        self.sampler = PatchSampler(patch_size, foreground_fraction, flip_prob)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.samples_per_epoch = samples_per_epoch
        self.split_settings = dict(split)
        self.cache = CaseCache(cache_dir, self.layout, self.preprocessor, num_classes)
        self.split: dict[str, list[str]] = {}
        self._cases: dict[str, Case] = {}

    # --- for notebooks, checks and tests ------------------------------------------------------

    def cases(self) -> list[Case]:
        """Every case the layout lists, after checking it against the configuration."""
        if not self._cases:
            self._check_metadata()
            self._cases = {case.case_id: case for case in self.layout.list_cases()}
        return list(self._cases.values())

    def load_case(self, case_id: str) -> tuple[Volume, Volume]:
        """``(image, label)`` of one case in its original geometry."""
        case = {c.case_id: c for c in self.cases()}[case_id]
        return self.layout.read_image(case), self.layout.read_label(case)

    def _check_metadata(self) -> None:
        names, channels = self.layout.class_names, self.layout.channel_names
        if names is not None and len(names) != self.num_classes:
            raise ValueError(
                f"data.num_classes={self.num_classes} but {self.layout.root} defines "
                f"{len(names)} classes {names}"
            )
        if channels is not None and len(channels) != self.in_channels:
            raise ValueError(
                f"data.in_channels={self.in_channels} but {self.layout.root} has "
                f"{len(channels)} channels {channels}"
            )

    # --- Lightning hooks ----------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Runs once per node: make the data available, preprocess and cache it."""
        self.layout.prepare()
        cases = self.cases()
        with Progress(transient=True) as progress:
            task = progress.add_task("preprocessing", total=None)
            self.cache.build(cases, lambda case_id: progress.update(
                task, description=f"preprocessing {case_id}", advance=1))

    def setup(self, stage: str | None = None) -> None:
        cases = self.cases()
        settings = self.split_settings
        self.split = load_or_make_split(
            Path(settings["file"]),
            [c.case_id for c in cases],
            val_fraction=settings.get("val", 0.2),
            test_fraction=settings.get("test", 0.2),
            seed=settings.get("seed", 0),
            groups={c.case_id: c.group for c in cases if c.group},
        )

    def _volumes(self, name: str, with_original: bool = False) -> DataLoader:
        cases = [self._cases[case_id] for case_id in self.split[name]]
        dataset = VolumeDataset(self.cache, cases, self.layout, with_original)
        return DataLoader(
            dataset, batch_size=1, num_workers=min(self.num_workers, 1),
            collate_fn=collate_volume,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = PatchDataset(
            self.cache, self.split["train"], self.sampler, self.samples_per_epoch
        )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=True,
        )

    def val_dataloader(self) -> DataLoader:
        return self._volumes("val")

    def test_dataloader(self) -> DataLoader:
        return self._volumes("test", with_original=True)
