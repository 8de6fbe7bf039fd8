"""What a benchmark ran on, in words: the CPU model, its cores, the GPU, the library versions."""

import platform

import torch


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> str:
    """One line, e.g. "AMD EPYC, 2 cores, no GPU; torch 2.14.1"."""
    from src.data.image_folder import usable_cores

    cores = usable_cores()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{cpu_name()}, {cores} cores, {gpu}; torch {torch.__version__}"
