"""Predict label maps for raw volumes from one or more checkpoints, in each volume's own geometry.

Raw volume -> the checkpoint's preprocessing -> sliding-window logits -> softmax, averaged over
mirrored inputs (test-time augmentation), checkpoints (an ensemble) and Monte-Carlo dropout
passes -> probabilities resampled onto the original grid -> argmax -> optional
largest-component clean-up -> NIfTI with the input's exact shape, spacing, origin and direction.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk
import torch
from rich.progress import MofNCompleteColumn, Progress
from torch import Tensor, nn

from volseg.atomic import atomic_path
from volseg.data.preprocess import class_argmax
from volseg.inference.inputs import (  # noqa: F401 - re-exported: predict's public names
    VOLUME_SUFFIXES,
    InputCase,
    check_unique_names,
    find_inputs,
    read_case,
    volume_stem,
)
from volseg.inference.norm_checks import tile_warning
from volseg.inference.postprocess import (
    CONNECTIVITIES,
    apply_postprocessing,
    describe_postprocessing,
    keep_largest_component,
)
from volseg.io import Volume, write_volume
from volseg.safe_names import output_path

if TYPE_CHECKING:  # the engine imports inference; inference imports the engine only lazily
    from volseg.engine.module import SegmentationModule

log = logging.getLogger(__name__)

UNCERTAINTIES = ("entropy", "variance")
# predict's `precision`: the autocast dtype of the network's forward passes (None: float32).
PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


def load_module(ckpt_path: str | Path, device: str | torch.device = "cpu") -> SegmentationModule:
    """Rebuild a trained `SegmentationModule` from its checkpoint alone, in eval mode.

    A checkpoint may come from anywhere, so nothing in it runs: it is unpickled with
    ``weights_only=True`` (tensors and plain containers only), and its stored configs are built
    only from allow-listed modules (`volseg.trusted`), all of them checked before any is built.

    Raises:
        FileNotFoundError: no such file.
        volseg.trusted.UntrustedTargetError: a stored config names a target outside the
            allow-list (``os.system``, ...); the message names the checkpoint.
        pickle.UnpicklingError: the file holds more than plain weights and data (a pickled
            object that would run code when loaded).
    """
    import pickle

    from volseg.engine.module import SegmentationModule
    from volseg.trusted import UntrustedTargetError

    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint (ckpt_path)")
    try:
        module = SegmentationModule.load_from_checkpoint(path, map_location=device,
                                                         weights_only=True)
    except UntrustedTargetError as error:
        raise UntrustedTargetError(f"{path}: {error}") from None
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else ""
        raise pickle.UnpicklingError(
            f"{path}: refusing to load: it holds more than weights and plain data ({reason})"
        ) from None
    return module.eval().to(device)


def load_ensemble(
    ckpt_paths: str | Path | Sequence[str | Path], device: str | torch.device = "cpu"
) -> list[SegmentationModule]:
    """Load one checkpoint or several (e.g. the cross-validation folds) for one ensemble.

    Raises:
        ValueError: a checkpoint's preprocessing, class names or input channels differ from
            the first one's (their probabilities would not describe the same voxels or classes).
    """
    paths = [ckpt_paths] if isinstance(ckpt_paths, (str, Path)) else list(ckpt_paths)
    if not paths:
        raise ValueError("ckpt_path: no checkpoint given")
    modules = [load_module(path, device) for path in paths]
    first = modules[0]
    for path, module in zip(paths[1:], modules[1:]):
        for name, value, reference in (
            ("preprocessing", module.preprocessor.to_dict(), first.preprocessor.to_dict()),
            ("class names", module.class_names, first.class_names),
            ("in_channels", module.hparams.net.get("in_channels"),
             first.hparams.net.get("in_channels")),
        ):
            if value != reference:
                raise ValueError(f"{path}: {name} {value} differ from {paths[0]}'s {reference}; "
                                 "an ensemble needs the same ones")
    return modules


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def enable_mc_dropout(module: nn.Module) -> int:
    """Put the dropout layers of ``module`` (only they) in train mode; return how many.

    Normalisation layers stay in eval mode, so batch statistics are not re-estimated from one
    volume's tiles: only the dropout masks make the passes differ.
    """
    dropouts = [m for m in module.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    for layer in dropouts:
        layer.train()
    return len(dropouts)


def check_tta_axes(axes: Sequence[int] | None) -> list[int]:
    """``axes`` as a sorted list of distinct spatial axes; ValueError naming ``tta_axes``."""
    checked = sorted(set(int(a) for a in axes or ()))
    if any(a not in (0, 1, 2) for a in checked):
        raise ValueError(f"tta_axes must be spatial axes among 0, 1, 2, got {list(axes)}")
    return checked


def mirrored_probabilities(
    logits_of: Callable[[Tensor], Tensor], image: Tensor, axes: Sequence[int] | None = None
) -> Tensor:
    """Softmax probabilities averaged over all ``2**len(axes)`` mirrorings (nnU-Net's TTA).

    For each subset of ``axes`` the input is flipped along it, predicted, and the softmax is
    flipped back before averaging, so every prediction is on the input's voxels.

    Args:
        logits_of: maps ``(N, C, x, y, z)`` to logits ``(N, K, x, y, z)``.
        image: ``(N, C, x, y, z)``.
        axes: spatial axes (0, 1, 2 for x, y, z) to mirror; ``None`` or empty: no mirroring.
    """
    axes = check_tta_axes(axes)
    total: Tensor | None = None
    subsets = [s for k in range(len(axes) + 1) for s in itertools.combinations(axes, k)]
    for subset in subsets:
        dims = [2 + a for a in subset]
        flipped = image.flip(dims) if dims else image
        probabilities = softmax_(logits_of(flipped).float())
        probabilities = probabilities.flip(dims) if dims else probabilities
        total = probabilities if total is None else total.add_(probabilities)
    assert total is not None
    return total.div_(len(subsets))


def softmax_(logits: Tensor, dim: int = 1) -> Tensor:
    """Softmax over ``dim``, in place: whole-volume class maps are the largest arrays of a
    prediction, and an out-of-place softmax would hold two of them at once."""
    logits -= logits.amax(dim, keepdim=True)
    return logits.exp_().div_(logits.sum(dim, keepdim=True))


@dataclass
class Prediction:
    """A case's outputs on its own grid.

    Attributes:
        labels: uint8 ``(x, y, z)`` label map.
        probabilities: float32 ``(K, x, y, z)`` mean class probabilities.
        uncertainty: float32 ``(x, y, z)`` map with Monte-Carlo dropout, else ``None``.
    """

    labels: Volume
    probabilities: Volume
    uncertainty: Volume | None = None


def agreed_postprocessing(modules: Sequence[nn.Module]) -> dict | None:
    """The post-processing steps every module chose (see `PostprocessingSelector`), or ``None``
    when none is shared: an ensemble applies only what each of its members was validated with."""
    choices = [getattr(m, "postprocessing", None) or {} for m in modules]
    foreground = all(c.get("largest_foreground") for c in choices)
    classes = set.intersection(*(set(c.get("largest_component") or []) for c in choices))
    connectivities = {int(c.get("connectivity", 26)) for c in choices}
    if not (foreground or classes) or len(connectivities) != 1:
        return None
    return {"largest_foreground": foreground, "largest_component": sorted(classes),
            "connectivity": connectivities.pop()}


class Predictor:
    """Segments raw volumes with one trained module or an ensemble of them.

    Args:
        module: a `SegmentationModule` (from `load_module`), or several (`load_ensemble`)
            whose probabilities are averaged.
        device: where the networks run.
        tile_size, overlap, batch_size: override the checkpoints' sliding-window settings.
        tta_axes: spatial axes to mirror for test-time augmentation (see
            `mirrored_probabilities`); ``None`` for none.
        mc_dropout: number of Monte-Carlo dropout passes per module (0: dropout off, one pass).
        uncertainty: with ``mc_dropout``, ``"entropy"`` of the mean probabilities or
            ``"variance"``: the per-class variance of the probabilities over the passes,
            averaged over classes.
        keep_largest: classes (label values) that keep only their largest connected
            component; ``True`` for every foreground class; ``None`` for none.
        connectivity: 26 or 6 (see `keep_largest_component`).
        postprocess: apply the post-processing training chose on the validation cases
            (``module.postprocessing``; for an ensemble, the steps every checkpoint chose),
            before ``keep_largest``; ``False`` for the plain argmax.
        precision: ``"32"``, or ``"bf16"``/``"16"``: run the network under autocast in that
            dtype (faster where the hardware has it, e.g. bf16 on recent GPUs); stitching,
            softmax and averaging stay float32.
    """

    def __init__(
        self,
        module: nn.Module | Sequence[nn.Module],
        device: str | torch.device = "cpu",
        tile_size: Sequence[int] | None = None,
        overlap: float | None = None,
        batch_size: int | None = None,
        tta_axes: Sequence[int] | None = None,
        mc_dropout: int = 0,
        uncertainty: str = "entropy",
        keep_largest: bool | Sequence[int] | None = None,
        connectivity: int = 26,
        precision: str = "32",
        postprocess: bool = True,
    ) -> None:
        if str(precision) not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        self.autocast_dtype = PRECISIONS[str(precision)]
        self.modules = [module] if isinstance(module, nn.Module) else list(module)
        self.device = torch.device(device)
        overrides = {"tile_size": tile_size, "overlap": overlap, "batch_size": batch_size}
        for m in self.modules:
            m.eval().to(device)
            # The tile the checkpoint validated with is the reference for per-input norms.
            warning = tile_warning(m.net, tile_size, m.inference.get("tile_size"), "tile_size")
            if warning:
                log.warning(warning)
            m.inference.update({k: v for k, v in overrides.items() if v is not None})
        self.module = self.modules[0]
        self.in_channels = self.module.hparams.net.get("in_channels")
        if isinstance(mc_dropout, bool) or int(mc_dropout) != mc_dropout or mc_dropout < 0:
            raise ValueError(f"mc_dropout must be an integer >= 0, got {mc_dropout}")
        if uncertainty not in UNCERTAINTIES:
            raise ValueError(f"uncertainty must be one of {UNCERTAINTIES}, got {uncertainty!r}")
        self.mc_dropout, self.uncertainty = int(mc_dropout), uncertainty
        if self.mc_dropout:
            for i, m in enumerate(self.modules):
                if not enable_mc_dropout(m):
                    raise ValueError(f"mc_dropout={mc_dropout}: network {i} ({type(m.net).__name__}"
                                     ") has no dropout layer; train it with dropout > 0")
        self.tta_axes = check_tta_axes(tta_axes)  # before any case is read
        num_classes = len(self.module.class_names)
        if keep_largest is True:
            keep_largest = list(range(1, num_classes))
        self.keep_largest = [int(c) for c in keep_largest or []]
        if any(not 0 < c < num_classes for c in self.keep_largest):
            raise ValueError(f"keep_largest_component: classes must be in 1..{num_classes - 1}, "
                             f"got {self.keep_largest}")
        if connectivity not in CONNECTIVITIES:
            raise ValueError(f"connectivity must be one of {CONNECTIVITIES}, got {connectivity}")
        self.connectivity = connectivity
        self.postprocessing = agreed_postprocessing(self.modules) if postprocess else None
        if self.postprocessing:
            log.info("post-processing (chosen on the validation cases in training): %s",
                     describe_postprocessing(self.postprocessing, self.module.class_names))

    def _check_channels(self, image: Volume, name: str) -> Volume:
        array = image.array if image.array.ndim == 4 else image.array[None]
        if self.in_channels is not None and array.shape[0] != self.in_channels:
            raise ValueError(
                f"{name}: {array.shape[0]} channel(s), the model expects {self.in_channels}"
            )
        return image.with_array(array)

    @torch.no_grad()
    def predict_all(
        self, image: Volume, name: str = "image",
        progress: Callable[[int, int], None] | None = None,
    ) -> Prediction:
        """Labels, probabilities and (with Monte-Carlo dropout) uncertainty of ``image``."""
        image = self._check_channels(image, name)
        preprocessor = self.module.preprocessor  # the same for every module (`load_ensemble`)
        # The trace records reorientation, cropping and resizing, so all of it can be undone.
        trace = preprocessor.trace(image)
        tensor = torch.from_numpy(preprocessor.image(image, trace).array)[None].to(self.device)
        passes = [m for m in self.modules for _ in range(max(1, self.mc_dropout))]
        calls = len(passes) * 2 ** len(self.tta_axes)
        finished = 0  # whole-volume network calls done, so progress spans every pass

        def logits_of(x: Tensor, module: nn.Module) -> Tensor:
            nonlocal finished

            def report(done: int, total: int, first: int = finished) -> None:
                progress(first * total + done, calls * total)

            with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                                enabled=self.autocast_dtype is not None):
                logits = module.predict_logits(x, report if progress is not None else None)
            finished += 1
            return logits

        # For the variance each pass is restored first: it is the spread of the probability
        # maps on the output grid (interpolating p**2 is not squaring interpolated p).
        restore_each = self.mc_dropout > 0 and self.uncertainty == "variance"
        mean: Tensor | None = None
        square: Tensor | None = None
        for module in passes:
            probabilities = mirrored_probabilities(
                functools.partial(logits_of, module=module), tensor, self.tta_axes)[0]
            if restore_each:
                probabilities = preprocessor.restore(probabilities, trace)
                squared = probabilities.square()
                square = squared if square is None else square.add_(squared)
            mean = probabilities if mean is None else mean.add_(probabilities)
        assert mean is not None
        mean = mean.div_(len(passes))
        if not restore_each:
            mean = preprocessor.restore(mean, trace)
        geometry = (image.spacing, image.origin, image.direction)
        labels = class_argmax(mean).cpu().numpy()
        if self.postprocessing:
            labels = apply_postprocessing(labels, self.postprocessing)
        if self.keep_largest:
            labels = keep_largest_component(labels, self.keep_largest, self.connectivity)
        uncertainty = None
        if self.mc_dropout:
            if square is not None:  # variance: per class over the passes, mean over classes
                values = (square.div_(len(passes)) - mean.square()).clamp_(min=0).mean(0)
            else:  # entropy of the mean probabilities, nats
                values = -(mean * mean.clamp(min=1e-12).log()).sum(0)
            uncertainty = Volume(values.float().cpu().numpy(), *geometry)
        return Prediction(Volume(labels, *geometry),
                          Volume(mean.float().cpu().numpy(), *geometry), uncertainty)

    def predict(
        self, image: Volume, name: str = "image",
        progress: Callable[[int, int], None] | None = None,
    ) -> Volume:
        """The uint8 label map of ``image`` on ``image``'s own grid."""
        return self.predict_all(image, name, progress).labels

    def predict_file(
        self, case: InputCase, output_dir: Path,
        progress: Callable[[int, int], None] | None = None,
        save_probabilities: bool = False,
    ) -> Path:
        """Read, predict and write ``<output_dir>/<case_id>.nii.gz`` atomically.

        Also ``<case_id>_probabilities.nii.gz`` (with ``save_probabilities``) and
        ``<case_id>_uncertainty.nii.gz`` (with Monte-Carlo dropout) beside it.
        """
        # Named first: an unsafe case id is refused before any work (and never written).
        labels_path = output_path(output_dir, case.case_id)
        image = read_case(case)
        result = self.predict_all(image, name=f"case {case.case_id} ({case.source})",
                                  progress=progress)
        if save_probabilities:
            write_channels(result.probabilities,
                           output_path(output_dir, case.case_id, "_probabilities.nii.gz"))
        if result.uncertainty is not None:
            write_volume(result.uncertainty,
                         output_path(output_dir, case.case_id, "_uncertainty.nii.gz"))
        return write_volume(result.labels, labels_path)


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


def predict_cases(
    ckpt_path: str | Path | Sequence[str | Path],
    source: str | Path | Sequence[InputCase],
    output: str | Path,
    device: str = "auto",
    tile_size: Sequence[int] | None = None,
    overlap: float | None = None,
    batch_size: int | None = None,
    tta_axes: Sequence[int] | None = None,
    mc_dropout: int = 0,
    uncertainty: str = "entropy",
    save_probabilities: bool = False,
    keep_largest: bool | Sequence[int] | None = None,
    connectivity: int = 26,
    precision: str = "32",
    overwrite: bool = False,
    postprocess: bool = True,
) -> dict[str, list]:
    """Predict every case of ``source`` into ``output``; one bad case does not stop the rest.

    ``source`` is what `find_inputs` takes (a file, a folder, a list file) or cases already
    found (`dataset_cases`). ``ckpt_path`` may list several checkpoints (an ensemble); the other
    arguments are `Predictor`'s.

    Returns:
        ``{"written": [paths], "failed": [(case_id, one-line reason)], "class_names": [...],
        "regions": {name: labels}}`` (the checkpoints' class names, background first, and
        the regions they score).

    Raises:
        ValueError: ``output`` is, or lies inside, an input folder (outputs never mix with,
            or overwrite, inputs); two cases share an output name; ``output`` already holds
            an output of these cases and ``overwrite`` is false. All before any work.
    """
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
        refuse_existing_outputs(cases, output)
    torch_device = resolve_device(device)
    predictor = Predictor(load_ensemble(ckpt_path, torch_device), torch_device, tile_size,
                          overlap, batch_size, tta_axes, mc_dropout, uncertainty, keep_largest,
                          connectivity, precision, postprocess)
    output.mkdir(parents=True, exist_ok=True)
    written, failed = [], []
    with Progress(*Progress.get_default_columns(), MofNCompleteColumn()) as bar:
        for case in cases:
            task = bar.add_task(case.case_id, total=None)
            try:
                path = predictor.predict_file(
                    case, output, lambda done, total, t=task: bar.update(t, completed=done,
                                                                          total=total),
                    save_probabilities=save_probabilities)
                written.append(str(path))
            except (OSError, ValueError, RuntimeError) as error:
                message = str(error).splitlines()[0] if str(error) else type(error).__name__
                failed.append((case.case_id, message))
                log.error("%s: %s", case.case_id, message)
    return {"written": written, "failed": failed, "class_names": predictor.module.class_names,
            "regions": dict(predictor.module.regions)}


# Every file a case's prediction may write, after its name.
OUTPUT_SUFFIXES = (".nii.gz", "_probabilities.nii.gz", "_uncertainty.nii.gz")


def refuse_existing_outputs(cases: Sequence[InputCase], output: Path) -> None:
    """Refuse, before any work, outputs that would replace files already in ``output``.

    Raises:
        ValueError: listing the first few files and the ``overwrite=true`` that allows it.
    """
    existing = [output / f"{case.case_id}{suffix}" for case in cases
                for suffix in OUTPUT_SUFFIXES if (output / f"{case.case_id}{suffix}").exists()]
    if existing:
        shown = ", ".join(str(p) for p in existing[:3])
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise ValueError(f"output={output} already holds {shown}{more}: set overwrite=true to "
                         "replace them, or choose another output folder")
