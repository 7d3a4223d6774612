"""Scoring label maps against references (``volseg evaluate``): `volseg.evaluation.evaluate`.

- `references`: where the references come from (a folder, a dataset root, a data config);
- `scoring`: pairing, checking and scoring the cases, and the reports written;
- `tables`: the summary as Markdown and as a terminal table.
"""

from volseg.evaluation.references import Reference, dataset_references, references_under
from volseg.evaluation.scoring import BOTH_EMPTY, METRICS, evaluate
from volseg.evaluation.tables import print_summary

__all__ = ["BOTH_EMPTY", "METRICS", "Reference", "dataset_references", "evaluate",
           "print_summary", "references_under"]
