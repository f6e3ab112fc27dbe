"""fnlab: false-negative-aware deep learning for pneumonia detection, as a course kit.

The package is layered: a module imports only from its own layer and the layers below it
(docs/ARCHITECTURE.md draws them; tests/test_layers.py checks every import)::

    base -> data -> measuring -> figures -> models -> training -> run store
         -> analyses -> lesson face (fnlab.lab) -> course machinery -> command line

Example
-------
>>> import fnlab
>>> fnlab.__version__ >= "0.1"
True
"""

__version__ = "0.3.0"

__all__ = ["__version__"]
