"""From a config block to checked Python values, in one place: :func:`settings` turns a block of settings (``eval``,
``mine``, ``mine.index``) into its frozen dataclass, reporting unknown and missing keys and wrong types as a
:class:`~hybrid_ir.utils.errors.ConfigError` that names ``<key>.<field>``; :func:`check_int` is the one check of a
whole number in a range. The rule for which config group becomes what: ``docs/architecture.md`` ("From config to
code"); the messages: ``docs/reliability.md``."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints, overload

from omegaconf import OmegaConf

from hybrid_ir.utils.errors import ConfigError

T = TypeVar("T")

_TYPE_NAMES = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a mapping",
    type(None): "null",
}


@overload
def check_int(
    value: object,
    key: str,
    minimum: int = 1,
    maximum: int | None = None,
    *,
    null: Literal[False] = False,
    hint: str = "",
) -> int: ...


@overload
def check_int(
    value: object,
    key: str,
    minimum: int = 1,
    maximum: int | None = None,
    *,
    null: Literal[True],
    hint: str = "",
) -> int | None: ...


def check_int(
    value: object,
    key: str,
    minimum: int = 1,
    maximum: int | None = None,
    *,
    null: bool = False,
    hint: str = "",
) -> int | None:
    """``value`` when it is a whole number (not a bool) from ``minimum`` to ``maximum`` (``None``: no upper
    bound), or ``None`` when ``null`` allows it.

    Raises:
        ConfigError: ``"<key>=<value>: expected an integer >= <minimum>[ or null][; <hint>]"`` (``from <minimum> to
            <maximum>`` with an upper bound)."""
    if value is None and null:
        return None
    whole = isinstance(value, int) and not isinstance(value, bool)
    if whole and minimum <= value and (maximum is None or value <= maximum):
        return value
    bounds = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
    raise ConfigError(
        f"{key}={value!r}: expected an integer {bounds}{' or null' if null else ''}{f'; {hint}' if hint else ''}"
    )


def settings(cls: type[T], node: object, key: str) -> T:
    """The frozen dataclass ``cls`` built from the config block ``node`` (a mapping, an OmegaConf ``DictConfig``,
    resolved, or an instance of ``cls``, checked again), named ``key`` in every message.

    Every key must be a field of ``cls``, every field without a default must be set, and every value must have its
    field's type: ``bool``, ``int``, ``float`` (an integer too), ``str``, ``list``, ``dict`` (their items are the
    class's to check), ``Literal[...]``, unions of these (``| None``: null allowed) or ``Any``; a field whose type
    is a dataclass is built from its own block the same way, named ``<key>.<field>``. Then the class's own
    ``check(key)``, when it has one, checks ranges and relations between fields.

    Raises:
        ConfigError: naming ``<key>.<field>``: an unknown or missing key (listing the valid ones) or a value of
            the wrong type (saying what is expected), or what ``check`` raises."""
    valid = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    if isinstance(node, cls):
        node = {name: getattr(node, name) for name in valid}
    if not isinstance(node, Mapping):
        raise ConfigError(f"{key}={node!r}: expected a mapping of settings ({', '.join(valid)})")
    unknown = [name for name in node if name not in valid]
    if unknown:
        names = ", ".join(f"{key}.{name}" for name in unknown)
        raise ConfigError(
            f"{names}: unknown setting{'s' if len(unknown) > 1 else ''}; valid: {', '.join(valid)}"
        )
    required = [
        f.name
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in node]
    if OmegaConf.is_dict(node):
        missing += [name for name in node if OmegaConf.is_missing(node, name)]
    if missing:
        raise ConfigError(
            f"{key}.{missing[0]} is not set; set it in the config or on the command line ({key}.{missing[0]}=...)"
        )
    hints = get_type_hints(cls)
    values = {}
    for name in node:
        hint, value = hints[name], node[name]
        if dataclasses.is_dataclass(hint):
            values[name] = settings(hint, value, f"{key}.{name}")
            continue
        if OmegaConf.is_config(value):  # a list or block: plain lists and dicts, resolved
            value = OmegaConf.to_container(value, resolve=True)
        if not _accepts(hint, value):
            raise ConfigError(f"{key}.{name}={value!r}: expected {_describe(hint)}")
        values[name] = value
    result = cls(**values)
    check = getattr(result, "check", None)
    if callable(check):
        check(key)
    return result


def _accepts(hint: Any, value: object) -> bool:
    """Whether ``value`` has the type ``hint`` (see :func:`settings` for the types understood)."""
    origin = get_origin(hint) or hint
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_accepts(arg, value) for arg in get_args(hint))
    if origin is Literal:
        return any(type(value) is type(arg) and value == arg for arg in get_args(hint))
    if origin in (int, float):
        return isinstance(value, int if origin is int else (int, float)) and not isinstance(value, bool)
    if origin in _TYPE_NAMES:
        return isinstance(value, origin)
    raise TypeError(f"settings() does not check fields of type {hint!r}")


def _describe(hint: Any) -> str:
    """What a value of type ``hint`` is, for a message: ``an integer or null``, ``one of flat, ivf``."""
    origin = get_origin(hint) or hint
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in get_args(hint))
    if origin is Literal:
        return "one of " + ", ".join(str(arg) for arg in get_args(hint))
    return _TYPE_NAMES[origin]
