"""medcrowd's app layer: the ``medcrowd`` CLI, the Label Studio SDK client and image I/O.

Engines live in their own packages (``ml_backend``, ``fusion``, ``gan``, ``segmenter``);
this package wires them to Label Studio.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
