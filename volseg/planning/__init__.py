"""Planning a training run from a dataset's fingerprint, as nnU-Net does: the U-Net topology
(`topology`), the memory of a training step (`memory`), the patch, batch and network that fit a
budget (`network`), the plan they make from a fingerprint (`plan`), and the plan file
``volseg train plan=<file>`` reads (`plan_file`). ``volseg plan`` is `volseg.cli.plan`."""
