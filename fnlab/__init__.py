"""fnlab: false-negative-aware deep learning for pneumonia detection, as a course kit.

The package is layered (lower layers never import higher ones)::

    config -> data -> predictions -> metrics/thresholds/ensemble
           -> models/losses -> train -> runs -> explain/robustness
           -> plots -> widgets -> report -> course/classroom -> cli

Example
-------
>>> import fnlab
>>> fnlab.__version__ >= "0.1"
True
"""

__version__ = "0.3.0"

__all__ = ["__version__"]
