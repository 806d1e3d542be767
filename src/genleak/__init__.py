"""genleak: measure and reduce training-data leakage of generative image models.

The flow is split -> target -> attack -> scores -> evaluation -> report; see ARCHITECTURE.md.
Heavy imports (torch, diffusers) happen in the submodules, so ``import genleak`` stays light.
"""

from genleak._version import __version__

__all__ = ["__version__"]
