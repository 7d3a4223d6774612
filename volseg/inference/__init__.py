"""Whole-volume inference: sliding-window prediction."""

from volseg.inference.sliding_window import sliding_window_inference

__all__ = ["sliding_window_inference"]
