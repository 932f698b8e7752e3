"""Mine hard negatives: ``python mine.py data=jsonl data.train.0.path=pairs.jsonl`` or ``python mine.py data=default``
(see conf/mine.yaml)."""

import hydra
from omegaconf import DictConfig

from hybrid_ir.tasks.instantiate import register_resolvers
from hybrid_ir.utils.cli import report_expected_errors

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="mine")
@report_expected_errors
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from hybrid_ir.tasks.mine import mine  # heavy imports only once a run starts

    mine(cfg, cli_overrides=HydraConfig.get().overrides.task)


if __name__ == "__main__":
    main()
