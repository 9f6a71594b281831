"""``python experiments/sweep.py``, the command line of earlier releases: it runs ``mvcl-sweep``
(`mvcl.sweep`) after a FutureWarning; it will be removed in 0.2.0."""

from mvcl import _deprecation
from mvcl.sweep import run

if __name__ == "__main__":
    _deprecation.warn_old_command("python experiments/sweep.py", "mvcl-sweep")
    run()
