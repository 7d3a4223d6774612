"""Predict label maps for raw volumes from a checkpoint, in each volume's own geometry.

Raw volume -> the checkpoint's preprocessing -> sliding-window logits -> softmax ->
probabilities resampled onto the original grid -> argmax -> NIfTI with the input's exact
shape, spacing, origin and direction.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from rich.progress import MofNCompleteColumn, Progress

from volseg.io import Volume, read_channels, write_volume

if TYPE_CHECKING:  # the engine imports inference; inference imports the engine only lazily
    from volseg.engine.module import SegmentationModule

log = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
_CHANNEL_SUFFIX = re.compile(r"_(\d{4})$")


def load_module(ckpt_path: str | Path, device: str | torch.device = "cpu") -> SegmentationModule:
    """Rebuild a trained `SegmentationModule` from its checkpoint alone, in eval mode.

    The stored network and loss configs are built only from allow-listed modules
    (`volseg.trusted`).
    """
    from volseg.engine.module import SegmentationModule

    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint (ckpt_path)")
    module = SegmentationModule.load_from_checkpoint(path, map_location=device)
    return module.eval().to(device)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class InputCase:
    """A volume to predict: its name and one file per channel (nnU-Net ``_0000`` naming)."""

    case_id: str
    paths: list[Path] = field(default_factory=list)


def volume_stem(path: Path) -> str | None:
    """The file name without its volume suffix, or ``None`` if it is not a volume file."""
    name = path.name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def find_inputs(source: str | Path) -> list[InputCase]:
    """Cases in a volume file or a folder; ``case_0000``, ``case_0001`` become one case.

    Raises:
        FileNotFoundError: ``source`` does not exist or holds no volume files.
    """
    source = Path(source)
    if source.is_file():
        files = [source]
    elif source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and volume_stem(p) is not None
                       and not p.name.endswith(".raw"))
    else:
        raise FileNotFoundError(f"{source}: no such file or folder (input)")
    cases: dict[str, InputCase] = {}
    for path in files:
        stem = volume_stem(path)
        if stem is None:
            raise ValueError(f"{path}: not a volume file ({', '.join(VOLUME_SUFFIXES)})")
        match = _CHANNEL_SUFFIX.search(stem)
        case_id = stem[: match.start()] if match else stem
        cases.setdefault(case_id, InputCase(case_id)).paths.append(path)
    if not cases:
        raise FileNotFoundError(f"{source}: no volume files ({', '.join(VOLUME_SUFFIXES)})")
    return list(cases.values())


class Predictor:
    """Segments raw volumes with a trained module.

    Args:
        module: a `SegmentationModule` (from `load_module`).
        device: where the network runs.
        tile_size, overlap, batch_size: override the checkpoint's sliding-window settings.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        device: str | torch.device = "cpu",
        tile_size: Sequence[int] | None = None,
        overlap: float | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.module = module.eval().to(device)
        self.device = torch.device(device)
        overrides = {"tile_size": tile_size, "overlap": overlap, "batch_size": batch_size}
        self.module.inference.update({k: v for k, v in overrides.items() if v is not None})
        self.in_channels = module.hparams.net.get("in_channels")

    @torch.no_grad()
    def predict(
        self, image: Volume, name: str = "image",
        progress: Callable[[int, int], None] | None = None,
    ) -> Volume:
        """The uint8 label map of ``image`` on ``image``'s own grid."""
        array = image.array if image.array.ndim == 4 else image.array[None]
        if self.in_channels is not None and array.shape[0] != self.in_channels:
            raise ValueError(
                f"{name}: {array.shape[0]} channel(s), the model expects {self.in_channels}"
            )
        image = image.with_array(array)
        # The trace records reorientation, cropping and resizing, so all of it can be undone.
        trace = self.module.preprocessor.trace(image)
        pre = self.module.preprocessor.image(image, trace)
        tensor = torch.from_numpy(pre.array)[None].to(self.device)
        logits = self.module.predict_logits(tensor, progress)
        labels = self.module.preprocessor.restore_labels(logits[0], trace)
        labels = labels.cpu().numpy()
        return Volume(labels, image.spacing, image.origin, image.direction)

    def predict_file(
        self, case: InputCase, output_dir: Path,
        progress: Callable[[int, int], None] | None = None,
    ) -> Path:
        """Read, predict and write ``<output_dir>/<case_id>.nii.gz`` atomically."""
        image = read_channels(case.paths)
        labels = self.predict(image, name=str(case.paths[0]), progress=progress)
        return write_volume(labels, output_dir / f"{case.case_id}.nii.gz")


def predict_cases(
    ckpt_path: str | Path,
    source: str | Path,
    output: str | Path,
    device: str = "auto",
    tile_size: Sequence[int] | None = None,
    overlap: float | None = None,
    batch_size: int | None = None,
) -> dict[str, list]:
    """Predict every case under ``source`` into ``output``; one bad case does not stop the rest.

    Returns:
        ``{"written": [paths], "failed": [(case_id, one-line reason)]}``.

    Raises:
        ValueError: ``output`` is, or lies inside, the input folder (outputs never mix with,
            or overwrite, inputs).
    """
    source, output = Path(source).resolve(), Path(output).resolve()
    input_dir = source if source.is_dir() else source.parent
    if output == input_dir or input_dir in output.parents:
        raise ValueError(f"output={output} lies inside the input folder {input_dir}")
    cases = find_inputs(source)
    torch_device = resolve_device(device)
    predictor = Predictor(load_module(ckpt_path, torch_device), torch_device, tile_size,
                          overlap, batch_size)
    output.mkdir(parents=True, exist_ok=True)
    written, failed = [], []
    with Progress(*Progress.get_default_columns(), MofNCompleteColumn()) as bar:
        for case in cases:
            task = bar.add_task(case.case_id, total=None)
            try:
                path = predictor.predict_file(
                    case, output, lambda done, total, t=task: bar.update(t, completed=done,
                                                                          total=total))
                written.append(str(path))
            except (OSError, ValueError, RuntimeError) as error:
                message = str(error).splitlines()[0] if str(error) else type(error).__name__
                failed.append((case.case_id, message))
                log.error("%s: %s", case.case_id, message)
    return {"written": written, "failed": failed}
