"""AutoAttack (Croce & Hein, ICML 2020): the standard ensemble for reporting robust accuracy.

We wrap an existing implementation rather than re-implement it. The backend is always chosen
explicitly (``suite.autoattack.backend``) and recorded with its version in results.json:

- ``"reference"`` — the authors' code, packaged on PyPI as ``pyautoattack``
  (``pip install "robustlab[autoattack]"``); attacks, settings and the automatic checks of the
  reference implementation (github.com/fra31/auto-attack).
- ``"torchattacks"`` — ``torchattacks`` components assembled here to match the reference
  "standard" / "plus" / "rand" settings as closely as torchattacks allows (see :func:`autoattack`);
  ``pip install torchattacks`` (its pins downgrade requests/urllib3, hence not a robustlab extra).

Standard version (reference): APGD-CE (100 iterations, 1 restart, ρ = 0.75) → APGD-T (targeted
DLR, 100 iterations, 9 target classes) → FAB-T (100 iterations, 9 target classes) → Square
(5000 queries, p_init = 0.8), each run only on the points still classified correctly.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.attacks.gradients import as_autograd_tensor, gradient_context
from robustlab.attacks.norms import check_eps, check_norm
from robustlab.errors import ConfigError, check

log = logging.getLogger(__name__)

VERSIONS: tuple[str, ...] = ("standard", "plus", "rand")
#: backend name -> (module imported, distribution on PyPI, pip command that installs it)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "reference": ("pyautoattack", "pyautoattack", 'pip install "robustlab[autoattack]"'),
    "torchattacks": ("torchattacks", "torchattacks", "pip install torchattacks"),
}
_NORM_NAMES = {"linf": "Linf", "l2": "L2"}
N_TARGET_CLASSES = 9  # reference APGD-T / FAB-T target count (torchattacks would use K − 1)
STEPS = 100  # reference APGD / FAB iterations (torchattacks defaults to 10)
SQUARE_QUERIES = 5000


def check_version(version: str) -> str:
    """Validate an AutoAttack version name."""
    check(
        version in VERSIONS,
        f"AutoAttack version must be one of {list(VERSIONS)}, got {version!r}",
    )
    return version


def check_backend(backend: str) -> str:
    """Validate an AutoAttack backend name and that it is installed (ConfigError otherwise)."""
    check(
        backend in BACKENDS,
        f"AutoAttack backend must be one of {list(BACKENDS)} (reference = the authors' code, "
        f"pyautoattack), got {backend!r}",
    )
    module, _, install = BACKENDS[backend]
    try:
        importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"AutoAttack backend {backend!r} needs the {module!r} package: {install}"
        ) from None
    return backend


def backend_provenance(backend: str) -> dict[str, str]:
    """What ran: ``{"backend": ..., "package": ..., "package_version": ...}`` for results.json."""
    check_backend(backend)
    _, distribution, _ = BACKENDS[backend]
    try:
        version = metadata.version(distribution)
    except metadata.PackageNotFoundError:  # importable but not installed as a distribution
        version = str(getattr(importlib.import_module(BACKENDS[backend][0]), "__version__", "?"))
    return {"backend": backend, "package": distribution, "package_version": version}


@dataclass(frozen=True)
class _Settings:
    """What either backend runs with (validated by :func:`autoattack`)."""

    norm: str
    eps: float
    version: str
    seed: int
    batch_size: int
    verbose: bool


def _run_reference(model: nn.Module, x: Tensor, y: Tensor, s: _Settings) -> Tensor:
    from pyautoattack import AutoAttack  # type: ignore[import-not-found]

    adversary = AutoAttack(
        model, norm=_NORM_NAMES[s.norm], eps=s.eps, version=s.version, seed=s.seed, device=x.device
    )
    adversary.verbose = s.verbose
    out = adversary.run_standard_evaluation(x, y, batch_size=s.batch_size)
    return out[0] if isinstance(out, tuple) else out


def _torchattacks_parts(model: nn.Module, s: _Settings, n_classes: int) -> list[tuple[str, Any]]:
    """torchattacks components with the reference settings of ``s.version`` (``_set_version``)."""
    import torchattacks as ta

    n_targets = max(1, min(N_TARGET_CLASSES, n_classes - 1))
    common = dict(norm=_NORM_NAMES[s.norm], eps=s.eps, seed=s.seed, verbose=False)

    def apgd(loss: str, restarts: int, eot: int = 1) -> Any:
        return ta.APGD(
            model, steps=STEPS, n_restarts=restarts, loss=loss, eot_iter=eot, rho=0.75, **common
        )

    def apgd_t() -> Any:
        attack = ta.APGDT(model, steps=STEPS, n_restarts=1, rho=0.75, n_classes=n_classes, **common)
        attack.n_target_classes = n_targets
        return attack

    def fab(targeted: bool, restarts: int) -> Any:
        attack = ta.FAB(
            model,
            steps=STEPS,
            n_restarts=restarts,
            multi_targeted=targeted,
            n_classes=n_classes,
            alpha_max=0.1,
            eta=1.05,
            beta=0.9,
            **common,
        )
        attack.n_target_classes = n_targets
        return attack

    def square() -> Any:
        return ta.Square(
            model,
            n_queries=SQUARE_QUERIES,
            n_restarts=1,
            p_init=0.8,
            loss="margin",
            resc_schedule=False,
            **common,
        )

    if s.version == "standard":
        return [
            ("apgd-ce", apgd("ce", 1)),
            ("apgd-t", apgd_t()),
            ("fab-t", fab(True, 1)),
            ("square", square()),
        ]
    if s.version == "plus":
        return [
            ("apgd-ce", apgd("ce", 5)),
            ("apgd-dlr", apgd("dlr", 5)),
            ("fab", fab(False, 5)),
            ("square", square()),
            ("apgd-t", apgd_t()),
            ("fab-t", fab(True, 1)),
        ]
    return [("apgd-ce", apgd("ce", 1, eot=20)), ("apgd-dlr", apgd("dlr", 1, eot=20))]


def _predict(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(chunk).argmax(1) for chunk in x.split(batch_size)])


def _run_torchattacks(model: nn.Module, x: Tensor, y: Tensor, s: _Settings) -> Tensor:
    with torch.no_grad():
        n_classes = int(model(x[:1]).shape[1])
    check(n_classes >= 2, f"AutoAttack needs a classifier with >= 2 logits, got {n_classes}")
    parts = _torchattacks_parts(model, s, n_classes)
    training = model.training
    for _, attack in parts:  # torchattacks forces eval mode by default; keep the caller's mode
        attack.set_model_training_mode(
            model_training=training, batchnorm_training=training, dropout_training=training
        )
    x_adv = x.clone()
    robust = _predict(model, x, s.batch_size).eq(y)
    level = logging.INFO if s.verbose else logging.DEBUG
    log.log(level, "AutoAttack (torchattacks) clean accuracy: %.2f%%", 100 * robust.float().mean())
    for name, attack in parts:
        idx = robust.nonzero().flatten()
        if idx.numel() == 0:
            break
        for chunk in idx.split(s.batch_size):
            adv = attack(x[chunk], y[chunk])
            fooled = _predict(model, adv, s.batch_size).ne(y[chunk])
            x_adv[chunk[fooled]] = adv[fooled].to(x_adv.dtype)
            robust[chunk[fooled]] = False
        acc = 100 * robust.float().mean()
        log.log(level, "robust accuracy after %s: %.2f%%", name.upper(), acc)
    return x_adv


_RUNNERS: dict[str, Callable[..., Tensor]] = {
    "reference": _run_reference,
    "torchattacks": _run_torchattacks,
}


def autoattack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    version: str = "standard",
    seed: int = 0,
    batch_size: int = 250,
    backend: str = "reference",
    verbose: bool = False,
) -> Tensor:
    """AutoAttack adversarial examples for ``(x, y)`` (Croce & Hein 2020); robust accuracy is
    the accuracy of ``model`` on the result.

    ``x`` is in [0, 1] (B, C, H, W); ``norm`` is ``"linf"`` or ``"l2"``; ``version`` is
    ``"standard"`` (report this), ``"plus"`` or ``"rand"`` (randomised defences, EOT 20). The
    model's train/eval mode is not changed (evaluate in eval mode). The wrapped code reseeds
    torch's global RNG with ``seed``; the caller's RNG state is saved and restored around it.
    ``eps=0`` returns ``x`` unchanged.

    Backend ``"torchattacks"`` differences from the reference (documented, not hidden):

    - APGD, APGD-T and FAB run 100 iterations (reference) instead of torchattacks' default 10;
      APGD-T and FAB-T use 9 target classes (reference) instead of torchattacks' K − 1 (which
      differs for K ≠ 10); Square uses 5000 queries, p_init 0.8 and no rescaled schedule
      (``resc_schedule=False`` as in the reference; torchattacks defaults to True).
    - The components are torchattacks' ports of the 2020 reference code; later reference fixes
      (and its automatic checks for randomness, logit range and class count — the
      ``checks`` module, "flags" in RobustBench) are not run, so numbers can differ slightly.
    - The cascade (each attack only on still-robust points, batches of ``batch_size``) is ours
      and mirrors the reference ``run_standard_evaluation``.
    - L1 is not supported here (the reference supports it).

    Raises:
        ConfigError: invalid eps, norm, version or backend, or the backend is not installed
            (the message names the pip command).
    """
    norm = check_norm(norm)
    eps = check_eps(eps)
    check_version(version)
    check(int(batch_size) >= 1, f"AutoAttack batch_size must be >= 1, got {batch_size!r}")
    check_backend(backend)
    if eps == 0 or x.shape[0] == 0:
        return x.detach().clone()
    devices = [x.device] if x.is_cuda else []
    with torch.random.fork_rng(devices=devices), gradient_context():
        x_in, y_in = as_autograd_tensor(x), as_autograd_tensor(y)
        settings = _Settings(norm, eps, version, int(seed), int(batch_size), bool(verbose))
        x_adv = _RUNNERS[backend](model, x_in, y_in, settings)
    return x_adv.detach().to(dtype=x.dtype, device=x.device)
