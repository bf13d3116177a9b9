"""robustlab: train, stress-test and compare vision models for robustness.

Methods are LightningModules, datasets and evaluation suites are LightningDataModules, and
everything composes through Hydra config groups (see ``conf/``).
"""

__version__ = "0.1.0"
