"""``python experiments/evaluate.py`` still works: it runs ``mvcl-evaluate`` (`mvcl.evaluate`)."""

from mvcl.evaluate import run

if __name__ == "__main__":
    run()
