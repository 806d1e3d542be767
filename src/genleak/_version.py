"""genleak's version, in a module of the bottom layer: what records it (``results``) imports it from here,
not from the package root that contains every layer."""

__version__ = "0.1.0"
