"""Where and how wide to run: device names and CPU thread counts, checked with errors that say the fix."""

from __future__ import annotations

import torch

__all__ = ["cpu_bf16_native", "cpu_bf16_warning", "resolve_device", "set_threads"]


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


def cpu_bf16_native() -> bool:
    """Whether this CPU runs bfloat16 convolutions and matmuls on fast kernels (oneDNN's own answer).

    True on CPUs with AVX-512 (bf16 converted in registers) and those with AVX-512 BF16 or AMX;
    False on AVX2-only CPUs, where bf16 autocast falls back to reference kernels: there a resnet20
    training step in bf16 ran at 0.11x float32's images/s (``tnn bench train`` on 2 AVX2 EPYC cores).
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without oneDNN's probe: go by the ISA it dispatches to
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def cpu_bf16_warning() -> str | None:
    """A warning for ``--cpu-bf16`` on a CPU without fast bf16 kernels, else None."""
    if cpu_bf16_native():
        return None
    return (
        f"warning: this CPU has no fast bfloat16 kernels (torch dispatches to "
        f"{torch.backends.cpu.get_cpu_capability()}; oneDNN reports no bf16 support), so --cpu-bf16 "
        f"runs bf16 on slow fallback kernels: several times slower than float32 here "
        f"(`tnn bench train` times both side by side). Drop --cpu-bf16 to train in float32."
    )
