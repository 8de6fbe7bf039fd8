"""Choose the Trainer's numeric precision for the hardware a run lands on.

bf16 autocast is what makes ResNet18 fast on GPUs and on CPUs with bf16 units (Intel AMX
or AVX512-BF16: about 2x over fp32 for training); on other CPUs it is emulated and slower
than fp32, so those keep full precision.
"""

import torch


def resolve_precision(precision: str | int, accelerator: str) -> str | int:
    """Return `precision` unchanged unless it is "auto"; then pick by device."""
    if str(precision) != "auto":
        return precision
    use_cuda = accelerator in ("gpu", "cuda") or (
        accelerator == "auto" and torch.cuda.is_available()
    )
    if use_cuda:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    # x86 CPUs with AMX tiles or AVX512-BF16 instructions have fast bf16.
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    if accelerator in ("cpu", "auto") and (amx() or avx512_bf16()):
        return "bf16-mixed"
    return "32-true"
