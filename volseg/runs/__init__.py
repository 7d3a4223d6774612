"""Run-folder plumbing: what a run folder holds and reading it back (`volseg.runs.folders`),
composing the configs as the command line does (`volseg.runs.compose`), and the config
resolvers that find runs and datasets (`volseg.runs.resolvers`)."""

from volseg.runs.folders import (
    CHECKPOINT_DIR,
    HISTORY_CSV,
    HISTORY_JSON,
    HISTORY_PNG,
    LAST_CHECKPOINT,
    METRICS_JSON,
    RESOLVED_CONFIG,
    Run,
    last_checkpoint,
    load_run,
    metric_value,
    read_metrics,
    task_config,
    write_resolved_config,
)

__all__ = ["CHECKPOINT_DIR", "HISTORY_CSV", "HISTORY_JSON", "HISTORY_PNG", "LAST_CHECKPOINT",
           "METRICS_JSON", "RESOLVED_CONFIG", "Run", "last_checkpoint", "load_run",
           "metric_value", "read_metrics", "task_config", "write_resolved_config"]
