"""The command line's view of the config tree: the options of every group (nested ones such as
``experiment=stability/mnist`` included; internal groups and options whose name starts with ``_``,
such as the shared ``experiment/stability/_base/`` settings, hidden),
the group listing of ``--help``, and Hydra's own errors (an unknown option, a typo'd key, an
unparsable override) as one line with a "did you mean" drawn from the known options or keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.object_type import ObjectType
from hydra.errors import MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from robustlab.errors import closest

#: Hydra's groups that belong to the user's command line (shown in ``--help``).
HYDRA_GROUPS = ("hydra/launcher",)


def _loader() -> Any | None:
    hydra = GlobalHydra.instance()
    return hydra.config_loader() if hydra.is_initialized() else None


#: Groups whose folders hold more options (``experiment=stability/mnist``); in other groups a
#: folder is a group of its own, added with ``+`` (``+method/terms=stability``).
NESTED_OPTION_GROUPS = ("experiment",)


def _subgroups(group: str) -> list[str]:
    loader = _loader()
    if loader is None:
        return []
    return [f"{group}/{sub}" for sub in loader.list_groups(group) if not sub.startswith("_")]


def group_options(group: str) -> list[str]:
    """Every option of ``group``; in :data:`NESTED_OPTION_GROUPS`, options of nested folders
    as ``folder/option``."""
    loader = _loader()
    if loader is None:
        return []
    options = [
        option
        for option in loader.get_group_options(group, results_filter=ObjectType.CONFIG)
        if not option.startswith("_")  # shared bases (``_base.yaml``) are not options to pick
    ]
    if group.split("/")[0] in NESTED_OPTION_GROUPS:
        for sub in _subgroups(group):
            prefix = sub.rpartition("/")[2]
            options += [f"{prefix}/{option}" for option in group_options(sub)]
    return sorted(options)


def app_groups(config_name: str) -> list[str]:
    """The groups an app's primary config (``conf/<config_name>.yaml``) composes, plus the
    Hydra groups users choose (the launcher)."""
    text = (resources.files("robustlab.conf") / f"{config_name}.yaml").read_text()
    groups = []
    for entry in OmegaConf.create(text).get("defaults", []):
        if isinstance(entry, DictConfig):
            groups += [str(k) for k in entry if not str(k).startswith(("override", "_"))]
    return [*groups, *HYDRA_GROUPS]


def config_groups_help(config_name: str) -> str:
    """``group: option, option, ...`` for each group of the app (the ``--help`` listing)."""
    groups = []
    for group in app_groups(config_name):
        groups.append(group)
        if group not in NESTED_OPTION_GROUPS:
            groups += _subgroups(group)  # e.g. method/terms
    return "\n".join(f"{group}: {', '.join(group_options(group))}" for group in groups)


def _chosen_option(missing: str, overrides: Sequence[str]) -> tuple[str, str]:
    """(group, option) of a missing config path such as ``experiment/stability/mnst``: the
    command-line override that asked for it, else the path's folder and name."""
    for override in overrides:
        key, sep, value = override.partition("=")
        key = key.lstrip("+~").split("@")[0]
        if sep and f"{key}/{value}" == missing:
            return key, value
    group, _, option = missing.rpartition("/")
    return group, option


def _swept_group(full_key: str, overrides: Sequence[str]) -> str | None:
    """The group of ``full_key`` (e.g. ``method`` for ``method.prob``) when the command line
    sweeps it over several options (``method=mixup,cutmix``), else None."""
    group = full_key.split(".")[0]
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and key.lstrip("+~") == group and "," in value:
            return group
    return None


def one_line(error: BaseException, overrides: Sequence[str] = ()) -> str:
    """Hydra's (often multi-line) error as one line naming the problem and the fix."""
    if isinstance(error, MissingConfigException) and error.missing_cfg_file:
        group, option = _chosen_option(error.missing_cfg_file, overrides)
        options = group_options(group) or list(error.options or [])
        if not options:
            return f"no config {error.missing_cfg_file!r}; check the name"
        best = closest(option, options)
        hint = f" (did you mean {group}={best}?)" if best else ""
        return f"{group}={option} is not an option{hint}; choose from: {', '.join(options)}"
    cause = error.__cause__
    key_errors = (ConfigKeyError, ConfigAttributeError)
    if isinstance(cause, key_errors) and isinstance(cause.parent_node, DictConfig):
        full_key = cause.full_key or str(cause.key)
        parent, _, key = full_key.rpartition(".")
        keys = [str(k) for k in cause.parent_node if str(k) != "hydra"]
        if not parent:  # top level: a group name is as likely as a key
            loader = _loader()
            groups = [g for g in (loader.list_groups("") if loader else []) if g[0] != "_"]
            keys = sorted(set(keys) | {g for g in groups if g != "hydra"})
        where = f"in {parent}" if parent else "at the top level"
        swept = _swept_group(full_key, overrides)
        if swept:  # Hydra checks plain keys against the group's default before the sweep
            return (
                f"unknown key {full_key} in the default {swept} config, which Hydra checks "
                f"before sweeping {swept}=...: if every swept option has it, force it with "
                f"++{full_key}=...; keys {where}: {', '.join(keys)}"
            )
        best = closest(key, keys)
        hint = f" (did you mean {parent + '.' if parent else ''}{best}?)" if best else ""
        return f"unknown key {full_key}{hint}; keys {where}: {', '.join(keys)}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if cause is not None and str(cause).strip():
        lines.append(str(cause).strip().splitlines()[0])
    return "; ".join(lines) or type(error).__name__
