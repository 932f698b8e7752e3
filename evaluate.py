"""Evaluate a model zero-shot: ``python evaluate.py model=e5-small data=xquad-r`` (see conf/evaluate.yaml)."""

import hydra
from omegaconf import DictConfig

from hybrid_ir.tasks.instantiate import register_resolvers
from hybrid_ir.utils.cli import report_expected_errors

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@report_expected_errors
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from hybrid_ir.tasks.evaluate import evaluate  # heavy imports only once a run starts

    evaluate(cfg, cli_overrides=HydraConfig.get().overrides.task)


if __name__ == "__main__":
    main()
