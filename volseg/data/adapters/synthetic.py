"""The built-in synthetic datasets, generated on first use, then read as nnU-Net raw data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from volseg.data import synthetic, synthetic_mri
from volseg.data.adapters.decathlon import DecathlonLayout
from volseg.data.synthetic import generate_phantom_dataset

# The phantoms a config can pick, by name.
PHANTOMS = {phantom.name: phantom for phantom in (synthetic.PHANTOM, synthetic_mri.PHANTOM)}


class SyntheticLayout(DecathlonLayout):
    """Writes a synthetic dataset under ``root`` (once), then lists it like any nnU-Net folder.

    Args:
        root: where the dataset lives (``${paths.data_dir}/synthetic`` by default).
        num_cases: number of generated cases.
        seed: generator seed; the same seed gives the same volumes on any machine.
        size_mm: field of view (x, y, z) in mm; the anatomy scales with it. ``None`` is the
            phantom's default.
        phantom: which phantom: ``"ct"`` (`volseg.data.synthetic`, one CT channel, organ and
            lesions) or ``"mri"`` (`volseg.data.synthetic_mri`, T1 and T2 channels, vessels,
            organ and lesions).
    """

    def __init__(
        self, root: str | Path, num_cases: int = 30, seed: int = 0,
        size_mm: Sequence[float] | None = None, phantom: str = "ct",
    ) -> None:
        if phantom not in PHANTOMS:
            raise ValueError(f"phantom must be one of {sorted(PHANTOMS)}, got {phantom!r}")
        super().__init__(root)
        self.num_cases = num_cases
        self.seed = seed
        self.phantom = PHANTOMS[phantom]
        self.size_mm = tuple(
            float(s) for s in (self.phantom.default_size_mm if size_mm is None else size_mm))

    def prepare(self) -> None:
        generate_phantom_dataset(
            self.phantom, self.root, num_cases=self.num_cases, seed=self.seed,
            size_mm=self.size_mm,
        )
        self._meta = None  # re-read: the generator may just have replaced dataset.json
