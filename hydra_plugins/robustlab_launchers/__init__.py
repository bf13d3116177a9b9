"""Hydra launcher plugins shipped with robustlab (see :mod:`.slurm`)."""
