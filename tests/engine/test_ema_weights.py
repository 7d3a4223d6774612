from types import SimpleNamespace

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn

from volseg.engine.ema_weights import EMAWeights


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)


def _checkpoint(module, averaged, raw):
    state = module.state_dict()
    return {"state_dict": {k: torch.full_like(v, averaged) for k, v in state.items()},
            "current_model_state": {k: torch.full_like(v, raw) for k, v in state.items()},
            "averaging_state": {"n_averaged": torch.tensor(5)}}


def _load(fn):
    """Load a checkpoint the way Lightning does: its state_dict first, then the callbacks'."""
    module, callback = _Tiny(), EMAWeights(decay=0.9)
    trainer = SimpleNamespace(state=SimpleNamespace(fn=fn))
    callback.setup(trainer, module, "fit")
    checkpoint = _checkpoint(module, averaged=1.0, raw=2.0)
    module.load_state_dict(checkpoint["state_dict"])
    callback.on_load_checkpoint(trainer, module, checkpoint)
    return module.layer.weight


def test_a_tested_checkpoint_keeps_its_averaged_weights():
    assert torch.equal(_load(TrainerFn.TESTING), torch.ones(1, 2))
    assert torch.equal(_load(TrainerFn.VALIDATING), torch.ones(1, 2))


def test_a_resumed_fit_gets_its_raw_weights_back():
    assert torch.equal(_load(TrainerFn.FITTING), torch.full((1, 2), 2.0))
