"""The sweep file's schema and reader, in parts; :mod:`lossyvision.spec` is their one public face."""
