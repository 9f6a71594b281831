"""``python experiments/pretrain.py``, the command line of earlier releases: it runs
``mvcl-pretrain`` (`mvcl.pretrain`) after a FutureWarning; it will be removed in 0.2.0."""

from mvcl import _deprecation
from mvcl.pretrain import run

if __name__ == "__main__":
    _deprecation.warn_old_command("python experiments/pretrain.py", "mvcl-pretrain")
    run()
