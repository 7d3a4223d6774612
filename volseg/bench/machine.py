"""One line describing the machine a benchmark ran on, printed above every table."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def machine_description(device: str = "cpu", threads: int | None = None) -> str:
    """One line: CPU model, torch version, CPU threads, and the GPU when ``device`` is CUDA."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = (f"CPU: {cpu} ({os.cpu_count()} logical cores), torch {torch.__version__}, "
            f"{threads or torch.get_num_threads()} threads")
    if device.startswith("cuda") and torch.cuda.is_available():
        text += f", GPU: {torch.cuda.get_device_name(device)}"
    return text
