"""OmegaConf resolvers the configs use; registered when volseg is imported.

``${dataset_json:<root>,<key>}`` reads a setting off a task's ``dataset.json``
(conf/data/decathlon.yaml); ``${len:<list>}`` counts a list (conf/data/base.yaml).
``import volseg`` imports this module, so a resolver here imports anything heavy only when it
runs.

Also where ``ckpt_path`` is turned into a checkpoint and a run folder: the Hydra run folder is
chosen (``${resume_dir:...}`` in conf/hydra/default.yaml) before any training code runs, so
both must agree on what ``ckpt_path=last`` means.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError

from volseg.runs.folders import CHECKPOINT_DIR, LAST_CHECKPOINT

LAST = "last"  # ckpt_path value: the newest run of this task that saved checkpoints/last.ckpt


def register_resolvers() -> None:
    """``${pid:}``: the process id, which keeps run folders of simultaneous starts apart.

    ``${cwd:}``: the folder the command started in (``paths.root_dir``). Not
    ``${hydra:runtime.cwd}``: under ``-m`` Hydra resolves ``hydra.sweep.dir`` before it sets
    its runtime, so a sweep folder interpolating it could not be made.

    ``${resume_dir:new_dir,ckpt_path,train,runs_dir}``: the run folder (see `resume_dir`).

    ``${dataset_json:root,key}``: ``num_classes``, ``in_channels`` or ``class_names`` from
    ``<root>/dataset.json`` (see `dataset_json`).

    ``${len:list}``: the length of a list (conf/data/base.yaml: ``num_classes`` is the number
    of ``class_names``).
    """
    # Cached: Hydra hands a sweep's resolver cache to jobs that submitit runs in other processes,
    # so they resolve hydra.sweep.dir to the same folder instead of one per job.
    OmegaConf.register_new_resolver("pid", os.getpid, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("cwd", os.getcwd, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("resume_dir", resume_dir, replace=True)
    # Not cached: an edited dataset.json counts at the next resolution.
    OmegaConf.register_new_resolver("dataset_json", dataset_json, replace=True)
    OmegaConf.register_new_resolver("len", len, replace=True)


class ResolverError(InterpolationResolutionError):
    """A resolver's error that the user reads as it is: one line, no OmegaConf decoration.

    OmegaConf wraps any other exception a resolver raises ("FileNotFoundError raised while
    resolving interpolation: ...") and appends ``full_key``/``object_type`` lines; an error
    flagged as already formatted (OmegaConf's own ``_initialized``) passes through unchanged.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self._initialized = True


def dataset_json(root: str, key: str) -> int | list[str]:
    """``${dataset_json:root,key}``: a setting read off ``<root>/dataset.json``.

    ``key`` is ``num_classes``, ``in_channels`` or ``class_names``; see
    `volseg.data.adapters.decathlon.dataset_json_setting`.

    Raises:
        ResolverError: no readable dataset.json, or it lacks the setting; the message is one
            line naming the file and what to set (``data.root=<task folder>``).
    """
    # Imported here: `import volseg` registers this resolver and must stay light.
    from volseg.data.adapters.decathlon import dataset_json_setting

    try:
        return dataset_json_setting(root, key)
    except (OSError, ValueError) as error:
        raise ResolverError(str(error)) from None


def find_last_checkpoint(runs_dir: str | Path) -> Path:
    """``<run>/checkpoints/last.ckpt`` of the run under ``runs_dir`` that saved one most recently.

    Raises:
        FileNotFoundError: no run there has one.
    """
    candidates = list(Path(runs_dir).glob(f"*/{CHECKPOINT_DIR}/{LAST_CHECKPOINT}"))
    if not candidates:
        raise FileNotFoundError(
            f"ckpt_path=last: no run under {runs_dir} has checkpoints/last.ckpt"
        )
    return max(candidates, key=lambda path: path.stat().st_mtime)


def resolve_ckpt_path(ckpt_path: str | None, runs_dir: str | Path) -> str | None:
    """``ckpt_path`` as a checkpoint file: ``last`` becomes `find_last_checkpoint`'s answer.

    Raises:
        FileNotFoundError: ``ckpt_path`` names no file (one line that names ``ckpt_path``).
    """
    if ckpt_path is None:
        return None
    if str(ckpt_path) == LAST:
        return str(find_last_checkpoint(runs_dir))
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint file")
    return str(ckpt_path)


def resume_dir(new_dir: str, ckpt_path: str | None, train: bool, runs_dir: str) -> str:
    """The run folder: the resumed run's own when training resumes from a checkpoint.

    A checkpoint at ``<run>/checkpoints/<name>.ckpt`` (what ModelCheckpoint writes) resumes in
    ``<run>``, so the continued run appends to its logs and checkpoints instead of starting a
    second folder. Any other checkpoint file, evaluation only (``train`` false) and a fresh run
    get ``new_dir``.

    Raises:
        SystemExit: ``ckpt_path`` names no checkpoint; the message is one line naming it.
    """
    if ckpt_path is None or not train:
        return new_dir
    try:
        checkpoint = Path(resolve_ckpt_path(ckpt_path, runs_dir)).resolve()
    except FileNotFoundError as error:
        # Hydra cannot format an error raised while it picks the run folder (its formatter
        # asserts, and the user reads 100 lines of its internals); SystemExit passes through
        # OmegaConf and Hydra and prints just the message, with exit status 1.
        raise SystemExit(str(error)) from None
    if checkpoint.parent.name != CHECKPOINT_DIR:
        return new_dir
    return str(checkpoint.parent.parent)
