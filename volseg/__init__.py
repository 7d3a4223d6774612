"""volseg: 3D medical image segmentation with PyTorch Lightning and Hydra."""

from typing import Any

from omegaconf import DictConfig

from volseg.resolvers import register_resolvers

__version__ = "0.1.0"

register_resolvers()


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run training from a composed Hydra config; see `volseg.engine.train.train`."""
    # Imported here so that `import volseg` (which registers the config resolvers) stays light.
    from volseg.engine.train import train as _train

    return _train(cfg)


__all__ = ["__version__", "train"]
