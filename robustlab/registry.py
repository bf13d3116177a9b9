"""Name → implementation look-up shared by the model, data, method and suite registries.

A name is either a key of the registry or a dotted import path (``pkg.module.Name`` or
``pkg.module:Name``) so users can plug their own classes into any config group.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from robustlab.errors import ConfigError


def resolve(registry: Mapping[str, Any], name: str, *, group: str) -> Any:
    """``registry[name]``, or the object at import path ``name``; a clear error otherwise."""
    if name in registry:
        return registry[name]
    if "." in name or ":" in name:
        module_name, _, attr = name.replace(":", ".").rpartition(".")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ConfigError(
                f"{group}={name!r}: cannot import {attr!r} from {module_name!r} ({err})"
            ) from None
    raise ConfigError(
        f"unknown {group} {name!r}; valid choices: {', '.join(sorted(registry))} "
        f"(or a dotted import path to your own)"
    )


def accepted_keywords(factory: Callable) -> list[str] | None:
    """Keyword names ``factory`` accepts, or None when it takes ``**kwargs``."""
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def construct(factory: Callable, where: str, /, **kwargs: Any) -> Any:
    """Call ``factory(**kwargs)``, turning unknown keywords into a :class:`ConfigError`."""
    accepted = accepted_keywords(factory)
    if accepted is not None:
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ConfigError(f"{where} does not take {unknown}; accepted keys: {sorted(accepted)}")
    return factory(**kwargs)
