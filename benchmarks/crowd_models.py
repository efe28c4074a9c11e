"""The simulated-annotator models now live in :mod:`fusion.crowd_models` (``medcrowd evaluate``
uses them too); this module keeps ``from crowd_models import …`` working in the benchmarks."""

from fusion.crowd_models import ANNOTATOR_MODELS, AnnotatorModel, BoolArray, simulate_crowd

__all__ = ["ANNOTATOR_MODELS", "AnnotatorModel", "BoolArray", "simulate_crowd"]
