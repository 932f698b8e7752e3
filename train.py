"""Train a multilingual dense retriever: ``python train.py sampler=hybrid model=e5-small`` (see conf/train.yaml)."""

import hydra
from omegaconf import DictConfig

from hybrid_ir.tasks.instantiate import register_resolvers
from hybrid_ir.utils.cli import report_expected_errors

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@report_expected_errors
def main(cfg: DictConfig) -> float | None:
    from hybrid_ir.tasks.train import sweep_objective, train  # heavy imports only once a run starts

    return sweep_objective(train(cfg))


if __name__ == "__main__":
    main()
