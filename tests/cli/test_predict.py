"""``volseg predict`` and ``volseg evaluate`` on a dataset tree, as a user types them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data.adapters import trees
from tests.inference.conftest import make_checkpoint

CLASSES = ["background", "kidney", "tumor"]
REGIONS = {"kidney_and_masses": [1, 2], "masses": [2]}


def volseg(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "volseg"
    return subprocess.run([str(script), *arguments], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_predict_a_data_split_scores_it_with_the_checkpoints_regions(tmp_path):
    tree = tmp_path / "kits23"
    ids = trees.make_kits23(tree)
    checkpoint = make_checkpoint(tmp_path / "model.ckpt", class_names=CLASSES, regions=REGIONS)
    done = volseg("predict", f"ckpt_path={checkpoint}", "data=kits23", f"data.root={tree}",
                  "split=all", "output=pred", "device=cpu", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "pred").glob("*.nii.gz")) == [
        f"{i}.nii.gz" for i in ids]
    report = json.loads((tmp_path / "pred" / "evaluation" / "evaluation.json").read_text())
    # Scored against the KiTS23 labels with cysts dropped (no failure on label 3), per class
    # and per region the checkpoint carries.
    assert report["failed"] == [] and len(report["cases"]) == len(ids)
    assert list(report["summary"]) == ["kidney", "tumor", "region_kidney_and_masses",
                                       "region_masses"]
    assert "region_kidney_and_masses" in done.stdout

    # The same predictions scored against the tree, and against the data config (its regions).
    by_tree = volseg("evaluate", "pred=pred", f"gt={tree}", "output=by_tree", cwd=tmp_path)
    assert by_tree.returncode == 0, by_tree.stderr[-3000:]
    by_config = volseg("evaluate", "pred=pred", "data=kits23", f"data.root={tree}",
                       "output=by_config", "metrics=[dice,iou,volume_similarity,hausdorff]",
                       cwd=tmp_path)
    assert by_config.returncode == 0, by_config.stderr[-3000:]
    scored = json.loads((tmp_path / "by_config" / "evaluation.json").read_text())
    # conf/data/kits23.yaml's regions (cysts dropped: "masses" is the tumor alone).
    assert scored["settings"]["regions"] == {"kidney_and_masses": [1, 2], "tumor": [2]}
    assert scored["settings"]["metrics"] == ["dice", "iou", "volume_similarity", "hausdorff"]
    # gt=<tree>: the layout recognised, read with its default settings (cysts dropped too);
    # no class names given, so class 1 is "class_1".
    by_tree = json.loads((tmp_path / "by_tree" / "evaluation.json").read_text())["summary"]
    assert by_tree["class_1"]["dice"] == scored["summary"]["kidney"]["dice"]


@pytest.mark.slow
def test_predict_refuses_a_bad_start_in_one_line(tmp_path):
    checkpoint = make_checkpoint(tmp_path / "model.ckpt", class_names=CLASSES)
    neither = volseg("predict", f"ckpt_path={checkpoint}", "output=out", cwd=tmp_path)
    assert neither.returncode == 2
    assert "give input=<volumes> or data=<name>" in neither.stdout + neither.stderr
    missing = volseg("evaluate", "pred=nowhere", "gt=.", cwd=tmp_path)
    assert missing.returncode == 2
    assert "pred=nowhere: no such folder" in missing.stdout + missing.stderr
