"""YAML to plain values, remembering the line of every key and value, with ${ENV} interpolation.

PyYAML's composer gives nodes that carry their position; we build the Python values ourselves so that a
validation error on ``features.x.route.0.timeout_s`` can point at the line it came from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import yaml

Path = tuple[str | int, ...]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|\$\$")


_KEY: Any = object()  # a path element no YAML key can equal: where a mapping key's own value is built
_SCALAR_TAGS = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool"}
_BOOL_TAG = "tag:yaml.org,2002:bool"


class YamlProblem(Exception):
    def __init__(self, line: int | None, field: str, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.field = field
        self.message = message


def interpolate(text: str, env: Mapping[str, str], *, line: int | None, field: str) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}`` with values from ``env``; ``$$`` is a literal ``$``."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        value = env.get(name)
        if value is None or (value == "" and default is not None and ":-" in m.group(0)):
            if default is None:
                raise YamlProblem(
                    line,
                    field,
                    f"environment variable {name} is not set; set it, or give a default "
                    f"with ${{{name}:-default}}",
                )
            return default
        return value

    return _ENV.sub(sub, text)


def load_yaml(text: str, env: Mapping[str, str] | None = None) -> tuple[Any, dict[Path, int]]:
    """Parse ``text``; return (value, {path: 1-based line}). Raises YamlProblem."""
    env = os.environ if env is None else env
    lines: dict[Path, int] = {}
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise YamlProblem(mark.line + 1 if mark else None, "", f"not valid YAML: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise YamlProblem(None, "", f"not valid YAML: {exc}") from exc
    if node is None:
        return {}, lines
    constructor = yaml.SafeLoader("")

    def build(n: yaml.Node, path: Path) -> Any:
        lines.setdefault(path, n.start_mark.line + 1)
        field = ".".join(str(p) for p in path)
        if isinstance(n, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in n.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise YamlProblem(key_node.start_mark.line + 1, field, "YAML merge keys (<<) are not supported")
                if key_node.tag == _BOOL_TAG and isinstance(key_node, yaml.ScalarNode) and key_node.style is None:
                    key = key_node.value  # YAML 1.1 reads a plain `on:` (yes, no, off) as a boolean; a key is a name
                else:
                    key = build(key_node, path + (_KEY,))
                if not isinstance(key, (str, int)):
                    raise YamlProblem(key_node.start_mark.line + 1, field, "mapping keys must be strings")
                key = str(key)
                if key in out:
                    raise YamlProblem(
                        key_node.start_mark.line + 1, f"{field}.{key}" if field else key, "duplicate key"
                    )
                lines[path + (key,)] = key_node.start_mark.line + 1
                out[key] = build(value_node, path + (key,))
            lines.pop(path + (_KEY,), None)
            return out
        if isinstance(n, yaml.SequenceNode):
            return [build(item, path + (i,)) for i, item in enumerate(n.value)]
        value = constructor.construct_object(n, deep=True)
        if isinstance(value, str) and "$" in value:
            value = interpolate(value, env, line=n.start_mark.line + 1, field=field)
            if n.style is None:
                # An unquoted ${VAR} resolves as YAML would resolve a number or boolean typed in its place.
                tag = yaml.SafeLoader.resolve(constructor, yaml.ScalarNode, value, (True, False))
                if tag in _SCALAR_TAGS:
                    value = constructor.construct_object(yaml.ScalarNode(tag, value), deep=True)
        return value

    return build(node, ()), lines


def line_for(lines: Mapping[Path, int], loc: Path) -> int | None:
    """The line of the longest prefix of ``loc`` that has one."""
    for end in range(len(loc), -1, -1):
        line = lines.get(tuple(loc[:end]))
        if line is not None:
            return line
    return None
