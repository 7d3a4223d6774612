"""The built-in synthetic CT dataset, generated on first use, then read as nnU-Net raw data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from volseg.data.adapters.decathlon import DecathlonLayout
from volseg.data.synthetic import DEFAULT_SIZE_MM, generate_synthetic_dataset


class SyntheticLayout(DecathlonLayout):
    """Writes the synthetic dataset under ``root`` (once), then lists it like any nnU-Net folder.

    Args:
        root: where the dataset lives (``${paths.data_dir}/synthetic`` by default).
        num_cases: number of generated cases.
        seed: generator seed; the same seed gives the same volumes on any machine.
        size_mm: field of view (x, y, z) in mm; the anatomy scales with it.
    """

    def __init__(
        self, root: str | Path, num_cases: int = 30, seed: int = 0,
        size_mm: Sequence[float] = DEFAULT_SIZE_MM,
    ) -> None:
        super().__init__(root)
        self.num_cases = num_cases
        self.seed = seed
        self.size_mm = tuple(float(s) for s in size_mm)

    def prepare(self) -> None:
        generate_synthetic_dataset(
            self.root, num_cases=self.num_cases, seed=self.seed, size_mm=self.size_mm
        )
        self._meta = None  # re-read: the generator may just have replaced dataset.json
