"""Device choice and mixed precision, decided at run time (no CUDA-only imports, no global flags at import)."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from edlm.errors import EdlmError


class DeviceError(EdlmError, ValueError):
    """A device that does not exist on this machine; the message names the flag."""


def resolve_device(name: str | None, flag: str = "--device") -> torch.device:
    """``None`` -> ``cuda:0`` when CUDA is present, else ``cpu``; ``cuda`` -> ``cuda:0``; ``cuda:N`` checked.

    Raises ``DeviceError`` with one line naming ``flag`` when the device cannot be used here.
    """
    if name is None:
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"{flag} {name!r}: expected cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{flag} {name}: CUDA is not available on this machine")
        index = 0 if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise DeviceError(f"{flag} {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"{flag} {name}: MPS is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"{flag} {name!r}: expected cpu, cuda or cuda:N")
    return device


def autocast_for(device: torch.device | str, precision: str):
    """bf16 autocast on the device's type for ``precision == "bf16"``; a no-op context for ``fp32``."""
    device_type = torch.device(device).type
    if precision == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return nullcontext()
