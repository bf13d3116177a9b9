"""Stability training (Zheng, Song, Leung & Goodfellow, CVPR 2016, arXiv 1604.04326).

``L(x, x') = L0(x) + α · Lstab(x, x')`` where x' is a perturbed copy of x (by default
x + ε, ε ~ N(0, σ²) per pixel, a fresh draw per example and step). Only the clean x carries
the task loss L0. Classification: ``Lstab = KL(P(y|x) ‖ P(y|x'))`` with the clean prediction
as the target. Embeddings: ``Lstab = ‖f(x) − f(x')‖₂`` and L0 adds a triplet ranking loss.

x' and the classification KL come from :class:`~robustlab.methods.terms.StabilityTerm`, the
same object ``method.terms.stability`` adds to any other method; this class adds what a
composed term cannot: one joint forward of [x; x'] (``joint_forward``) and the embedding task.
With ``joint_forward=false`` and ``task=classification`` it equals ``method=erm`` with
``method.terms.stability`` of the same options.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.errors import check
from robustlab.losses import embedding_stability, random_triplets, triplet_ranking_loss
from robustlab.methods.erm import ERM, TrainingOutput
from robustlab.methods.terms import PERTURBATIONS, STABILITY, StabilityTerm

__all__ = ["PERTURBATIONS", "TASKS", "StabilityTraining"]

TASKS = ("classification", "embedding")


class StabilityTraining(ERM):
    """ERM plus the stability loss of Zheng et al. (2016): ``L0(x) + α · Lstab(x, x')``.

    Args (beyond :class:`ERM`'s):
        alpha, sigma, perturbation, levels, mix, clip, detach_clean: the stability term's
            options, documented (and defaulted, :data:`~robustlab.methods.terms.STABILITY`)
            once by :class:`~robustlab.methods.terms.StabilityTerm`.
        joint_forward: run clean and perturbed images as ONE concatenated batch (default).
            BatchNorm then normalises both halves with the same batch statistics (computed
            on the clean+perturbed mix, and its running averages track that mix), so the two
            branches differ only by the input perturbation; ``false`` uses two forwards, each
            normalised by its own batch (which hides e.g. a global shift of x' from Lstab) and
            updates running statistics twice per step.
        task: ``classification`` (KL stability) or ``embedding`` (L2 stability on an
            L2-normalised embedding, plus a triplet ranking loss; the classifier keeps its
            cross-entropy so test accuracy stays meaningful).
        embedding_dim: size of the linear embedding head on the penultimate features (null:
            the L2-normalised penultimate features themselves, i.e. exactly what the
            ``near_duplicate`` / ``similar_ranking`` suites score).
        margin: m of the triplet hinge max(0, m + d(a, p) − d(a, n)).
        triplet_weight: weight of the triplet ranking loss in L0 (embedding task).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        alpha: float = STABILITY.alpha,
        sigma: float = STABILITY.sigma,
        perturbation: str = STABILITY.perturbation,
        levels: Mapping[str, Sequence[float]] | None = STABILITY.levels,
        mix: Sequence[str] = STABILITY.mix,
        clip: bool = STABILITY.clip,
        detach_clean: bool = STABILITY.detach_clean,
        joint_forward: bool = True,
        task: str = "classification",
        embedding_dim: int | None = 64,
        margin: float = 0.2,
        triplet_weight: float = 1.0,
        **erm: Any,
    ):
        stability = StabilityTerm(
            alpha, sigma, perturbation, levels, mix, clip, detach_clean, where="method"
        )
        check(task in TASKS, f"method.task={task!r} is unknown; valid: {', '.join(TASKS)}")
        check(margin >= 0, f"method.margin must be >= 0, got {margin}")
        check(triplet_weight >= 0, f"method.triplet_weight must be >= 0, got {triplet_weight}")
        check(
            embedding_dim is None or (isinstance(embedding_dim, int) and embedding_dim > 0),
            f"method.embedding_dim must be a positive integer or null, got {embedding_dim!r}",
        )
        check(
            "stability" not in (erm.get("terms") or {}),
            "method=stability already has the stability term: set method.alpha / method.sigma "
            "instead of method.terms.stability",
        )
        super().__init__(model, **erm)
        self.stability = stability
        self.joint_forward = bool(joint_forward)
        self.task, self.margin = task, float(margin)
        self.triplet_weight = float(triplet_weight)
        self.embedding_head = (
            nn.Linear(model.feature_dim, embedding_dim)
            if task == "embedding" and embedding_dim
            else None
        )

    # ----------------------------------------------------------------- pieces
    @property
    def alpha(self) -> float:
        """α, the weight of the stability loss."""
        return self.stability.weight

    def perturb(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x' for the stability loss (a fresh draw per example)."""
        return self.stability.perturb(x, generator)

    def paired_features(self, x: Tensor, x_perturbed: Tensor) -> tuple[Tensor, Tensor]:
        """Penultimate features of x and x' (one concatenated forward when ``joint_forward``)."""
        if self.joint_forward:
            return self.model.features(torch.cat([x, x_perturbed])).chunk(2)
        return self.model.features(x), self.model.features(x_perturbed)

    def embed(self, features: Tensor) -> Tensor:
        """L2-normalised embedding f(x) (through the head when there is one)."""
        if self.embedding_head is not None:
            features = self.embedding_head(features)
        return F.normalize(features, dim=1)

    # ----------------------------------------------------------------- the objective
    def training_loss(self, x: Tensor, y: Tensor) -> TrainingOutput:
        feats, feats_p = self.paired_features(x, self.perturb(x))
        logits = self.model.classifier(feats)
        task = self.task_loss(logits, y)
        logs: dict[str, Tensor] = {"task_loss": task.detach()}
        if self.task == "classification":
            stab = self.stability.penalty(logits, self.model.classifier(feats_p))
            loss = task + self.alpha * stab
        else:
            emb, emb_p = self.embed(feats), self.embed(feats_p)
            a, p, n = random_triplets(y)
            ranking = (
                triplet_ranking_loss(emb[a], emb[p], emb[n], self.margin)
                if a.numel()
                else emb.sum() * 0
            )
            target = emb.detach() if self.stability.detach_clean else emb
            stab = embedding_stability(target, emb_p)
            loss = task + self.triplet_weight * ranking + self.alpha * stab
            logs["triplet_loss"] = ranking.detach()
        logs["stab_loss"] = stab.detach()
        return TrainingOutput(loss, logits, logs)
