"""Robust accuracy and the sanity checks users trust (RobustBench / AutoAttack habits).

Robust accuracy is ``mean_i 1[argmax f(A(x_i, y_i)) = y_i]`` for an attack A. Sanity checks on a
grid of results: robust ≤ clean accuracy, and accuracy never rises with a larger ε or more steps
(if it does, the attack is too weak or the gradients are masked — Athalye et al., ICML 2018).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.errors import check
from robustlab.perturbations.imageops import from_uint8

AttackFn = Callable[..., Tensor]
Batches = Iterable[Sequence[Tensor]] | tuple[Tensor, Tensor]


def _model_device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _batches(data: Batches, batch_size: int) -> Iterable[Sequence[Tensor]]:
    """Batches of ``(x, y)`` from a loader / iterable of batches or a pair of tensors."""
    if (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, Tensor) for t in data)
    ):
        x, y = data
        check(len(x) == len(y), f"images and labels differ in length: {len(x)} vs {len(y)}")
        return zip(x.split(batch_size), y.split(batch_size), strict=True)
    return data


def _accepts_generator(attack: AttackFn) -> bool:
    try:
        return "generator" in inspect.signature(attack).parameters
    except (TypeError, ValueError):
        return False


def robust_accuracy(
    model: nn.Module,
    data: Batches,
    attack: AttackFn | None,
    device: torch.device | str | None = None,
    *,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
) -> float:
    """Fraction of examples still classified correctly after ``attack(model, x, y)``.

    ``data`` is a DataLoader (or any iterable of ``(x, y, ...)`` batches) or a pair of tensors
    ``(x, y)``; uint8 images are scaled to [0, 1]. ``attack=None`` gives clean accuracy.
    Batches go to ``device`` (default: the model's device). The model's mode is not changed:
    call ``model.eval()`` first for the usual protocol.
    """
    device = torch.device(device) if device is not None else _model_device(model)
    pass_generator = attack is not None and generator is not None and _accepts_generator(attack)
    correct = total = 0
    for batch in _batches(data, batch_size):
        x, y = batch[0].to(device), batch[1].to(device)
        if not x.is_floating_point():
            x = from_uint8(x)
        if attack is not None:
            x = attack(model, x, y, generator=generator) if pass_generator else attack(model, x, y)
        with torch.no_grad():
            correct += int(model(x).argmax(dim=1).eq(y).sum())
        total += int(y.numel())
    check(total > 0, "robust_accuracy got no examples; check the data loader / tensors")
    return correct / total


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
