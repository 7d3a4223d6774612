"""Every conf/model/*.yaml builds, keeps the spatial size, and trains: adding a model config adds
it to these tests by itself."""

import shutil

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from tests.conftest import CONF_DIR, compose_config

MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
# Width keys set to 4 channels so every network is small enough for a 2-core CPU.
WIDTH_KEYS = ("features", "width", "base_features", "init_features", "base_channels")
DEFAULT_DIVISOR = 16  # for networks without a `divisor` attribute
ODD_FACTORS = (3, 1, 1)  # spatial size = divisor * odd factor; x differs from y and z


def _narrowings(model: DictConfig) -> list[dict]:
    """Overrides to try, narrowest first; the last ({}) is the config as it is."""
    narrow = {key: 4 for key in WIDTH_KEYS if isinstance(model.get(key), int)}
    channels = model.get("channels")
    if channels is not None and all(isinstance(c, int) for c in channels):
        narrow["channels"] = [4 * 2**i for i in range(len(channels))]
    levels = {"num_levels": 3} if isinstance(model.get("num_levels"), int) and (
        model.num_levels > 3) else {}
    return [{**narrow, **levels}, narrow, {}]


def _build(name: str, tmp_path) -> torch.nn.Module:
    cfg = compose_config("train", tmp_path, [f"model={name}"])
    if str(cfg.model._target_).startswith("monai."):
        pytest.importorskip("monai")
    errors = []
    for overrides in _narrowings(cfg.model):
        model = cfg.model.copy()
        with open_dict(model):
            model.in_channels = 2
            model.out_channels = 3
            model.update(overrides)
        try:
            torch.manual_seed(0)
            return instantiate(model)
        except Exception as error:  # noqa: BLE001 - a narrowing the network refuses
            errors.append(f"{overrides}: {error}")
    raise AssertionError(f"{name} did not build:\n" + "\n".join(errors))


def _first(out):
    return out[0] if isinstance(out, (list, tuple)) else out


@pytest.mark.parametrize("name", MODELS)
def test_model_forward_shape_and_gradients(name, tmp_path):
    net = _build(name, tmp_path)
    divisor = int(getattr(net, "divisor", DEFAULT_DIVISOR))
    spatial = tuple(divisor * f for f in ODD_FACTORS)
    x = torch.randn(2, 2, *spatial)

    net.eval()
    with torch.no_grad():
        out = _first(net(x))
    assert out.shape == (2, 3, *spatial)
    assert torch.isfinite(out).all()

    net.train()
    out = net(x[:1])  # one sample: convolution backward dominates this file's CPU time
    outputs = out if isinstance(out, (list, tuple)) else [out]
    # Random weights make every logit matter to the loss. All outputs take part, so
    # deep-supervision heads (if any) must receive gradients as well.
    loss = sum((o * torch.randn_like(o)).mean() for o in outputs)
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    bad = [n for n, p in net.named_parameters() if p.grad is not None
           and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad[:5]}"
    assert any(p.grad.abs().sum() > 0 for p in net.parameters() if p.grad is not None)


@pytest.mark.slow
def test_torch_compile_matches_eager(tmp_path):
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile is not available in this torch")
    if shutil.which("cc") is None and shutil.which("c++") is None:
        pytest.skip("torch.compile's default (inductor) backend needs a C compiler; none found")
    cfg = compose_config("train", tmp_path, ["model=unet3d_small"])
    torch.manual_seed(0)
    net = instantiate(cfg.model).eval()
    x = torch.randn(1, cfg.model.in_channels, *(net.divisor * f for f in ODD_FACTORS))
    with torch.no_grad():
        expected = net(x)
    # Environment failures (no compiler or headers, unsupported platform) skip; a wrong
    # result from a compiled model fails.
    environment_errors = tuple(
        cls for cls in (getattr(torch._dynamo.exc, "BackendCompilerFailed", None),
                        getattr(torch._inductor.exc, "InductorError", None),
                        getattr(torch._inductor.exc, "CppCompileError", None))
        if cls is not None
    )
    try:
        compiled = torch.compile(net)
        with torch.no_grad():
            got = compiled(x)
    except environment_errors as error:
        pytest.skip(f"torch.compile failed for environment reasons: {error}".splitlines()[0])
    # Same float32 maths, fused differently: summation order changes the last bits only.
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
