"""Loaders of the frozen config dataclasses: YAML files and dotted ``--section.field=value``
overrides become one nested dict, which :func:`from_dict` turns into dataclasses, coercing each
value to its annotated type or failing with one :class:`ConfigError` that names the field.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value is wrong. The message names the field and the allowed values."""


def fail(name: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{name}={value!r} is not allowed: {allowed}")


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """Coerce a YAML/CLI value to the annotated type, or fail naming the field."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        tp = args[0]
    if tp is bool:
        if isinstance(value, bool):
            return value
        fail(name, value, "must be true or false")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail(name, value, "must be an integer")
        return value
    if tp is float:
        try:  # YAML 1.1 reads 1e-3 (no dot) as a string
            value = float(value) if isinstance(value, str) else value
        except ValueError:
            fail(name, value, "must be a number")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(name, value, "must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            fail(name, value, "must be a string")
        return str(value)
    return value


def from_dict(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown field {where}{unknown[0]}; allowed fields: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else key
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(tp, value, name)
        else:
            kwargs[key] = _coerce(name, value, tp)
    return cls(**kwargs)


def parse_overrides(args: typing.Sequence[str]) -> dict[str, Any]:
    """Turn ``["--env.suite=libero_goal", "collect.workers=4"]`` into a nested dict."""
    out: dict[str, Any] = {}
    for arg in args:
        text = arg[2:] if arg.startswith("--") else arg
        if "=" not in text:
            raise ConfigError(f"override {arg!r} must look like --section.field=value")
        key, raw = text.split("=", 1)
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {arg!r} conflicts with another override of {part}")
        node[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return out


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping at top level")
    return data


def check_choice(name: str, value: Any, allowed: typing.Iterable[Any]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        fail(name, value, "choose one of " + ", ".join(map(str, allowed)))


def check_range(name: str, value: float, lo: float | None = None, hi: float | None = None) -> None:
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        fail(name, value, f"must lie in [{lo_s}, {hi_s}]")


def parse_task_ids(spec: str) -> list[int]:
    """'0-9' or '0,3,5-7' -> sorted task ids; ValueError on anything else."""
    out: set[int] = set()
    for part in str(spec).split(","):
        lo, _, hi = part.strip().partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    if not out:
        raise ValueError(spec)
    return sorted(out)
