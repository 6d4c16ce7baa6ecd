"""Dataset readers, looked up by name: ``create_dataset("food101", root)``. One file per layout."""

from lossyvision.datasets.base import DATASETS, DatasetReader, Record, create_dataset
from lossyvision.registry import import_submodules

import_submodules(__name__, __path__)

__all__ = ["DATASETS", "DatasetReader", "Record", "create_dataset"]
