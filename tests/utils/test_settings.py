"""``settings`` builds a settings block's frozen dataclass and names ``<key>.<field>`` in every error; ``check_int``
is the one whole-number check."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from omegaconf import OmegaConf

from hybrid_ir.utils.errors import ConfigError
from hybrid_ir.utils.settings import check_int, settings


@dataclass(frozen=True)
class Inner:
    kind: Literal["flat", "ivf"] = "flat"
    cells: int | None = None

    def check(self, key: str) -> None:
        check_int(self.cells, f"{key}.cells", null=True)


@dataclass(frozen=True)
class Outer:
    size: int
    rate: float = 0.5
    name: str | None = None
    flag: bool = False
    items: list[dict[str, Any]] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)

    def check(self, key: str) -> None:
        check_int(self.size, f"{key}.size")


def test_a_block_becomes_its_dataclass() -> None:
    built = settings(
        Outer, {"size": 3, "rate": 1, "items": [{"a": 1}], "inner": {"kind": "ivf", "cells": 4}}, "x"
    )
    assert built == Outer(size=3, rate=1, items=[{"a": 1}], inner=Inner("ivf", 4))


def test_a_dictconfig_is_resolved_and_a_nested_list_made_plain() -> None:
    cfg = OmegaConf.create({"n": 7, "x": {"size": "${n}", "items": [{"a": 1}]}})
    built = settings(Outer, cfg.x, "x")
    assert built.size == 7 and built.items == [{"a": 1}] and isinstance(built.items[0], dict)
    plain = settings(Outer, {"size": 1, "items": cfg.x["items"]}, "x")
    assert type(plain.items) is list and type(plain.items[0]) is dict


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"size": 1, "sise": 2}, "x.sise: unknown setting; valid: size, rate, name, flag, items, inner"),
        ({"size": 1, "a": 1, "b": 2}, "x.a, x.b: unknown settings; valid: size,"),
        (
            {"rate": 0.1},
            "x.size is not set; set it in the config or on the command line (x.size=...)",
        ),
        ({"size": "3"}, "x.size='3': expected an integer"),
        ({"size": True}, "x.size=True: expected an integer"),
        ({"size": 1, "rate": "fast"}, "x.rate='fast': expected a number"),
        ({"size": 1, "name": 5}, "x.name=5: expected a string or null"),
        ({"size": 1, "flag": "yes"}, "x.flag='yes': expected true or false"),
        ({"size": 1, "items": {"a": 1}}, "x.items={'a': 1}: expected a list"),
        ({"size": 1, "inner": {"kind": "pq"}}, "x.inner.kind='pq': expected one of flat, ivf"),
        ({"size": 1, "inner": {"cels": 2}}, "x.inner.cels: unknown setting; valid: kind, cells"),
        ({"size": 1, "inner": 3}, "x.inner=3: expected a mapping of settings (kind, cells)"),
        ({"size": 0}, "x.size=0: expected an integer >= 1"),
        ({"size": 1, "inner": {"cells": 0}}, "x.inner.cells=0: expected an integer >= 1 or null"),
        ([1, 2], "x=[1, 2]: expected a mapping of settings (size, rate, name, flag, items, inner)"),
    ],
)
def test_errors_name_the_key_and_what_is_expected(node: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings(Outer, node, "x")
    assert message in str(info.value)


def test_a_missing_value_is_named_with_its_full_key() -> None:
    cfg = OmegaConf.create({"x": {"size": 1, "inner": {"kind": "???"}}})
    with pytest.raises(ConfigError, match=r"^x\.inner\.kind is not set"):
        settings(Outer, cfg.x, "x")


def test_an_instance_is_checked_again() -> None:
    assert settings(Outer, Outer(size=2), "x") == Outer(size=2)
    with pytest.raises(ConfigError, match=r"x\.size=0: expected an integer >= 1"):
        settings(Outer, Outer(size=0), "x")


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((0, "k"), {}, "k=0: expected an integer >= 1"),
        ((True, "k"), {}, "k=True: expected an integer >= 1"),
        ((1.0, "k"), {}, "k=1.0: expected an integer >= 1"),
        ((None, "k"), {}, "k=None: expected an integer >= 1"),
        ((-1, "k", 0), {}, "k=-1: expected an integer >= 0"),
        ((6, "k", 0, 5), {}, "k=6: expected an integer from 0 to 5"),
        (("3", "k"), {"null": True}, "k='3': expected an integer >= 1 or null"),
        ((0, "k"), {"hint": "why it counts"}, "k=0: expected an integer >= 1; why it counts"),
    ],
)
def test_check_int_refuses(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_int(*args, **kwargs)
    assert str(info.value) == message


def test_check_int_returns_the_value() -> None:
    assert check_int(1, "k") == 1 and check_int(5, "k", 0, 5) == 5 and check_int(0, "k", 0) == 0
    assert check_int(None, "k", null=True) is None
