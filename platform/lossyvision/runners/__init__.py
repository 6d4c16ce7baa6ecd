"""The thin Ray layer. Only the modules in this folder import ``ray``: when Ray's API moves, this
folder changes and nothing else does. Each runner schedules plain functions from the rest of
the package (compress one image, fit one model, evaluate one grid cell)."""
