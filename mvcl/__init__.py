"""mvcl: multi-view contrastive learning in JAX.

``mvcl.losses`` (the loss functions and their registry), ``mvcl.backends`` (the row-reduction
backends), ``mvcl.parallel`` (meshes, sharded losses, multi-host start-up) and ``mvcl.metrics``
(embedding geometry) are imported with the package and need only JAX and NumPy
(``pip install mvcl``). ``mvcl.data``, ``mvcl.models``, ``mvcl.evaluation``, ``mvcl.train``,
``mvcl.studies`` and ``mvcl.configs`` need the training stack (``pip install 'mvcl[train]'``:
flax, optax, orbax, tensorflow-datasets, ...) and are imported on demand.
"""

from types import ModuleType

from mvcl import _checkout, _deprecation, backends, losses, metrics, parallel

_deprecation.install()  # the module names of earlier releases (mvcl.kernels, ...), with a warning
_checkout.install()  # a source checkout used as is: mvcl.configs is its top-level configs/

__version__ = "0.1.0"
__all__ = ["backends", "losses", "metrics", "parallel"]


def __getattr__(name: str) -> ModuleType:
    # mvcl.kernels, the former name of mvcl.backends: importing it warns.
    if name == "kernels":
        return _deprecation.import_moved(f"{__name__}.kernels")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
