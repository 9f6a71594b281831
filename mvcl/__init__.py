"""mvcl: multi-view contrastive learning in JAX."""

from mvcl import kernels, losses

__version__ = "0.1.0"
__all__ = ["kernels", "losses"]
