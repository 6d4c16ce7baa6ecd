"""The bodies of the ``lossyvision`` commands, one module per command or group; ``cli.py`` holds their signatures.

``cli.py`` imports each module inside its command, so ``lossyvision --help`` loads none of what they import.
"""
