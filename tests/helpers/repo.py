"""Where the repository's files are, for tests that run its entry points or read its configs."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
