"""``python -m genleak.cli``: the ``genleak`` command (used where the console script may be missing)."""

from genleak.cli import main

main()
