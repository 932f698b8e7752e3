"""Train a multilingual dense retriever: ``python train.py sampler=hybrid model=e5-small`` (see conf/train.yaml)."""

from typing import Any

import hydra
from omegaconf import DictConfig

from hybrid_ir.utils.instantiate import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hybrid_ir.pipeline import train  # heavy imports only once a run starts

    metrics: dict[str, Any] = train(cfg)
    multi = [v for k, v in metrics.items() if k.endswith("/map_multi")]
    return multi[0] if multi else None


if __name__ == "__main__":
    main()
