"""Run machinery: what turns a composed config into a reproducible run.

:mod:`.builders` (data, model and method from a config), :mod:`.validation` (every group checked
before data or steps), :mod:`.trainer` (the Lightning Trainer), :mod:`.distributed` (Hydra-safe
DDP), :mod:`.callbacks`, :mod:`.loggers` and :mod:`.checkpoints` (the checkpoint format, and
loading parts of other runs). The run's record, ``results.json``, is :mod:`robustlab.results`.

Layers: :mod:`.checkpoints` depends on :mod:`robustlab.models` only, so methods can load modules
of other runs (teachers, generators) through it; :mod:`.builders` and :mod:`.validation` sit on
top of the methods, data and suites they assemble.
"""
