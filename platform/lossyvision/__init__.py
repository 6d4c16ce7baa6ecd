"""lossyvision: how far can you lossily compress image data before vision models notice?

The package is a set of plain functions and small classes (codecs, datasets, tasks, metrics,
aggregation) with a thin Ray layer in ``lossyvision.runners`` and MLflow confined to
``lossyvision.sweep.tracking``. Importing it has no side effects beyond filling registries.
"""

__version__ = "0.1.0"
