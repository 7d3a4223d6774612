"""`volseg verify`: one line per problem naming the file, a summary, the exit status."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from volseg.cli.verify import main
from volseg.io import Volume, read_volume, write_volume

REPO = Path(__file__).resolve().parents[1]
ORIGIN = (-40.0, -30.0, -200.0)


@pytest.fixture
def raw(tmp_path):
    """A three-case nnU-Net raw dataset (1 channel, classes 0..2) with clean files."""
    root = tmp_path / "raw"
    rng = np.random.default_rng(0)
    for name in ("c0", "c1", "c2"):
        image = Volume(rng.normal(0, 50, (8, 8, 4)).astype(np.float32), (1.0, 1.0, 2.5), ORIGIN)
        label = np.zeros((8, 8, 4), np.uint8)
        label[2:5, 2:5, 1:3] = 1
        label[3, 3, 2] = 2
        write_volume(image, root / "imagesTr" / f"{name}_0000.nii.gz")
        write_volume(image.with_array(label), root / "labelsTr" / f"{name}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1, "lesion": 2},
        "file_ending": ".nii.gz"}))
    return root


def _verify(root, capsys, *overrides):
    status = main([f"data.root={root}",
                   "data.layout._target_=volseg.data.adapters.decathlon.DecathlonLayout",
                   "~data.layout.num_cases", "~data.layout.seed", "~data.layout.size_mm",
                   "data.cache_workers=0", *overrides])
    return status, capsys.readouterr().out


def _image(root):
    return root / "imagesTr" / "c1_0000.nii.gz"


def _label(root):
    return root / "labelsTr" / "c1.nii.gz"


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def _rewrite(path, change):
    volume = read_volume(path)
    write_volume(change(volume), path)


def _set_voxel(value):
    def change(volume):
        volume.array[(0,) * volume.array.ndim] = value
        return volume
    return change


def _move(offset):
    def change(volume):
        return Volume(volume.array, volume.spacing, np.add(volume.origin, offset), volume.direction)
    return change


# (what is done to case c1, the file it names, the kind, what the message says)
DAMAGE = {
    "truncated image": (lambda r: _truncate(_image(r)), _image, "unreadable", "truncated"),
    "zero-byte label": (lambda r: _label(r).write_bytes(b""), _label, "unreadable",
                        "unreadable image"),
    "label value 7": (lambda r: _rewrite(_label(r), _set_voxel(7)), _label, "labels",
                      "label values [0, 1, 2, 7] outside 0..2 (data.num_classes=3)"),
    "NaN voxel": (lambda r: _rewrite(_image(r), _set_voxel(np.nan)), _image, "non-finite",
                  "1 NaN/inf voxel(s)"),
    "shape mismatch": (lambda r: write_volume(Volume(np.zeros((8, 8, 5), np.uint8),
                                                     (1.0, 1.0, 2.5), ORIGIN), _label(r)),
                       _label, "geometry", "label grid differs from its image: shape"),
    "origin mismatch": (lambda r: _rewrite(_label(r), _move((0.0, 0.01, 0.0))), _label,
                        "geometry", "label grid differs from its image: origin"),
}


def _row(out, kind):
    """(problems, cases) in the summary table's row for ``kind``."""
    match = re.search(rf"{re.escape(kind)}\W+(\d+)\W+(\d+)\W", out)
    assert match, out
    return int(match.group(1)), int(match.group(2))


def test_clean_dataset_passes(raw, capsys):
    status, out = _verify(raw, capsys)
    assert status == 0, out
    assert "3 case(s) checked, 0 with problems" in out
    assert _row(out, "labels") == (0, 0)


@pytest.mark.parametrize("name", list(DAMAGE))
def test_each_problem_is_one_line_naming_the_file(raw, capsys, name):
    damage, file_of, kind, says = DAMAGE[name]
    damage(raw)
    status, out = _verify(raw, capsys)
    assert status == 1
    lines = [line for line in out.splitlines() if line.startswith(str(file_of(raw)))]
    assert len(lines) == 1, out
    assert says in lines[0]
    assert _row(out, kind) == (1, 1)
    assert "3 case(s) checked, 1 with problems" in out


def test_every_bad_case_is_reported(raw, capsys):
    DAMAGE["NaN voxel"][0](raw)
    DAMAGE["label value 7"][0](raw)
    _rewrite(raw / "labelsTr" / "c2.nii.gz", _set_voxel(3))
    status, out = _verify(raw, capsys)
    assert status == 1
    assert _row(out, "labels") == (2, 2) and _row(out, "non-finite") == (1, 1)
    assert "3 case(s) checked, 2 with problems" in out


def test_origin_within_tolerance_passes(raw, capsys):
    _rewrite(_label(raw), _move((0.0, 0.0005, 0.0)))
    assert _verify(raw, capsys)[0] == 0


def test_missing_label_and_channel_count_are_dataset_problems(raw, capsys):
    status, out = _verify(raw, capsys, "data.in_channels=2")
    assert status == 1 and "data.in_channels=2 but" in out and _row(out, "dataset") == (1, 0)
    _label(raw).unlink()
    status, out = _verify(raw, capsys)
    assert status == 1
    assert f"{_label(raw)}: missing label for case c1" in out and _row(out, "missing") == (1, 0)


def test_bad_override_exits_2(capsys):
    assert main(["data.bach_size=4"]) == 2
    assert "data.bach_size" in capsys.readouterr().err


@pytest.mark.slow
def test_command_line(raw):
    DAMAGE["label value 7"][0](raw)
    done = subprocess.run(
        [sys.executable, "-m", "volseg", "verify", f"data.root={raw}",
         "data.layout._target_=volseg.data.adapters.decathlon.DecathlonLayout",
         "~data.layout.num_cases", "~data.layout.seed", "~data.layout.size_mm"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"{_label(raw)}: label values [0, 1, 2, 7]" in done.stdout


def test_decathlon_config_needs_only_the_task_folder(raw, capsys):
    # in_channels, num_classes and class_names come from the task's dataset.json.
    status = main(["data=decathlon", f"data.root={raw}", "data.cache_workers=0"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "3 case(s) checked, 0 with problems" in out


def test_decathlon_config_without_dataset_json_is_one_line_naming_it(tmp_path, capsys):
    assert main(["data=decathlon", f"data.root={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'dataset.json'}: missing; set data.root=<task")
    assert err.count("\n") == 1, err


@pytest.mark.slow
def test_decathlon_command_line_on_a_good_task_exits_0(raw):
    done = subprocess.run([sys.executable, "-m", "volseg", "verify", "data=decathlon",
                           f"data.root={raw}"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "3 case(s) checked, 0 with problems" in done.stdout
