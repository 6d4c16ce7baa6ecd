"""Codecs, looked up by name: ``create_codec("jpegxl", effort=7)``. One file per codec."""

from lossyvision.codecs.base import CODECS, Codec, create_codec
from lossyvision.registry import import_submodules

import_submodules(__name__, __path__)

__all__ = ["CODECS", "Codec", "create_codec"]
