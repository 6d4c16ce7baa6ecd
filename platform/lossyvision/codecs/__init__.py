"""Codecs, looked up by name: ``create_codec("jpegxl", effort=7)``. One file per codec."""

from lossyvision.codecs.base import CODECS, DEFAULT_CODEC, Codec, create_codec
from lossyvision.registry import import_submodules

import_submodules(__name__, __path__)

__all__ = ["CODECS", "DEFAULT_CODEC", "Codec", "create_codec"]
