"""``python experiments/sweep.py`` still works: it runs ``mvcl-sweep`` (`mvcl.sweep`)."""

from mvcl.sweep import run

if __name__ == "__main__":
    run()
