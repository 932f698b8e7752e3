"""cache_dir / default_data_root / resolve_data_root: environment overrides and their precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybrid_ir.utils import paths
from hybrid_ir.utils.paths import cache_dir, default_data_root, resolve_data_root


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for var in ("HYBRID_IR_CACHE", "XDG_CACHE_HOME", "HYBRID_IR_DATA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


def test_cache_env_wins(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    clean_env.setenv("HYBRID_IR_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    sub = cache_dir("tokenized")
    assert sub == tmp_path / "mine" / "tokenized" and sub.is_dir()


def test_cache_falls_back_to_xdg_then_home(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "hybrid_ir"
    clean_env.delenv("XDG_CACHE_HOME")
    assert cache_dir("models") == tmp_path / "home" / ".cache" / "hybrid_ir" / "models"
    assert (tmp_path / "home" / ".cache" / "hybrid_ir" / "models").is_dir()


def test_data_env_wins(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("HYBRID_IR_DATA", str(tmp_path / "data"))
    assert default_data_root() == tmp_path / "data"


def test_data_root_without_the_env_is_the_cache(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No folder beside the checkout is looked for: that convenience is the Makefile's."""
    clean_env.setenv("HYBRID_IR_CACHE", str(tmp_path / "cache"))
    assert default_data_root() == tmp_path / "cache" / "data"
    assert "parents[" not in Path(paths.__file__).read_text()


def test_configured_root_wins_and_expands_home(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``data.root`` beats ``$HYBRID_IR_DATA`` (training and evaluation resolve it the same way)."""
    clean_env.setenv("HYBRID_IR_DATA", str(tmp_path / "env"))
    assert resolve_data_root("~/corpora") == tmp_path / "home" / "corpora"
    assert resolve_data_root(str(tmp_path / "mine")) == tmp_path / "mine"
    assert resolve_data_root(None) == resolve_data_root("") == tmp_path / "env"
