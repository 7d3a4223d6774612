"""Predict a volume with one trained network or an ensemble, in the volume's own geometry.

Raw volume -> the networks' preprocessing -> sliding-window logits -> softmax, averaged over
mirrored inputs (test-time augmentation), networks (an ensemble) and Monte-Carlo dropout
passes -> probabilities restored onto the original grid -> labels (`class_labels`: argmax, the
post-processing chosen in training, optional largest-component clean-up). The networks come
from checkpoints (`volseg.engine.checkpoint_loading`); reading and writing files is
`volseg.engine.predict`'s.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from volseg.inference.labels import class_labels
from volseg.inference.network import TrainedNetwork
from volseg.inference.norm_checks import tile_warning
from volseg.inference.postprocess import describe_postprocessing
from volseg.inference.settings import PredictionSettings, check_tta_axes
from volseg.inference.writer import Prediction
from volseg.io import Volume

log = logging.getLogger(__name__)


def enable_mc_dropout(module: nn.Module) -> int:
    """Put the dropout layers of ``module`` (only they) in train mode; return how many.

    Normalisation layers stay in eval mode, so batch statistics are not re-estimated from one
    volume's tiles: only the dropout masks make the passes differ.
    """
    dropouts = [m for m in module.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    for layer in dropouts:
        layer.train()
    return len(dropouts)


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


def agreed_postprocessing(choices: Sequence[dict | None]) -> dict | None:
    """The post-processing steps every network's checkpoint chose (see
    `PostprocessingSelector`), or ``None`` when none is shared: an ensemble applies only what
    each of its members was validated with."""
    choices = [choice or {} for choice in choices]
    foreground = all(c.get("largest_foreground") for c in choices)
    classes = set.intersection(*(set(c.get("largest_component") or []) for c in choices))
    connectivities = {int(c.get("connectivity", 26)) for c in choices}
    if not (foreground or classes) or len(connectivities) != 1:
        return None
    return {"largest_foreground": foreground, "largest_component": sorted(classes),
            "connectivity": connectivities.pop()}


class Predictor:
    """Segments volumes with one trained network or an ensemble of them.

    Args:
        networks: one `TrainedNetwork`, or several whose probabilities are averaged (they
            share preprocessing, class names and input channels:
            `volseg.engine.checkpoint_loading.load_networks` checks that).
        settings: the prediction options (`PredictionSettings`; defaults when ``None``).
        device: where the networks run.
    """

    def __init__(
        self,
        networks: TrainedNetwork | Sequence[TrainedNetwork],
        settings: PredictionSettings | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.settings = settings = settings or PredictionSettings()
        given = [networks] if isinstance(networks, TrainedNetwork) else list(networks)
        if not given:
            raise ValueError("Predictor needs at least one network")
        self.device = torch.device(device)
        self.networks = []
        for trained in given:
            trained.network.eval().to(self.device)
            # The tile the checkpoint validated with is the reference for per-input norms.
            warning = tile_warning(trained.network, settings.tile_size,
                                   trained.inferer.tile_size, "predictor.tile_size")
            if warning:
                log.warning(warning)
            # A tile given here is named as the option it came from by the inferer's errors.
            inferer = trained.inferer.with_overrides(
                tile_size=settings.tile_size, overlap=settings.overlap,
                batch_size=settings.batch_size,
                key="predictor" if settings.tile_size is not None else None)
            self.networks.append(dataclasses.replace(trained, inferer=inferer))
        first = self.networks[0]
        if settings.mc_dropout:
            for i, trained in enumerate(self.networks):
                if not enable_mc_dropout(trained.network):
                    raise ValueError(
                        f"mc_dropout={settings.mc_dropout}: network {i} "
                        f"({type(trained.network).__name__}) has no dropout layer; train it "
                        "with dropout > 0")
        self.class_names = first.class_names
        self.keep_largest = settings.largest_component_classes(len(self.class_names))
        self.postprocessing = (agreed_postprocessing([n.postprocessing for n in self.networks])
                               if settings.postprocess else None)
        if self.postprocessing:
            log.info("post-processing (chosen on the validation cases in training): %s",
                     describe_postprocessing(self.postprocessing, self.class_names))

    def _check_channels(self, image: Volume, name: str) -> Volume:
        array = image.array if image.array.ndim == 4 else image.array[None]
        in_channels = self.networks[0].in_channels
        if in_channels is not None and array.shape[0] != in_channels:
            raise ValueError(
                f"{name}: {array.shape[0]} channel(s), the model expects {in_channels}")
        return image.with_array(array)

    @torch.no_grad()
    def predict_all(
        self, image: Volume, name: str = "image",
        progress: Callable[[int, int], None] | None = None,
    ) -> Prediction:
        """Labels, probabilities and (with Monte-Carlo dropout) uncertainty of ``image``."""
        settings = self.settings
        image = self._check_channels(image, name)
        preprocessor = self.networks[0].preprocessor  # the same for every network
        # The trace records reorientation, cropping and resizing, so all of it can be undone.
        trace = preprocessor.trace(image)
        tensor = torch.from_numpy(preprocessor.image(image, trace).array)[None].to(self.device)
        passes = [n for n in self.networks for _ in range(max(1, settings.mc_dropout))]
        calls = len(passes) * 2 ** len(settings.tta_axes)
        finished = 0  # whole-volume network calls done, so progress spans every pass
        autocast = settings.autocast_dtype

        def logits_of(x: Tensor, trained: TrainedNetwork) -> Tensor:
            nonlocal finished

            def report(done: int, total: int, first: int = finished) -> None:
                progress(first * total + done, calls * total)

            with torch.autocast(self.device.type, dtype=autocast or torch.float32,
                                enabled=autocast is not None):
                logits = trained.logits(x, report if progress is not None else None)
            finished += 1
            return logits

        # For the variance each pass is restored first: it is the spread of the probability
        # maps on the output grid (interpolating p**2 is not squaring interpolated p).
        restore_each = settings.mc_dropout > 0 and settings.uncertainty == "variance"
        mean: Tensor | None = None
        square: Tensor | None = None
        for trained in passes:
            probabilities = mirrored_probabilities(
                functools.partial(logits_of, trained=trained), tensor, settings.tta_axes)[0]
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
        labels = class_labels(mean, self.postprocessing, self.keep_largest,
                              settings.connectivity)
        uncertainty = None
        if settings.mc_dropout:
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
