"""``python experiments/evaluate.py``, the command line of earlier releases: it runs
``mvcl-evaluate`` (`mvcl.evaluate`) after a FutureWarning; it will be removed in 0.2.0."""

from mvcl import _deprecation
from mvcl.evaluate import run

if __name__ == "__main__":
    _deprecation.warn_old_command("python experiments/evaluate.py", "mvcl-evaluate")
    run()
