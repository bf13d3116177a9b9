"""Image perturbations, batched on the device and seeded per image (:mod:`robustlab.randomness`).

:mod:`.imageops` (low-level batched operations), :mod:`.corruptions` (common corruptions,
Hendrycks & Dietterich 2019), :mod:`.distortions` (stability distortions, Zheng et al. 2016) and
:mod:`.sequences` (ImageNet-P style perturbation sequences).
"""
