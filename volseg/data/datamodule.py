"""The shared LightningDataModule: layout -> check + preprocess -> cache -> split -> loaders."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from volseg.data.adapters.base import Case, DatasetLayout
from volseg.data.augment import Augmentation, BatchAugmentation
from volseg.data.cache import CaseCache, dataset_cache_dir
from volseg.data.case_checks import BadCasesError, CaseProblem
from volseg.data.datasets import PatchDataset, VolumeDataset, collate_volume
from volseg.data.fingerprint import (
    fingerprint_path,
    load_or_compute_fingerprint,
    with_dataset_statistics,
)
from volseg.data.preprocess import Preprocessor
from volseg.data.sampling import PatchSampler
from volseg.data.sparse import SparseAnnotation
from volseg.data.splits import load_or_make_splits, select
from volseg.io import Volume

log = logging.getLogger(__name__)


# The keys of ``data.split`` (their values: conf/data/base.yaml).
SPLIT_SETTINGS = frozenset({"val", "test", "seed", "folds", "stratify", "file"})

class SegmentationDataModule(pl.LightningDataModule):
    """One data module for every dataset; the layout adapter is the only per-dataset part.

    `prepare_data` checks every case (see `volseg.data.case_checks.check_case`, the checks of
    ``volseg verify``) and caches it preprocessed, in ``cache_workers`` processes.
    A dataset with bad cases is refused with one error that lists them all, unless
    ``skip_bad_cases`` leaves them out (with a warning each) of `cases` and of the splits.
    `setup` reads (or makes, once) ``split.file`` and picks the plain train/val split or
    cross-validation fold ``fold``; the test set is the same either way.

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
        cache_dir: where cached data is kept: this dataset's in a folder of its own,
            ``<cache_dir>/<root name>-<hash>`` (`volseg.data.cache.dataset_cache_dir`),
            its fingerprint and its preprocessed cases.
        split: ``val``/``test`` fractions, ``seed``, ``folds`` (cross-validation folds),
            ``stratify`` (spread each foreground class over the splits; see
            `volseg.data.splits`) and ``file`` (the saved ``splits.json``).
        samples_per_epoch: training patches per epoch.
        foreground_fraction: share of patches centred on foreground (see `PatchSampler`).
        foreground_position: ``centre`` or ``anywhere``: where the chosen foreground voxel
            lands in its patch (see `PatchSampler`).
        flip_prob: per-axis mirroring probability for training patches.
        augment: the other training augmentation (`volseg.data.augment`): each transform's
            probability and range, flat keys (``rotation_prob``, ``rotation_deg``,
            ``scale_prob``, ..., ``gamma_range``); ``None`` mirrors only.
        augment_device: ``cpu`` augments each patch in the loader workers, from the whole
            volume; ``gpu`` cuts plain patches and augments the whole batch on the training
            device (`batch_augmentation`, applied in ``on_after_batch_transfer``),
            so one CPU core can feed a GPU; borders of rotated patches then read 0.
        cache_workers: processes that build the cache; ``None`` for min(4, CPU cores), 0 or 1
            to build in this process.
        skip_bad_cases: train without the cases that fail their checks instead of refusing.
        fold: cross-validation fold to train and validate on (``0..split.folds-1``), or
            ``None`` for the plain train/val split.
        ignore_index: label value of unannotated voxels (sparse annotation), allowed in label
            files besides ``0..num_classes-1``; ``None`` for dense labels.
        regions: the dataset's scored regions, name -> label values united into one
            structure (KiTS23's). The data module does not use them: they live in the data
            config so that ``module.regions`` and ``volseg evaluate`` interpolate one value.
        sparse_annotation: simulate sparse annotation on dense labels (Çiçek et al. 2016):
            ``{slices_per_axis: k or [kx, ky, kz], seed: 0}``; training patches keep labels
            only on those slices, the rest become ``ignore_index`` (which must be set).
            Validation and test labels stay dense.
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
        foreground_position: str = "centre",
        flip_prob: float = 0.5,
        cache_workers: int | None = None,
        skip_bad_cases: bool = False,
        fold: int | None = None,
        ignore_index: int | None = None,
        sparse_annotation: Mapping | None = None,
        augment: Mapping | None = None,
        augment_device: str = "cpu",
        regions: Mapping[str, Sequence[int]] | None = None,
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
        del regions  # read from the config by module.regions and volseg evaluate, not here
        self.preprocessor = Preprocessor(spacing=spacing, **preprocessing)
        if augment_device not in ("cpu", "gpu"):
            raise ValueError(f"data.augment_device must be cpu or gpu, got {augment_device!r}")
        augmentation = Augmentation.from_config(augment, flip_prob)
        label_fill = 0 if ignore_index is None else int(ignore_index)
        # Batches augmented on the device; None when the loader workers augment each patch.
        self.batch_augmentation: BatchAugmentation | None = None
        if augment_device == "gpu":
            self.batch_augmentation = BatchAugmentation(augmentation, label_fill)
            augmentation = Augmentation.from_config(None, flip_prob=0.0)  # plain crops
        self.sampler = PatchSampler(patch_size, foreground_fraction, augmentation=augmentation,
                                    label_fill=label_fill,
                                    foreground_position=foreground_position)
        self.batch_size = batch_size
        self.patch_size = tuple(int(p) for p in patch_size)
        self.num_workers = num_workers
        self.samples_per_epoch = samples_per_epoch
        missing = sorted(SPLIT_SETTINGS - set(split))
        if missing:  # conf/data/base.yaml holds them all: the one place they are written
            raise ValueError(f"data.split is missing {missing}")
        self.split_settings = dict(split)
        self.cache_workers = cache_workers
        self.skip_bad_cases = skip_bad_cases
        self.fold = fold
        self.ignore_index = ignore_index
        self.sparse = None
        if sparse_annotation:
            if ignore_index is None:
                raise ValueError("data.sparse_annotation needs data.ignore_index (e.g. 255)")
            self.sparse = SparseAnnotation(ignore_index=ignore_index, **sparse_annotation)
        self.cache_dir = cache_dir
        # Everything cached about this dataset, apart from any other dataset's in cache_dir.
        self.dataset_cache_dir = dataset_cache_dir(cache_dir, root)
        self.fingerprint_path = fingerprint_path(cache_dir, root)
        self.cache = self._make_cache()
        self.split: dict[str, list[str]] = {}
        self._cases: dict[str, Case] = {}
        self._skipped: dict[str, list[CaseProblem]] = {}

    def _make_cache(self) -> CaseCache:
        return CaseCache(self.dataset_cache_dir, self.layout, self.preprocessor,
                         self.num_classes, self.in_channels, self.ignore_index)

    def ensure_statistics(self) -> None:
        """Fill in dataset intensity statistics when the preprocessing needs them.

        ``ct_percentile`` (nnU-Net's CT scheme) clips and normalises with the foreground
        statistics of the whole dataset. They come from the dataset fingerprint
        (``volseg plan`` writes it; computed here once if missing) and become part
        of the preprocessing settings, hence of the cache key and of the checkpoint.
        """
        if not self.preprocessor.needs_statistics:
            return
        self.layout.prepare()
        fingerprint = load_or_compute_fingerprint(
            self.fingerprint_path, self.layout, self.cases(), self.num_classes,
            self.preprocessor.orientation,
        )
        self.preprocessor = with_dataset_statistics(self.preprocessor, fingerprint)
        self.cache = self._make_cache()

    # --- for notebooks, checks and tests ------------------------------------------------------

    def cases(self) -> list[Case]:
        """Every case the layout lists, after checking the layout against the configuration.

        Once `prepare_data` or `setup` ran, cases skipped as bad (``skip_bad_cases``) are left
        out.
        """
        if not self._cases:
            self._check_metadata()
            self._cases = {case.case_id: case for case in self.layout.list_cases()}
        return [c for c in self._cases.values() if c.case_id not in self._skipped]

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
        """Runs once per node: make the data available, check, preprocess and cache it.

        Raises:
            BadCasesError: cases failed their checks and ``skip_bad_cases`` is false.
        """
        self.layout.prepare()
        self.ensure_statistics()
        problems = self.cache.build(self.cases(), self.cache_workers, self.skip_bad_cases)
        self._skip(problems)

    def setup(self, stage: str | None = None) -> None:
        """Runs in every process: pick this run's train/val/test cases from ``split.file``.

        Raises:
            BadCasesError: the cache recorded bad cases and ``skip_bad_cases`` is false.
        """
        self.ensure_statistics()
        # Every process (each DDP rank) learns the bad cases from the cache's records.
        problems = self.cache.recorded_problems(self.cases())
        if problems and not self.skip_bad_cases:
            raise BadCasesError(problems)
        self._skip(problems)
        cases = self.cases()
        settings = self.split_settings
        classes = None
        if settings["stratify"]:
            classes = {c.case_id: self.cache.classes_present(c.case_id) for c in cases}
        splits = load_or_make_splits(
            Path(settings["file"]),
            [c.case_id for c in cases],
            val_fraction=settings["val"],
            test_fraction=settings["test"],
            seed=settings["seed"],
            groups={c.case_id: c.group for c in cases if c.group},
            folds=settings["folds"],
            classes=classes,
            excluded=self._skipped,
        )
        self.split = select(splits, self.fold, settings["folds"])

    def _skip(self, problems: Iterable[CaseProblem]) -> None:
        """Leave the cases of ``problems`` out from now on, with one warning per problem."""
        for problem in problems:
            if problem not in self._skipped.setdefault(problem.case_id, []):
                self._skipped[problem.case_id].append(problem)
                log.warning("data.skip_bad_cases: leaving out case %s: %s", problem.case_id,
                            problem)

    def _volumes(self, name: str, with_original: bool = False) -> DataLoader:
        cases = [self._cases[case_id] for case_id in self.split[name]]
        dataset = VolumeDataset(self.cache, cases, self.layout, with_original)
        return DataLoader(
            dataset, batch_size=1, num_workers=min(self.num_workers, 1),
            collate_fn=collate_volume, sampler=self._volume_sampler(dataset),
        )

    def _volume_sampler(self, dataset: Dataset) -> DistributedSampler | None:
        """Under DDP: each validation/test case on exactly one rank, and none on two.

        Lightning's default DistributedSampler pads the shorter shards with repeated cases (3
        cases on 2 ranks: one is scored twice), which biases the mean the metrics sum across
        ranks. Shards here differ in length by at most one instead. With fewer cases than
        ranks every rank scores them all: sums and counts then grow alike, the mean does not
        change, and no rank sits out the collective metric sync at the end of the epoch.
        """
        trainer = self.trainer  # None outside a Trainer (notebooks, tests)
        if trainer is None or trainer.world_size < 2:
            return None  # Lightning adds no sampler either
        from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler

        if len(dataset) < trainer.world_size:
            return UnrepeatedDistributedSampler(dataset, num_replicas=1, rank=0, shuffle=False)
        return UnrepeatedDistributedSampler(dataset, num_replicas=trainer.world_size,
                                            rank=trainer.global_rank, shuffle=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment training batches on the device when ``augment_device`` is ``gpu``.

        Lightning calls this once a batch is on the training device; the data module owns it
        because it owns the augmentation settings. Validation and test volumes pass unchanged.
        """
        if self.batch_augmentation is None or self.trainer is None or not self.trainer.training:
            return batch
        return self.batch_augmentation(batch)

    def train_dataloader(self) -> DataLoader:
        dataset = PatchDataset(
            self.cache, self.split["train"], self.sampler, self.samples_per_epoch, self.sparse
        )
        trainer = self.trainer
        if trainer is not None and trainer.global_rank > 0 and self.num_workers == 0:
            # Patches are drawn from torch's global generator, which `seed` set alike in every
            # DDP rank: all ranks would train on the same patches. Lightning seeds loader
            # workers per rank, but without workers the draws happen in the rank's own process.
            torch.manual_seed(torch.initial_seed() + trainer.global_rank)
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
