"""ImageNet-P style perturbation sequences (Hendrycks & Dietterich, ICLR 2019) as a suite:
flip probability = P(top-1 prediction changes between consecutive frames) per sequence kind."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from robustlab.errors import check
from robustlab.perturbations.sequences import (
    DEFAULT_STEPS,
    FLIP_REFERENCE,
    SEQUENCES,
    flip_probability,
    make_sequence,
)
from robustlab.registry import check_known
from robustlab.suites.base import Case, Condition, EvaluationSuite, Stats


class PerturbationSequenceSuite(EvaluationSuite):
    """Flip probability of the model's prediction along each kind of perturbation sequence.

    The level of a condition is the per-frame step; noise sequences compare every frame
    with the clean first frame, the others compare consecutive frames (``FLIP_REFERENCE``).
    """

    name = "perturbation_sequences"

    def __init__(
        self,
        base,
        *,
        kinds: Sequence[str] | None = None,
        frames: int = 10,
        steps: Mapping[str, float] | None = None,
        **common: Any,
    ):
        super().__init__(base, **common)
        kinds = list(kinds or SEQUENCES)
        check_known(kinds, SEQUENCES, group="kind(s)", where="suite.perturbation_sequences")
        check(frames >= 2, f"suite.perturbation_sequences.frames must be >= 2, got {frames}")
        self.frames = int(frames)
        step = {**DEFAULT_STEPS, **dict(steps or {})}
        self.conditions = [Condition(kind, step[kind]) for kind in kinds]

    def measure(self, case: Case) -> Stats:
        kind, step = case.condition.name, case.condition.level
        sequence = make_sequence(case.x, kind, self.frames, step, generator=case.random)
        with torch.no_grad():
            predictions = case.model(sequence.flatten(0, 1)).argmax(1).view(self.frames, -1)
        pairs = torch.tensor(float((self.frames - 1) * case.y.numel()), device=case.x.device)
        flips = flip_probability(predictions, FLIP_REFERENCE[kind]) * pairs
        return {"flip_prob": (flips, pairs)}
