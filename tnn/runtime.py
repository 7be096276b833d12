"""Where and how wide to run: device names and CPU thread counts, checked with errors that say the fix."""

from __future__ import annotations

import torch

__all__ = ["resolve_device", "set_threads"]


def resolve_device(name: str | torch.device) -> torch.device:
    """``'auto'`` (CUDA if torch sees a GPU, else CPU), ``'cpu'``, ``'cuda'`` or ``'cuda:N'`` as a device.

    A ``torch.device`` is checked the same way. ValueError for any other name or device type (mps,
    meta, ...), for CUDA where this torch sees none, and for a GPU index it lacks.
    """
    if isinstance(name, torch.device):
        dev = name
    elif name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(name)
        except (RuntimeError, TypeError):
            dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        shown = str(name) if isinstance(name, torch.device) else name
        raise ValueError(f"unknown device {shown!r}; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(dev)!r} asked for, but this torch sees no CUDA GPU; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(dev)!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return dev


def set_threads(threads: int | None) -> None:
    """Set torch's CPU threads; ``None`` or 0 keeps torch's default. ValueError below 0."""
    if threads is None or threads == 0:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"threads must be a positive integer (0: torch's default), got {threads!r}")
    torch.set_num_threads(threads)
