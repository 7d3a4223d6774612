import pytest

from volseg.engine.trusted import UntrustedTargetError, check_targets, instantiate_trusted


def test_allowed_targets_build():
    layer = instantiate_trusted({"_target_": "torch.nn.Conv3d", "in_channels": 1,
                                 "out_channels": 2, "kernel_size": 3})
    assert layer.out_channels == 2


@pytest.mark.parametrize("target", ["os.system", "subprocess.Popen", "builtins.eval",
                                    "torch.load", "volsegx.evil"])
def test_other_targets_are_refused_before_anything_runs(target):
    config = {"_target_": "volseg.losses.WeightedSum",
              "losses": [{"_target_": target, "_args_": ["echo pwned"]}], "weights": [1.0]}
    message = f"refusing to build '{target}' at losses\\[0\\]"
    with pytest.raises(UntrustedTargetError, match=message):
        check_targets(config)
