"""Hydra configs shipped with robustlab (``pkg://robustlab.conf``)."""
