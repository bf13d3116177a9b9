"""Name → implementation look-up shared by the model, data, method and suite registries.

A name is either a key of the registry or an import path (``pkg.module:Name`` or
``pkg.module.Name``) so users can plug their own classes into any config group. Keyword
arguments from config are checked against the signature before the call, so a typo'd key
is a clear :class:`~robustlab.errors.ConfigError`, not a ``TypeError`` traceback.
"""

from __future__ import annotations

import collections.abc
import importlib
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from robustlab.errors import ConfigError, closest

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


def _listing(choices: Iterable[str], ordered: bool) -> str:
    names = [str(c) for c in choices]
    return ", ".join(names if ordered else sorted(names))


def resolve(
    registry: Mapping[str, Any],
    name: str,
    *,
    group: str,
    imports: bool = True,
    ordered: bool = False,
) -> Any:
    """``registry[name]``, or (``imports``) the object at import path ``name``.

    Anything else is a :class:`ConfigError` naming the group, the closest key ("did you mean")
    and every key (sorted, or in the registry's own order when ``ordered``).
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{group} name must be a non-empty string, got {name!r}")
    if name in registry:
        return registry[name]
    if imports and (":" in name or "." in name):
        return import_object(name, group=group)
    best = closest(name, [str(key) for key in registry])
    hint = f" (did you mean {best!r}?)" if best else ""
    plug_in = " (or an import path 'package.module:name' to your own)" if imports else ""
    raise ConfigError(
        f"unknown {group} {name!r}{hint}; valid choices: {_listing(registry, ordered)}{plug_in}"
    )


def check_known(
    names: Iterable[str],
    choices: Iterable[str],
    *,
    group: str,
    where: str | None = None,
    ordered: bool = False,
) -> None:
    """Every one of ``names`` is among ``choices``; otherwise a :class:`ConfigError` listing all
    the unknown names at once (``where: unknown <group> [...]``), the closest choice to the
    first, and the choices (sorted, or as given when ``ordered``)."""
    choices = [str(c) for c in choices]
    unknown = sorted({str(n) for n in names} - set(choices))
    if not unknown:
        return
    best = closest(unknown[0], choices)
    hint = f" (did you mean {best!r}?)" if best else ""
    prefix = f"{where}: " if where else ""
    raise ConfigError(
        f"{prefix}unknown {group} {unknown}{hint}; valid choices: {_listing(choices, ordered)}"
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


def check_keywords(
    factory: Callable, where: str, kwargs: Mapping[str, Any], *, provided: tuple[str, ...] = ()
) -> None:
    """Unknown keywords of ``factory`` and missing required ones are a :class:`ConfigError`
    naming them, the closest accepted key, and the accepted keys. ``provided`` names keywords
    robustlab itself passes (left out of the listed choices)."""
    params = _signature_parameters(factory)
    if params is None:
        return
    names = list(dict.fromkeys(p.name for p in params))
    user_names = [n for n in names if n not in provided]
    choices = ", ".join(user_names) or "no options"
    unknown = sorted(set(kwargs) - set(names))
    if unknown:
        best = closest(unknown[0], user_names)
        hint = f" (did you mean {best!r}?)" if best else ""
        raise ConfigError(f"{where} does not take {unknown}{hint}; accepted keys: {choices}")
    missing = [
        p.name
        for p in params
        if p.default is inspect.Parameter.empty and p.name not in kwargs and p.name not in provided
    ]
    if missing:
        raise ConfigError(f"{where} needs {missing}; accepted keys: {choices}")


def construct(
    factory: Callable, where: str, /, *, provided: tuple[str, ...] = (), **kwargs: Any
) -> Any:
    """Call ``factory(**kwargs)`` after :func:`check_keywords`."""
    check_keywords(factory, where, kwargs, provided=provided)
    return factory(**kwargs)


def _type_hints(factory: Callable) -> dict[str, Any]:
    """Resolved parameter annotations of ``factory`` (of ``__init__`` for a class)."""
    function = factory.__init__ if inspect.isclass(factory) else factory
    try:
        return typing.get_type_hints(function)
    except Exception:  # unresolvable annotations: nothing to check against
        return {}


def _matches(value: Any, annotation: Any) -> bool:
    """Whether a config value (None, bool, int, float, str, list, dict) fits ``annotation``;
    anything this cannot judge (classes a config cannot hold, type variables) counts as a fit."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any or isinstance(annotation, (str, typing.TypeVar)):
        return True
    if annotation is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if origin is typing.Literal:
        return any(value == arg and type(value) is type(arg) for arg in args)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    base = origin or annotation
    if base in (list, tuple, collections.abc.Sequence):
        return isinstance(value, (list, tuple))
    if base in (dict, collections.abc.Mapping):
        return isinstance(value, Mapping)
    return True


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_describe(a) for a in typing.get_args(annotation)))
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(annotation))
    names = {type(None): "null", bool: "true/false", int: "an integer", float: "a number"}
    if annotation in names:
        return names[annotation]
    base = origin or annotation
    return {str: "a string", list: "a list", tuple: "a list", dict: "a mapping"}.get(
        base, getattr(base, "__name__", str(base))
    )


def check_types(factory: Callable, where: str, kwargs: Mapping[str, Any]) -> None:
    """Each value in ``kwargs`` must fit the annotation of ``factory``'s parameter of that
    name: ``trainer.max_epochs=abc`` is a :class:`ConfigError` before any work, not a
    ``TypeError`` deep inside the library that first compares it."""
    hints = _type_hints(factory)
    for key, value in kwargs.items():
        if key in hints and not _matches(value, hints[key]):
            raise ConfigError(f"{where}.{key} must be {_describe(hints[key])}, got {value!r}")
