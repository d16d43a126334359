"""Reading the project's YAML files (config, region and site files): :func:`read_yaml`.

PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML, and
Snakemake's reader of ``--configfile``, keep the last silently), and every refusal is one
:class:`mapper.errors.ConfigError` naming the file, the line where known, and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mapper.errors import ConfigError


class _DuplicateKey(yaml.MarkedYAMLError):
    """A key given twice in one mapping."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error: PyYAML keeps the
    last silently, so a second ``training:`` section would drop the whole first one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<:` merges may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                earlier = first.setdefault(key, key_node)
            except TypeError:  # an unhashable key: PyYAML's own error follows
                continue
            if earlier is not key_node:
                raise _DuplicateKey(
                    problem=f"the key {key!r} is given twice in one mapping (lines "
                            f"{earlier.start_mark.line + 1} and {key_node.start_mark.line + 1}), "
                            "and only the second would be read",
                    problem_mark=key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                 _UniqueKeyLoader.construct_mapping)


def read_yaml(path: str | Path) -> dict:
    """A YAML file's top-level mapping. Refused with the line, the cause and the fix: a file that
    is not there, not YAML, not UTF-8, not a mapping, or that gives one key twice in a mapping."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found; check the path")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=_UniqueKeyLoader) or {}  # noqa: S506 (a SafeLoader)
    except _DuplicateKey as exc:
        raise ConfigError(f"{path}, line {exc.problem_mark.line + 1}: {exc.problem}; merge the "
                          "two into one (one region_overrides: key holds every region's "
                          "overrides)") from None
    except yaml.YAMLError as exc:
        reason = exc.__class__.__name__
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        cause = f": {problem}" if problem else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({reason}{cause}); fix the syntax"
                          ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    except OSError as exc:  # a folder, no permission
        raise ConfigError(f"{path}: not a readable file ({exc.strerror}); give the YAML file"
                          ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return data
