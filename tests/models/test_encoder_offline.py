"""A hub model that is neither in the local Hugging Face cache nor downloadable (no network) stops with one
ConfigError naming ``model.name_or_path`` and the way out, not transformers' connection error (issue 28.8)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.repo import REPO

# Run in a fresh process: huggingface_hub reads HF_HUB_OFFLINE and the cache location when it is imported.
SCRIPT = """
import sys
from hybrid_ir.models.encoder import Encoder
from hybrid_ir.utils.errors import ConfigError
try:
    Encoder(sys.argv[1])
except ConfigError as err:
    print(err)
    sys.exit(3)
"""


@pytest.mark.parametrize("name", ["xlm-roberta-base", "sentence-transformers/LaBSE"])
def test_a_hub_model_without_network_names_the_key_and_a_local_dir(name: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",  # loading fails as it does without network, and never touches it
        "HF_HOME": str(tmp_path / "hf"),  # an empty cache
        "OMP_NUM_THREADS": "1",
    }
    env.pop("HF_HUB_CACHE", None)
    env.pop("TRANSFORMERS_CACHE", None)
    repo = REPO
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, name], cwd=repo, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 3, proc.stderr[-3000:]
    message = proc.stdout
    assert f"model.name_or_path={name!r} could not be found locally" in message
    assert "or downloaded from the Hugging Face hub" in message
    assert "use model.name_or_path=<local dir>" in message


def test_a_directory_without_a_model_names_the_key(tmp_path: Path) -> None:
    from hybrid_ir.models.encoder import Encoder
    from hybrid_ir.utils.errors import ConfigError

    (tmp_path / "empty").mkdir()
    with pytest.raises(
        ConfigError, match=r"model.name_or_path='.*empty': .* is not a loadable model directory"
    ):
        Encoder(str(tmp_path / "empty"))
