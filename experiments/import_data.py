"""``python experiments/import_data.py``, the command line of earlier releases: it runs
``mvcl-import`` (`mvcl.import_data`) after a FutureWarning; it will be removed in 0.2.0."""

from mvcl import _deprecation
from mvcl.import_data import run

if __name__ == "__main__":
    _deprecation.warn_old_command("python experiments/import_data.py", "mvcl-import")
    run()
