"""predict options: mirroring TTA, ensembles, probability maps, MC dropout, largest component."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from tests.inference.conftest import make_checkpoint, oblique_volume
from volseg.engine.checkpoint_loading import load_module, load_networks
from volseg.engine.predict import predict_cases
from volseg.inference.postprocess import keep_largest_component, keep_largest_foreground
from volseg.inference.predictor import Predictor, agreed_postprocessing, mirrored_probabilities
from volseg.inference.settings import PredictionSettings
from volseg.io import Volume, read_volume, write_volume


def _predictor(networks, **options) -> Predictor:
    return Predictor(networks, PredictionSettings(**options))


def _volume(shape=(14, 12, 7), seed: int = 0) -> Volume:
    return oblique_volume(shape, seed, (1.1, 1.3, 2.4))


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("folds")
    return [make_checkpoint(folder / f"fold{i}.ckpt", seed=i) for i in range(2)]


@pytest.fixture(scope="module")
def dropout_checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("drop") / "drop.ckpt", dropout=0.3)


# --- test-time augmentation -------------------------------------------------------------------

def test_mirroring_equals_the_manual_average_of_flipped_predictions():
    torch.manual_seed(0)
    # A random 3x3x3 convolution plus a position-dependent bias: not flip-equivariant.
    conv = torch.nn.Conv3d(2, 3, 3, padding=1)
    ramp = torch.linspace(-2, 2, 9)[:, None, None]

    def net(x):
        return conv(x) + ramp

    image = torch.randn(1, 2, 9, 8, 7)
    with torch.no_grad():
        got = mirrored_probabilities(net, image, [0, 2])
        # Reference in numpy: np.flip on the arrays, the four subsets of {x, z} listed by hand.
        array = image.numpy()
        expected = np.zeros((1, 3, 9, 8, 7))
        for axes in [(), (2,), (4,), (2, 4)]:
            flipped = torch.from_numpy(np.flip(array, axes).copy())
            probabilities = torch.softmax(net(flipped), 1).numpy()
            expected += np.flip(probabilities, axes) / 4
        plain = mirrored_probabilities(net, image, None)
    # float32 softmax of the same logits summed in another order: rounding only.
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)
    assert (got - plain).abs().max() > 1e-3  # mirroring changed something


def test_tta_axes_are_checked():
    with pytest.raises(ValueError, match="tta_axes"):
        mirrored_probabilities(lambda x: x, torch.zeros(1, 1, 2, 2, 2), [3])


def test_predictor_tta_averages_flipped_whole_volume_predictions(checkpoint):
    module = load_module(checkpoint)
    image = _volume()
    steps = []
    got = _predictor(module.trained_network(), tta_axes=[0, 1, 2]).predict_all(
        image, progress=lambda done, total: steps.append((done, total))).probabilities.array
    # One report per tile (batch_size 1) over all 8 mirrorings, counting up to the total.
    assert [d for d, _ in steps] == list(range(1, len(steps) + 1))
    assert {t for _, t in steps} == {len(steps)} and len(steps) % 8 == 0
    pre = module.preprocessor
    trace = pre.trace(image.with_array(image.array[None]))
    tensor = torch.from_numpy(pre.image(image.with_array(image.array[None]), trace).array)[None]
    expected = 0
    with torch.no_grad():
        for k in range(4):
            for axes in itertools.combinations((2, 3, 4), k):
                logits = module.predict_logits(tensor.flip(axes) if axes else tensor)
                expected = expected + torch.softmax(logits, 1).flip(axes)[0] / 8
    expected = pre.restore(expected, trace).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


# --- ensembles --------------------------------------------------------------------------------

def test_ensemble_averages_the_members_probabilities(two_checkpoints):
    image = _volume()
    members = [Predictor(load_networks(p)).predict_all(image).probabilities.array
               for p in two_checkpoints]
    assert np.abs(members[0] - members[1]).max() > 1e-3  # different networks
    got = Predictor(load_networks(two_checkpoints)).predict_all(image)
    # Restoring (linear interpolation, constant padding) is linear, so the order of averaging
    # and restoring changes only rounding.
    np.testing.assert_allclose(got.probabilities.array, (members[0] + members[1]) / 2, atol=1e-6)
    np.testing.assert_array_equal(got.labels.array, got.probabilities.array.argmax(0))


def test_ensemble_refuses_checkpoints_with_other_classes(two_checkpoints, tmp_path):
    other = make_checkpoint(tmp_path / "other.ckpt", class_names=["background", "liver", "x"])
    with pytest.raises(ValueError, match=r"other\.ckpt: class names"):
        load_networks([two_checkpoints[0], other])


# --- probability maps and Monte-Carlo dropout -------------------------------------------------

def test_probability_map_is_4d_on_the_input_grid(two_checkpoints, tmp_path):
    source = write_volume(_volume(), tmp_path / "in" / "p1.nii.gz")
    summary = predict_cases(two_checkpoints, source, tmp_path / "out", device="cpu",
                            save_probabilities=True)
    assert summary["failed"] == []
    probs = nib.load(tmp_path / "out" / "p1_probabilities.nii.gz")
    labels = nib.load(tmp_path / "out" / "p1.nii.gz")
    assert probs.shape == (14, 12, 7, 3)
    np.testing.assert_allclose(probs.affine[:3], nib.load(source).affine[:3], atol=1e-5)
    data = probs.get_fdata()
    np.testing.assert_allclose(data.sum(-1), 1, atol=1e-5)
    np.testing.assert_array_equal(data.argmax(-1), labels.get_fdata())


def test_mc_dropout_switches_only_dropout_layers(dropout_checkpoint):
    predictor = _predictor(load_networks(dropout_checkpoint), mc_dropout=2)
    layers = list(predictor.networks[0].network.modules())
    dropouts = [m for m in layers if isinstance(m, torch.nn.Dropout3d)]
    norms = [m for m in layers if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm,
                                                  torch.nn.modules.instancenorm._InstanceNorm))]
    assert dropouts and norms
    assert all(m.training for m in dropouts) and not any(m.training for m in norms)


def test_mc_dropout_writes_the_entropy_of_the_mean(dropout_checkpoint, tmp_path):
    source = write_volume(_volume(), tmp_path / "in" / "c.nii.gz")
    summary = predict_cases(dropout_checkpoint, source, tmp_path / "out", device="cpu",
                            mc_dropout=3, save_probabilities=True)
    assert summary["failed"] == []
    p = nib.load(tmp_path / "out" / "c_probabilities.nii.gz").get_fdata()
    entropy = read_volume(tmp_path / "out" / "c_uncertainty.nii.gz")
    assert entropy.geometry_mismatch(read_volume(source)) is None
    np.testing.assert_allclose(entropy.array, -(p * np.log(np.clip(p, 1e-12, None))).sum(-1),
                               atol=1e-4)


def test_mc_dropout_variance_is_the_spread_of_the_passes(dropout_checkpoint):
    module = load_module(dropout_checkpoint)
    # An untrained network predicts nearly uniform probabilities; sharpen its logits so the
    # passes differ measurably.
    last = [m for m in module.net.modules() if isinstance(m, torch.nn.Conv3d)][-1]
    last.weight.data.mul_(100)
    image = _volume()
    torch.manual_seed(3)
    got = _predictor(module.trained_network(), mc_dropout=4,
                     uncertainty="variance").predict_all(image)
    # The same four passes by hand: same seed, one restored probability map per pass.
    torch.manual_seed(3)
    single = _predictor(module.trained_network(), mc_dropout=1)
    passes = np.stack([single.predict_all(image).probabilities.array for _ in range(4)])
    np.testing.assert_allclose(got.probabilities.array, passes.mean(0), atol=1e-5)
    np.testing.assert_allclose(got.uncertainty.array, passes.var(0).mean(0), atol=1e-5)
    assert got.uncertainty.array.max() > 1e-3  # the comparison above is not trivially 0 = 0


def test_mc_dropout_needs_dropout_layers(checkpoint):
    with pytest.raises(ValueError, match="no dropout layer"):
        _predictor(load_networks(checkpoint), mc_dropout=2)


# --- largest connected component --------------------------------------------------------------

def test_keep_largest_component_per_class_and_connectivity():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[0:3, 0:3, 0:3] = 1            # 27 voxels: class 1's largest
    labels[6, 6, 6] = 1                  # isolated voxel: removed
    labels[3, 3, 3] = 1                  # touches the cube by a corner only
    labels[5:9, 0:2, 0:2] = 2            # 16 voxels: class 2's largest
    labels[0, 8, 8] = 2
    got26 = keep_largest_component(labels, [1, 2])
    expected = labels.copy()
    expected[6, 6, 6] = expected[0, 8, 8] = 0
    np.testing.assert_array_equal(got26, expected)
    got6 = keep_largest_component(labels, [1], connectivity=6)
    expected6 = labels.copy()
    expected6[6, 6, 6] = expected6[3, 3, 3] = 0
    np.testing.assert_array_equal(got6, expected6)
    # Only the chosen classes are touched; each kept class is one component afterwards.
    np.testing.assert_array_equal(keep_largest_component(labels, [2])[6, 6, 6], 1)
    assert ndimage.label(got26 == 1, np.ones((3, 3, 3)))[1] == 1


def test_predictor_keep_largest_true_means_every_foreground_class(checkpoint):
    predictor = _predictor(load_networks(checkpoint), keep_largest_component=True)
    assert predictor.keep_largest == [1, 2]
    labels = predictor.predict(_volume((20, 18, 9))).array
    for cls in (1, 2):
        assert ndimage.label(labels == cls, np.ones((3, 3, 3)))[1] <= 1
    with pytest.raises(ValueError, match="keep_largest_component"):
        _predictor(load_networks(checkpoint), keep_largest_component=[3])
    with pytest.raises(ValueError, match="connectivity"):
        _predictor(load_networks(checkpoint), keep_largest_component=True, connectivity=8)


def test_keep_largest_foreground_keeps_what_touches_the_largest_component():
    labels = np.zeros((12, 12, 12), np.uint8)
    labels[2:7, 2:7, 2:7] = 1            # the organ: 125 voxels
    labels[4, 4, 4] = 2                  # a lesion inside it: part of the foreground component
    labels[7, 7, 7] = 2                  # a lesion touching the organ by a corner only
    labels[10, 10, 10] = 1               # a speck of organ far away
    labels[10, 0:2, 0] = 2               # a lesion far away
    got = keep_largest_foreground(labels)
    expected = labels.copy()
    expected[10, 10, 10] = 0
    expected[10, 0:2, 0] = 0
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == labels.dtype
    # Faces only: the corner-touching lesion is its own component now.
    assert keep_largest_foreground(labels, connectivity=6)[7, 7, 7] == 0
    # Per class, the far lesion (2 voxels) would have won over the 1-voxel ones: not so here.
    assert keep_largest_component(labels, [2])[10, 0, 0] == 2


def test_the_checkpoints_validated_postprocessing_is_applied_unless_turned_off(tmp_path):
    choice = {"largest_foreground": True, "largest_component": [2], "connectivity": 26}
    module = load_module(make_checkpoint(tmp_path / "pp.ckpt", postprocessing=choice))
    assert module.postprocessing == choice
    volume = _volume((20, 18, 9), seed=3)
    raw = _predictor(module.trained_network(), postprocess=False).predict(volume).array
    cleaned = Predictor(module.trained_network()).predict(volume).array
    # The reference, with scipy directly: the largest foreground component, then class 2's.
    components, _ = ndimage.label(raw > 0, np.ones((3, 3, 3)))
    largest = np.bincount(components.ravel())[1:].argmax() + 1
    expected = np.where(components == largest, raw, 0)
    lesion, _ = ndimage.label(expected == 2, np.ones((3, 3, 3)))
    if lesion.max() > 1:
        expected[(lesion > 0) & (lesion != np.bincount(lesion.ravel())[1:].argmax() + 1)] = 0
    np.testing.assert_array_equal(cleaned, expected)
    assert ndimage.label(raw > 0, np.ones((3, 3, 3)))[1] > 1, "nothing to clean: a weak test"


def test_an_ensemble_applies_only_the_steps_every_checkpoint_chose():
    def member(foreground, classes, connectivity=26):
        return {"largest_foreground": foreground, "largest_component": classes,
                "connectivity": connectivity}

    assert agreed_postprocessing([member(True, [1, 2]), member(True, [2])]) == {
        "largest_foreground": True, "largest_component": [2], "connectivity": 26}
    assert agreed_postprocessing([member(True, [1]), member(False, [2])]) is None
    assert agreed_postprocessing([member(True, []), member(True, [], connectivity=6)]) is None
    assert agreed_postprocessing([None]) is None  # a checkpoint without a choice


# --- precision --------------------------------------------------------------------------------

def test_bf16_autocast_stays_close_to_float32_and_bad_precision_is_refused(checkpoint):
    volume = _volume()
    full = _predictor(load_networks(checkpoint), precision="32").predict_all(volume)
    half = _predictor(load_networks(checkpoint), precision="bf16").predict_all(volume)
    # bf16 keeps 8 mantissa bits: probabilities move by well under 0.05, but they do move
    # (identical maps would mean autocast never reached the network).
    difference = np.abs(half.probabilities.array - full.probabilities.array).max()
    assert 0 < difference < 0.05
    assert half.probabilities.array.dtype == np.float32
    with pytest.raises(ValueError, match="precision must be one of"):
        _predictor(load_networks(checkpoint), precision="fp8")


def test_a_tile_option_is_named_as_the_user_typed_it(checkpoint, caplog):
    """The override's warnings and errors name `predictor.tile_size`, not the checkpoint's key."""
    image = _volume((20, 18, 9))
    with caplog.at_level("WARNING"):
        predictor = _predictor(load_networks(checkpoint), tile_size=[16, 16, 4])
    assert "predictor.tile_size=[16, 16, 4] differs from the training patch" in caplog.text
    assert predictor.networks[0].inferer.key == "predictor"
    assert _predictor(load_networks(checkpoint)).networks[0].inferer.key == "module.inference"
    assert predictor.predict(image).array.shape == (20, 18, 9)
    # The inferer's error for a tile the network does not map onto itself names its key
    # (tests/inference/test_inferer.py): here that is the option the user typed.
