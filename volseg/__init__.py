"""volseg: 3D medical image segmentation with PyTorch Lightning and Hydra."""

from volseg.resolvers import register_resolvers

__version__ = "0.1.0"

register_resolvers()


def train(cfg):  # noqa: ANN001, ANN201 - thin re-export, documented at the target
    """Run training from a composed Hydra config; see `volseg.engine.train.train`."""
    from volseg.engine.train import train as _train

    return _train(cfg)


__all__ = ["__version__", "train"]
