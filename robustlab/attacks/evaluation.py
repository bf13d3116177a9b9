"""The sanity checks users trust on a grid of robust accuracies (RobustBench / AutoAttack habits).

Robust accuracy is ``mean_i 1[argmax f(A(x_i, y_i)) = y_i]`` for an attack A (the attack suites
measure it, :mod:`robustlab.suites.attacks`). Checks on a grid of results: robust ≤ clean
accuracy, and accuracy never rises with a larger ε or more steps (if it does, the attack is too
weak or the gradients are masked — Athalye et al., ICML 2018).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def _record(item: Any) -> tuple[float, float, float]:
    if isinstance(item, Mapping):
        acc = item["acc"] if "acc" in item else item["value"]
        return float(item["eps"]), float(item.get("steps", 0) or 0), float(acc)
    eps, steps, acc = item
    return float(eps), float(steps or 0), float(acc)


def sanity_flags(
    records: Iterable[Any], *, clean: float | None = None, tol: float = 1e-9
) -> list[str]:
    """Human-readable violations in a list of ``(eps, steps, acc)`` results (empty if none).

    Records may also be mappings with keys ``eps``, ``steps`` and ``acc`` (or ``value``);
    records with ``eps == 0`` count as clean accuracy unless ``clean`` is given. Checks:
    accuracies in [0, 1]; robust ≤ clean; non-increasing in ε at fixed steps; non-increasing
    in steps at fixed ε. ``tol`` is the allowed increase (e.g. 1/n for a noisy attack).
    """
    rows = sorted(_record(r) for r in records)
    flags: list[str] = []
    for eps, steps, acc in rows:
        if not 0.0 <= acc <= 1.0:
            flags.append(f"accuracy {acc:g} at eps={eps:g}, steps={steps:g} is outside [0, 1]")
    clean_accs = [acc for eps, _, acc in rows if eps == 0]
    if clean is None and clean_accs:
        clean = max(clean_accs)
    if clean is not None:
        for eps, steps, acc in rows:
            if eps > 0 and acc > clean + tol:
                flags.append(
                    f"robust accuracy {acc:.4f} at eps={eps:g}, steps={steps:g} exceeds clean "
                    f"accuracy {clean:.4f}: the attack is broken or the evaluation mixes models"
                )
    for key_index, other, what in ((1, 0, "eps"), (0, 1, "steps")):
        groups: dict[float, list[tuple[float, float]]] = {}
        for row in rows:
            if row[0] > 0:
                groups.setdefault(row[key_index], []).append((row[other], row[2]))
        for fixed, series in groups.items():
            series.sort()
            for (v0, a0), (v1, a1) in zip(series, series[1:], strict=False):
                if v1 > v0 and a1 > a0 + tol:
                    fixed_name = "steps" if what == "eps" else "eps"
                    flags.append(
                        f"accuracy rises from {a0:.4f} to {a1:.4f} when {what} grows from {v0:g} "
                        f"to {v1:g} ({fixed_name}={fixed:g}): a stronger attack must not help; "
                        "suspect gradient masking, too few steps or a too-large step size"
                    )
    return flags
