from types import SimpleNamespace

import numpy as np
import pytest
import torch

from volseg.engine.postprocessing_selector import (
    FOREGROUND,
    FOREGROUND_CLASS,
    RAW,
    RAW_CLASS,
    PostprocessingSelector,
    case_dice,
    choose,
)


def _case():
    """An organ with a lesion inside, a false organ speck and a second, real lesion far away."""
    target = np.zeros((12, 12, 12), np.int64)
    target[2:6, 2:6, 2:6] = 1             # 64 voxels
    target[3, 3, 3] = 2                   # lesion inside the organ
    target[10, 10, 0:2] = 2               # a second lesion, 2 voxels, far away
    prediction = target.copy()
    prediction[10, 0:3, 10] = 1           # a false organ speck: 3 voxels
    return prediction, target


def test_case_dice_of_each_candidate_worked_by_hand():
    prediction, target = _case()
    dice = case_dice(prediction, target, num_classes=3)
    organ_tp, organ = 63, 63              # 64 - the lesion voxel
    lesion = 3
    # Raw: organ 2*63 / (66 + 63); lesion perfect.
    assert dice[RAW] == pytest.approx([2 * organ_tp / (organ + 3 + organ), 1.0])
    # Largest foreground component: the speck and the far lesion go.
    assert dice[FOREGROUND] == pytest.approx([1.0, 2 * 1 / (1 + lesion)])
    # Each class's own largest component: the organ loses its speck; the lesion keeps its
    # 2-voxel part and loses the voxel inside the organ.
    assert dice[RAW_CLASS] == pytest.approx([1.0, 2 * 2 / (2 + lesion)])
    assert dice[FOREGROUND_CLASS] == pytest.approx([1.0, 2 * 1 / (1 + lesion)])


def test_unannotated_voxels_are_not_scored_and_an_empty_class_is_nan():
    prediction, target = _case()
    annotated = np.ones(target.shape, bool)
    annotated[10] = False                 # the slab holding the speck and the far lesion
    dice = case_dice(prediction, target, 3, annotated=annotated)
    assert dice[RAW] == pytest.approx([1.0, 1.0])
    empty = case_dice(np.zeros((4, 4, 4), np.int64), np.zeros((4, 4, 4), np.int64), 3)
    assert np.isnan(empty).all()


def test_choose_follows_nnunets_order():
    # Rows RAW, FOREGROUND, RAW_CLASS, FOREGROUND_CLASS; columns organ, lesion.
    helps = np.array([[0.90, 0.80], [0.95, 0.80], [0.95, 0.60], [0.95, 0.85]])
    choice = choose(helps)
    assert choice["largest_foreground"] and choice["largest_component"] == [2]
    assert choice["dice_before"] == pytest.approx(0.85)
    assert choice["dice_after"] == pytest.approx(0.90)
    # The mean rises but the lesion falls: the foreground step is refused; the organ's own
    # step is then judged on the raw map.
    hurts_lesion = np.array([[0.90, 0.80], [0.99, 0.79], [0.93, 0.50], [0.99, 0.79]])
    choice = choose(hurts_lesion)
    assert not choice["largest_foreground"] and choice["largest_component"] == [1]
    assert choose(hurts_lesion, min_gain=0.05)["largest_component"] == []
    # A class no case held (NaN) is never chosen and does not block the others.
    nan_class = np.array([[0.9, np.nan], [0.95, np.nan], [0.9, np.nan], [0.95, np.nan]])
    assert choose(nan_class)["largest_foreground"]
    assert choose(nan_class)["largest_component"] == []


class _Module(SimpleNamespace):
    def log(self, name, value):
        self.logged[name] = value


def test_the_callback_sums_cases_stores_the_choice_and_logs_the_dice():
    prediction, target = _case()
    module = _Module(class_names=["background", "organ", "lesion"], ignore_index=None,
                     device=torch.device("cpu"), postprocessing=None, logged={})
    reduced = []
    strategy = SimpleNamespace(reduce=lambda t, reduce_op: reduced.append(reduce_op) or t)
    trainer = SimpleNamespace(sanity_checking=False, strategy=strategy)
    callback = PostprocessingSelector()
    callback.on_validation_epoch_start(trainer, module)
    batch = {"label": torch.from_numpy(target)[None, None]}
    callback.on_validation_batch_end(trainer, module, {"prediction": torch.from_numpy(
        prediction)[None]}, batch, 0)
    callback.on_validation_epoch_end(trainer, module)
    assert reduced == ["sum"]
    # Organ: 0.977 -> 1 with the foreground step, lesion: 1 -> 0.5; the organ's own step
    # (organ 1, lesion kept at 1) wins instead.
    assert module.postprocessing == {"largest_foreground": False, "largest_component": [1],
                                     "connectivity": 26}
    assert module.logged["val/dice_postprocessed"] == pytest.approx(1.0)
    # A checkpoint loaded for the test restores an older choice; the latest round's wins.
    module.postprocessing = {"largest_foreground": True, "largest_component": [],
                             "connectivity": 26}
    callback.on_test_start(trainer, module)
    assert module.postprocessing["largest_component"] == [1]


def test_sanity_checks_choose_nothing_and_bad_settings_name_their_key():
    module = _Module(postprocessing="untouched", class_names=["bg", "a"], logged={})
    trainer = SimpleNamespace(sanity_checking=True)
    callback = PostprocessingSelector()
    callback.on_validation_batch_end(trainer, module, {"prediction": torch.ones(1, 2, 2, 2)},
                                     {"label": torch.ones(1, 2, 2, 2)}, 0)
    callback.on_validation_epoch_end(trainer, module)
    assert module.postprocessing == "untouched"
    with pytest.raises(ValueError, match="callbacks.postprocessing.connectivity"):
        PostprocessingSelector(connectivity=8)
    with pytest.raises(ValueError, match="callbacks.postprocessing.min_gain"):
        PostprocessingSelector(min_gain=-0.1)
