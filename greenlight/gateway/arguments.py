"""A call's arguments as the policy's tests see them: found by a dotted path, paths
compared as the upstream resolves them, and whether a tool's input schema takes one.

Pure functions, no I/O.
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Mapping
from typing import Any

MAX_DEPTH = 32
"""How deep into a schema (``$ref`` and branches included) an argument is looked for."""


def lookup(arguments: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    """Whether the argument at ``path`` (dotted: ``target.env``) is given, and its value."""
    value: Any = arguments
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value


def path_matches(value: str, pattern: str) -> bool:
    """Whether the path ``value`` matches the absolute glob ``pattern``, compared as paths.

    ``/srv/data/./prod/a``, ``/srv/data//prod/a`` and ``/srv/data/tmp/../prod/a`` are all
    ``/srv/data/prod/a`` to the upstream, so all match ``/srv/data/prod/*``. A relative
    path (or one starting with ``~``) is resolved where the upstream runs, which the
    gateway cannot know: it matches, so people are asked. Symbolic links are not followed.
    """
    if not value.startswith("/"):
        return True
    return fnmatch.fnmatchcase(_normal(value), _normal(pattern))


def _normal(path: str) -> str:
    """``path`` without ``.``, ``..`` and repeated slashes (``normpath`` keeps a leading
    ``//``, which the upstreams read as ``/``)."""
    return "/" + posixpath.normpath(path).lstrip("/")


def takes(schema: Mapping[str, Any] | None, path: str) -> bool:
    """Whether a tool whose input schema is ``schema`` takes the argument at ``path``.

    Local ``$ref`` and the branches of ``anyOf``, ``oneOf`` and ``allOf`` are followed.
    An object that names no properties (a free-form mapping) takes any name below it.
    None (no such tool) takes nothing.
    """
    root: Mapping[str, Any] = schema or {"properties": {}}
    return _takes(root, path.split("."), root, 0)


def _takes(node: Any, parts: list[str], root: Mapping[str, Any], depth: int) -> bool:
    if not isinstance(node, Mapping) or depth > MAX_DEPTH:
        return False
    if not parts:
        return True
    ref = node.get("$ref")
    if isinstance(ref, str) and _takes(_resolve(root, ref), parts, root, depth + 1):
        return True
    branches = [b for k in ("anyOf", "oneOf", "allOf") for b in node.get(k) or ()]
    if any(_takes(b, parts, root, depth + 1) for b in branches):
        return True
    properties = node.get("properties")
    if isinstance(properties, Mapping):
        return parts[0] in properties and _takes(properties[parts[0]], parts[1:], root, depth + 1)
    if ref is not None or branches:
        return False
    extra = node.get("additionalProperties", True)
    if isinstance(extra, Mapping):
        return _takes(extra, parts[1:], root, depth + 1)
    kind = node.get("type", "object")
    is_object = kind == "object" or (isinstance(kind, list) and "object" in kind)
    return is_object and extra is not False


def _resolve(root: Mapping[str, Any], ref: str) -> Any:
    """The part of the schema a local ``$ref`` (``#/$defs/Target``) points to, or None."""
    if not ref.startswith("#/"):
        return None
    node: Any = root
    for key in ref[2:].split("/"):
        name = key.replace("~1", "/").replace("~0", "~")
        node = node.get(name) if isinstance(node, Mapping) else None
    return node
