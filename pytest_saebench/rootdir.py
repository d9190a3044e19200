"""``--sae-path PATH`` and ``--sae-path=PATH`` find the same rootdir and ini file.

pytest picks its rootdir and ini file from the command line's test paths before it loads
plugins, so it does not know yet that ``--sae-path`` takes a value: in the space form, PATH
counts as a test path. A checkpoint outside the repository then moves the rootdir there, and
the repository's ``[tool.pytest.ini_options]`` (``norecursedirs``, ``testpaths``,
``addopts``, the cache directory) are ignored. Once the plugin is loaded its option is known;
this redoes pytest's choice with the real test paths, before conftests, the cache or
collection read any of it. Torch-free.
"""

from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Any

import pytest


def realign(config: pytest.Config, args: list[str]) -> None:
    """Make ``config``'s rootdir and ini file those of the test paths without the
    ``--sae-path`` values (nothing to do when the two agree or the user chose them)."""
    ns = config.known_args_namespace
    if not getattr(ns, "sae_path", None) or getattr(ns, "inifilename", None) or \
            getattr(ns, "rootdir", None):
        return
    try:
        found = _determine(config, [str(a) for a in getattr(ns, "file_or_dir", None) or []])
    except Exception as exc:  # a pytest whose internals differ: say what to do instead
        _cannot(config, f"{type(exc).__name__}: {exc}")
        return
    rootpath, inipath, inicfg = found
    if rootpath == config.rootpath and inipath == config.inipath:
        return
    try:
        _apply(config, args, rootpath, inipath, inicfg)
    except Exception as exc:
        _cannot(config, f"{type(exc).__name__}: {exc}")


def _determine(config: pytest.Config, paths: list[str]) -> tuple[Path, Path | None, Any]:
    from _pytest.config.findpaths import determine_setup

    ns = config.known_args_namespace
    offered = {"inifile": None, "args": paths, "rootdir_cmd_arg": None,
               "invocation_dir": config.invocation_params.dir,
               "override_ini": getattr(ns, "override_ini", None)}
    accepted = inspect.signature(determine_setup).parameters
    found = determine_setup(**{k: v for k, v in offered.items() if k in accepted})
    return found[0], found[1], found[2]


def _apply(config: pytest.Config, args: list[str], rootpath: Path, inipath: Path | None,
           inicfg: Any) -> None:
    ns = config.known_args_namespace
    old_addopts = list(config.getini("addopts"))
    cfg_attr = "_inicfg" if hasattr(config, "_inicfg") else "inicfg"
    old_confcut = str(config.inipath.parent if config.inipath else config.rootpath)
    config._rootpath = rootpath  # type: ignore[attr-defined]
    config._inipath = inipath  # type: ignore[attr-defined]
    setattr(config, cfg_attr, inicfg)
    config._inicache.clear()  # type: ignore[attr-defined]
    config._parser.extra_info["rootdir"] = str(rootpath)  # type: ignore[attr-defined]
    config._parser.extra_info["inifile"] = str(inipath)  # type: ignore[attr-defined]
    # The wrong file's addopts were put in front of the arguments; the right file's go there.
    if old_addopts and args[:len(old_addopts)] == old_addopts:
        del args[:len(old_addopts)]
    args[:0] = list(config.getini("addopts"))
    config.known_args_namespace = config._parser.parse_known_args(  # type: ignore[attr-defined]
        args, namespace=copy.copy(config.option))
    if ns.confcutdir == old_confcut:  # pytest's default, taken from the wrong place
        config.known_args_namespace.confcutdir = str(inipath.parent if inipath else rootpath)
    else:
        config.known_args_namespace.confcutdir = ns.confcutdir


def _cannot(config: pytest.Config, why: str) -> None:
    config.issue_config_time_warning(pytest.PytestConfigWarning(
        f"pytest-saebench: could not re-read the ini file for --sae-path given as two words "
        f"({why}); write --sae-path=PATH so pytest does not take PATH for a test path"),
        stacklevel=2)
