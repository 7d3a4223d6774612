"""``volseg predict``'s work: checkpoints and input files in, a label map per case out."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.progress import MofNCompleteColumn, Progress

from volseg.engine.checkpoint_loading import load_networks
from volseg.inference.inputs import InputCase, check_unique_names, find_inputs, read_case
from volseg.inference.predictor import Predictor
from volseg.inference.settings import PredictionSettings
from volseg.inference.writer import refuse_existing_outputs, write_prediction
from volseg.io.safe_names import output_path

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    """``auto``: CUDA where there is one, else the CPU; otherwise ``device`` itself."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def predict_cases(
    ckpt_path: str | Path | Sequence[str | Path],
    source: str | Path | Sequence[InputCase],
    output: str | Path,
    settings: PredictionSettings | None = None,
    device: str = "auto",
    overwrite: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Predict every case of ``source`` into ``output``; one bad case does not stop the rest.

    ``source`` is what `find_inputs` takes (a file, a folder, a list file) or cases already
    found (`dataset_cases`). ``ckpt_path`` may list several checkpoints (an ensemble).
    ``settings`` are the prediction options; or give them as keyword ``options``
    (`PredictionSettings`'s fields: ``tta_axes=[0, 1, 2]``, ``mc_dropout=8``, ...).

    Returns:
        ``{"written": [paths], "failed": [(case_id, one-line reason)], "class_names": [...],
        "regions": {name: labels}}`` (the checkpoints' class names, background first, and
        the regions they score).

    Raises:
        ValueError: ``output`` is, or lies inside, an input folder (outputs never mix with,
            or overwrite, inputs); two cases share an output name; ``output`` already holds
            an output of these cases and ``overwrite`` is false; an option is out of range.
            All before any work.
    """
    if settings is not None and options:
        raise ValueError(f"give settings or options {sorted(options)}, not both")
    settings = settings or PredictionSettings(**options)
    output = Path(output).resolve()
    if isinstance(source, (str, Path)):
        source = Path(source).resolve()
        cases = find_inputs(source)
        input_dirs = {source} if source.is_dir() else set()
    else:
        cases, input_dirs = list(source), set()
        check_unique_names(cases)
    input_dirs.update(p.resolve() if p.is_dir() else p.resolve().parent
                      for case in cases for p in case.paths)
    for input_dir in sorted(input_dirs):
        if output == input_dir or input_dir in output.parents:
            raise ValueError(f"output={output} lies inside the input folder {input_dir}")
    if not overwrite:
        refuse_existing_outputs([case.case_id for case in cases], output)
    torch_device = resolve_device(device)
    networks = load_networks(ckpt_path, torch_device)
    predictor = Predictor(networks, settings, torch_device)
    output.mkdir(parents=True, exist_ok=True)
    written, failed = [], []
    with Progress(*Progress.get_default_columns(), MofNCompleteColumn()) as bar:
        for case in cases:
            task = bar.add_task(case.case_id, total=None)
            try:
                output_path(output, case.case_id)  # an unsafe id: refused before any work
                prediction = predictor.predict_all(
                    read_case(case), name=f"case {case.case_id} ({case.source})",
                    progress=lambda done, total, t=task: bar.update(t, completed=done,
                                                                     total=total))
                written.append(str(write_prediction(prediction, output, case.case_id,
                                                    settings.save_probabilities)))
            except (OSError, ValueError, RuntimeError) as error:
                message = str(error).splitlines()[0] if str(error) else type(error).__name__
                failed.append((case.case_id, message))
                log.error("%s: %s", case.case_id, message)
    return {"written": written, "failed": failed, "class_names": predictor.class_names,
            "regions": dict(networks[0].regions)}
