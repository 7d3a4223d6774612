"""`volseg.bench.report`: the command line a report says reruns it."""

import argparse

from volseg.bench.nnunet import add_arguments
from volseg.bench.report import rerun_command


def test_rerun_command_writes_lists_repeats_and_leaves_out_unset_options():
    args = argparse.Namespace(size=[40, 32, 16], device="cpu", gpu_memory_gb=None,
                              override=["data=synthetic_mri", "data.num_workers=2"])
    command = rerun_command("x", args, ("size", "device", "gpu_memory_gb"),
                            repeated=("override",))
    assert command == ("volseg bench x --size 40 32 16 --device cpu "
                       "--override data=synthetic_mri --override data.num_workers=2")


def test_the_written_command_parses_back_to_the_same_arguments():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--epochs", "4", "--gpu-memory-gb", "0.5",
                              "--override", "data=decathlon", "--override", "data.root=/d"])
    options = ("epochs", "iterations", "budget", "device", "workers", "gpu_memory_gb")
    command = rerun_command("nnunet", args, options, repeated=("override",))
    again = parser.parse_args(command.split()[3:])
    assert all(getattr(again, name) == getattr(args, name) for name in (*options, "override"))
