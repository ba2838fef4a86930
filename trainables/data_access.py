"""Which files a spec may make phitune read: only those inside the configured data roots.

Why: a study spec is user input, and a dataset keyword such as ``root=`` or ``path=`` used to
be opened as given, so a char-LM "trained" on ``/etc/shadow`` and a CIFAR root on a shared
disk ran pickled code (design: "Security and inputs"). Every user-supplied path is resolved
(``..`` and symlinks included, so a link inside a root that points outside it is refused) and
must lie under one of the allowed roots. The service checks at submit time (422) and the
trainables check again before reading (defence in depth: a stored spec, a Ray Job or a
notebook may reach the loaders without the API).

The roots are an argument, never read from the environment (style rule 7); ``None`` means
"no restriction" for library use on one's own files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trainables.errors import ConfigError

__all__ = ["DataAccessError", "check_data_paths", "is_path_key", "resolve_in_roots", "within"]

#: Keyword names that name a file or folder (``root``, ``path``, ``cache_dir``, ``files`` ...).
_PATH_KEY = re.compile(r"(^|_)(root|roots|path|paths|dir|dirs|file|files|folder|filename)$")
#: Keys the server sets itself; a spec that sets them is refused (it would pick the data dir).
RESERVED_KEYS = frozenset({"data_dir", "data_roots"})


class DataAccessError(ConfigError):
    """A spec names a path outside the configured data roots (or a malformed one).

    The message names the field and the allowed roots but not whether the path exists, so
    it tells a caller nothing about the server's file system.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")

    def __reduce__(self) -> tuple:
        # Ray pickles a trial's exception to record it; rebuild from the constructor's args
        return (type(self), (self.field, str(self.args[0]).split(": ", 1)[-1]))


def is_path_key(key: str) -> bool:
    """Whether a keyword name says its value is a file or folder."""
    return bool(_PATH_KEY.search(key.lower()))


def _looks_like_path(value: str) -> bool:
    """A string value that reads as a file-system path even under an innocent key."""
    return value.startswith(("/", "~", "./", "../", "\\")) or "/../" in value or value == ".."


def resolve_in_roots(value: Any, roots: Sequence[str | os.PathLike[str]], field: str) -> Path:
    """``value`` resolved (symlinks followed, ``~`` not expanded) if it lies inside a root.

    Relative paths are taken relative to the first root, never to the process's working
    directory (which differs between the API, a driver and a Ray worker).
    """
    if not isinstance(value, str) or not value or "\x00" in value:
        raise DataAccessError(field, "must be a non-empty path string")
    if not roots:
        raise DataAccessError(field, "no data roots are configured (PHITUNE_DATA_ROOTS)")
    resolved_roots = [Path(r).resolve() for r in roots]
    path = Path(value)
    if not path.is_absolute():
        path = resolved_roots[0] / path
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        raise DataAccessError(field, "cannot be resolved") from None
    if not any(resolved == r or r in resolved.parents for r in resolved_roots):
        raise DataAccessError(
            field,
            f"is outside the allowed data roots {[str(r) for r in resolved_roots]} "
            "(paths are resolved, symlinks included; configure PHITUNE_DATA_ROOTS)",
        )
    return resolved


def within(base: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """``path`` resolved, if it stays inside ``base`` (resolved too).

    The loaders call this for every file they open under a checked root, so a symlink
    planted *inside* an allowed folder (``texts/x.txt -> /etc/shadow``) is refused as well.
    """
    base_r = Path(base).resolve()
    resolved = Path(path).resolve()
    if resolved != base_r and base_r not in resolved.parents:
        raise DataAccessError(
            "dataset file", f"{Path(path).name} resolves outside its data folder {base_r}"
        )
    return resolved


def _walk(value: Any, field: str, key: str, roots: Sequence[str], depth: int) -> Any:
    if depth > 32:
        raise DataAccessError(field, "is nested too deeply")
    if isinstance(value, Mapping):
        if is_path_key(key):
            raise DataAccessError(field, "must be a path string")
        return {k: _walk(v, f"{field}.{k}", str(k), roots, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_walk(v, f"{field}.{i}", key, roots, depth + 1) for i, v in enumerate(value)]
    if isinstance(value, str) and (is_path_key(key) or _looks_like_path(value)):
        return str(resolve_in_roots(value, roots, field))
    if is_path_key(key) and value is not None and not isinstance(value, bool | int | float):
        raise DataAccessError(field, "must be a path string")
    return value


def check_data_paths(
    kwargs: Mapping[str, Any], roots: Iterable[str | os.PathLike[str]] | None, field: str
) -> dict[str, Any]:
    """Check every path-like value of a builder's keyword arguments against ``roots``.

    Path-like means a key such as ``root``/``path``/``*_dir``/``*_file`` (at any depth), or
    any string that reads as a path (``/...``, ``~...``, ``../...``). Returns the kwargs with
    those paths resolved, so the loader opens exactly the checked file (no second symlink
    lookup an attacker could race). ``roots=None`` checks nothing (library use); ``field`` is
    the spec field for messages, e.g. ``"dataset_kwargs"``.
    """
    for key in kwargs:
        if key in RESERVED_KEYS:
            raise DataAccessError(f"{field}.{key}", "is set by the server, not by a spec")
    if roots is None:
        return dict(kwargs)
    root_list = [str(r) for r in roots]
    return {k: _walk(v, f"{field}.{k}", str(k), root_list, 1) for k, v in kwargs.items()}
