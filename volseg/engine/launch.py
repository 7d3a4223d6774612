"""DDP under Hydra: how Lightning starts the other ranks of a run as new processes.

With ``strategy: ddp`` Lightning runs the training command again for every rank but the first.
Its own command for that (``_hydra_subprocess_cmd``) repeats the whole command line: under
``volseg train -m ...`` each extra rank would start the whole sweep again, in a new sweep
folder, and join the wrong jobs' process groups. `rank_command` runs just the current job
instead, as a single run in that job's own output folder; `ddp_job` lets the next job of a
sweep (same process) start its own ranks.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig

log = logging.getLogger(__name__)

# What Lightning's launcher puts into this process's environment for its ranks. Left behind,
# LOCAL_RANK makes the next job believe an outside launcher started it (no ranks are started)
# and MASTER_PORT points it at the finished job's rendezvous.
_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")

# Hydra overrides a rank process keeps: how its logging is set up. The rest (launcher, sweeper,
# run and sweep folders, the mode) concern the parent's sweep, not one job.
_KEPT_HYDRA_OVERRIDES = ("hydra.job.", "hydra.job_logging", "hydra/job_logging",
                         "hydra.hydra_logging", "hydra/hydra_logging", "hydra.verbose",
                         "hydra.searchpath")


def rank_command(local_rank: int) -> tuple[list[str], str]:
    """The command line and working folder for DDP rank ``local_rank`` of this Hydra job.

    ``python -m volseg train`` (whatever started the job: ``volseg train``, ``train.py`` or
    ``volseg.train()``), the same config folders (``--config-dir``), the job's own overrides
    (under ``-m``: this job's values, not the sweep's lists), its output folder as
    ``hydra.run.dir``, and no second ``.hydra/`` config copy.
    """
    hydra_cfg = HydraConfig.get()
    command = [sys.executable, "-m", "volseg", "train", "--config-name", hydra_cfg.job.config_name]
    for source in hydra_cfg.runtime.config_sources:
        if source.provider == "command-line":  # --config-dir: a file:// path
            command += ["--config-dir", source.path.removeprefix("file://")]
    command += list(hydra_cfg.overrides.task)
    command += [o for o in hydra_cfg.overrides.hydra if o.startswith(_KEPT_HYDRA_OVERRIDES)]
    command += [f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"', "hydra.output_subdir=null",
                f"hydra.job.name={hydra_cfg.job.name}_rank{local_rank}"]
    return command, hydra_cfg.runtime.cwd


def use_rank_command() -> None:
    """Make Lightning's DDP launcher start extra ranks with `rank_command` (idempotent)."""
    from pytorch_lightning.strategies.launchers import subprocess_script

    # A private name of Lightning's (2.6): say so when an upgrade renames it, rather than let
    # DDP sweeps quietly repeat themselves again.
    if not hasattr(subprocess_script, "_hydra_subprocess_cmd"):
        log.warning("Lightning has no _hydra_subprocess_cmd: DDP ranks of a multirun job "
                    "start with Lightning's own command (see volseg.engine.launch)")
    subprocess_script._hydra_subprocess_cmd = rank_command


@contextmanager
def ddp_job() -> Iterator[None]:
    """One training job: afterwards its process group is gone and the environment restored.

    Lightning keeps the process group and the launch variables once a DDP fit is over; a sweep
    running its jobs one after another in this process (``-m``) must not inherit them.
    """
    saved = {name: os.environ.get(name) for name in _LAUNCH_ENV}
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
