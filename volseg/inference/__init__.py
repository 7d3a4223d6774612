"""Whole-volume inference: a trained network, its sliding window, its labels and their files.

Imports only `volseg.data` and `volseg.io` (never the engine): the engine builds the
`TrainedNetwork`s from checkpoints and hands them over.
"""

from volseg.inference.sliding_window import sliding_window_inference

__all__ = ["sliding_window_inference"]
