"""``python experiments/pretrain.py`` still works: it runs ``mvcl-pretrain`` (`mvcl.pretrain`)."""

from mvcl.pretrain import run

if __name__ == "__main__":
    run()
