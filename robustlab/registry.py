"""Name → implementation look-up shared by the model, data, method and suite registries.

A name is either a key of the registry or an import path (``pkg.module:Name`` or
``pkg.module.Name``) so users can plug their own classes into any config group. Keyword
arguments from config are checked against the signature before the call, so a typo'd key
is a clear :class:`~robustlab.errors.ConfigError`, not a ``TypeError`` traceback.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from robustlab.errors import ConfigError

_KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def import_object(path: str, *, group: str) -> Any:
    """The object at ``pkg.module:attr`` (or ``pkg.module.attr``; ``attr`` may be dotted)."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"{group}={path!r} is malformed; write 'package.module:name'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"{group}={path!r}: cannot import module {module_name!r} ({err}); check the path "
            "and that the package is installed"
        ) from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"{group}={path!r}: module {module_name!r} has no {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"{group}={path!r} is not callable; point it at a class or factory")
    return target


def resolve(registry: Mapping[str, Any], name: str, *, group: str) -> Any:
    """``registry[name]``, or the object at import path ``name``; a clear error otherwise."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{group} name must be a non-empty string, got {name!r}")
    if name in registry:
        return registry[name]
    if ":" in name or "." in name:
        return import_object(name, group=group)
    raise ConfigError(
        f"unknown {group} {name!r}; valid choices: {', '.join(sorted(registry))} "
        "(or an import path 'package.module:name' to your own)"
    )


def _signature_parameters(factory: Callable) -> list[inspect.Parameter] | None:
    """Parameters of ``factory``; for a class, of ``__init__`` along the MRO while each level
    forwards ``**kwargs`` to its base. None when unknowable or open-ended."""
    functions = (
        [vars(k)["__init__"] for k in factory.__mro__ if "__init__" in vars(k)]
        if inspect.isclass(factory)
        else [factory]
    )
    collected: list[inspect.Parameter] = []
    for function in functions:
        try:
            params = list(inspect.signature(function).parameters.values())
        except (TypeError, ValueError):
            return None
        collected += [p for p in params if p.kind in _KEYWORD_KINDS and p.name != "self"]
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return collected
        if not inspect.isclass(factory):
            return None
    return None


def accepted_keywords(factory: Callable) -> list[str] | None:
    """Keyword names ``factory`` accepts (following ``**kwargs`` to base classes), or None
    when it takes arbitrary keywords."""
    params = _signature_parameters(factory)
    if params is None:
        return None
    return list(dict.fromkeys(p.name for p in params))


def construct(
    factory: Callable, where: str, /, *, provided: tuple[str, ...] = (), **kwargs: Any
) -> Any:
    """Call ``factory(**kwargs)`` after checking the keywords: unknown ones and missing
    required ones are a :class:`ConfigError` naming them and the accepted keys. ``provided``
    names keywords robustlab itself passes (left out of the listed choices)."""
    params = _signature_parameters(factory)
    if params is not None:
        names = list(dict.fromkeys(p.name for p in params))
        choices = ", ".join(n for n in names if n not in provided) or "no options"
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise ConfigError(f"{where} does not take {unknown}; accepted keys: {choices}")
        missing = [
            p.name for p in params if p.default is inspect.Parameter.empty and p.name not in kwargs
        ]
        if missing:
            raise ConfigError(f"{where} needs {missing}; accepted keys: {choices}")
    return factory(**kwargs)
