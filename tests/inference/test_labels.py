"""class_labels: the argmax, training's post-processing, then predict's largest component."""

import numpy as np
import torch
from scipy import ndimage

from volseg.inference.labels import class_labels


def _probabilities(labels: np.ndarray, classes: int = 3) -> torch.Tensor:
    noise = torch.rand(classes, *labels.shape) * 0.1
    return noise + torch.nn.functional.one_hot(torch.from_numpy(labels).long(),
                                               classes).permute(3, 0, 1, 2)


def test_the_argmax_as_uint8():
    labels = np.random.default_rng(0).integers(0, 3, (7, 6, 5))
    got = class_labels(_probabilities(labels))
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, labels)


def test_postprocessing_then_the_largest_component_option():
    labels = np.zeros((12, 12, 12), np.int64)
    labels[1:5, 1:5, 1:5] = 1
    labels[8:10, 8:10, 8:10] = 1          # a second, smaller organ component
    labels[2, 2, 2] = 2                   # a lesion inside the organ
    labels[6, 6, 6] = 2                   # an isolated lesion voxel
    probabilities = _probabilities(labels)
    choice = {"largest_foreground": True, "largest_component": [], "connectivity": 26}
    got = class_labels(probabilities, choice)
    # The reference, with scipy: the largest foreground component only.
    components, _ = ndimage.label(labels > 0, np.ones((3, 3, 3)))
    largest = np.bincount(components.ravel())[1:].argmax() + 1
    np.testing.assert_array_equal(got, np.where(components == largest, labels, 0))
    # No choice, class 1 cleaned by the option: the isolated lesion stays, the small organ goes.
    kept = class_labels(probabilities, None, keep_largest=[1])
    assert kept[6, 6, 6] == 2 and kept[9, 9, 9] == 0 and kept[2, 2, 2] == 2
