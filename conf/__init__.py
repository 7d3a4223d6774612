"""volseg's Hydra configs: ``train.yaml``, ``predict.yaml``, ``evaluate.yaml`` and the groups.

This file makes ``conf/`` a package, installed as ``volseg.conf`` (see pyproject.toml), so the
YAML files travel inside the wheel; `volseg.runs.compose.config_dir` finds them.
"""
