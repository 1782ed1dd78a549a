"""Typed config fields, checked by one validator.

A choice is typed `Literal[...]` and a range sits beside its field (`bounded(...)`), so the
dataclass is the one place that says what a value may be; `set_fields` checks every value that a
step file, a scale file, a record or `--set` brings, and `check_fields` an object built in code.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
import types
import typing

from .errors import ConfigError

FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def bounded(default, low=None, high=None, *, above=None):
    """A field whose value must be >= low (or > above) and <= high; None always passes (unset)."""
    return dataclasses.field(default=default, metadata={"range": (low, above, high)})


def closest(name: str, options) -> str:
    match = difflib.get_close_matches(name, [str(o) for o in options], n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


@functools.cache
def field_types(cls) -> dict[str, object]:
    return typing.get_type_hints(cls)


def coerce(value, annotation, where: str, *, text_numbers: bool = True):
    """Check `value` against a field type; ints widen to floats, lists become tuples. A plain `dict` or `list`
    is checked as such (a record's nested parts). `text_numbers`: a float may come as text, as YAML 1.1 reads
    '1e-3'; JSON (a record) holds numbers as numbers."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        options = typing.get_args(annotation)
        if value in options and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be one of {', '.join(map(str, options))}, not {value!r}"
                          f"{closest(str(value), options)}")
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, where, text_numbers=text_numbers)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if origin is tuple:
        item_type = typing.get_args(annotation)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, not {value!r}")
        return tuple(coerce(v, item_type, f"{where}[{i}]", text_numbers=text_numbers) for i, v in enumerate(value))
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return finite(float(value), where)
    if annotation is float and text_numbers and isinstance(value, str) and FLOAT_RE.fullmatch(value.strip()):
        return finite(float(value), where)  # YAML 1.1 reads '1e-3' (no dot) as a string
    if annotation is bool and isinstance(value, bool):
        return value
    if annotation in (int, str, dict, list) and isinstance(value, annotation) and not isinstance(value, bool):
        return value
    raise ConfigError(f"{where} must be {getattr(annotation, '__name__', annotation)}, not {value!r}")


def finite(value: float, where: str) -> float:
    """No config number means anything as NaN or infinity (YAML's .nan, .inf, or 1e999)."""
    if not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, not {value}")
    return value


def check_range(value, f: dataclasses.Field, where: str):
    low, above, high = f.metadata.get("range", (None, None, None))
    if value is None:
        return value
    if (low is not None and value < low) or (above is not None and value <= above) or \
            (high is not None and value > high):
        bounds = [f">= {low}" if low is not None else f"> {above}"] + ([f"<= {high}"] if high is not None else [])
        raise ConfigError(f"{where} must be {' and '.join(bounds)}, not {value}")
    return value


def set_fields(obj, values: dict, section: str, origin: str = "", *, text_numbers: bool = True):
    """Set `values` on dataclass `obj`, strictly: unknown keys, wrong types, choices and ranges are errors.

    `origin` ("file.yaml: ") prefixes the message so the user knows where to look; `text_numbers` as for coerce."""
    if not isinstance(values, dict):
        raise ConfigError(f"{origin}'{section}' must be a mapping of keys to values, not {values!r}")
    known = {f.name: f for f in dataclasses.fields(obj)}
    types_ = field_types(type(obj))
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{origin}unknown key '{section}.{key}'{closest(str(key), known)}")
        where = f"{origin}{section}.{key}"
        setattr(obj, key, check_range(coerce(value, types_[key], where, text_numbers=text_numbers), known[key], where))
    return obj


def check_fields(obj, section: str, *, text_numbers: bool = True) -> None:
    """Every field of a dataclass built in code (not through set_fields) against its type, choices and range."""
    types_ = field_types(type(obj))
    for f in dataclasses.fields(obj):
        where = f"{section}.{f.name}"
        check_range(coerce(getattr(obj, f.name), types_[f.name], where, text_numbers=text_numbers), f, where)
