"""Experiment configs: one ``get_config(arg)`` file per data set (see ``configs/common.py``)."""
