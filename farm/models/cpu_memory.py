"""Training on CPU: keep freed memory in the process instead of handing it back to the kernel every step.

A training step allocates and frees the same large buffers each time: a tied 49k × 576 embedding's gradient
(113 MB), the logits of a batch, every layer's activations. glibc's malloc serves any block above its mmap
threshold (at most 32 MB) with a fresh `mmap` and returns it with `munmap` when freed, so the next step touches
new pages and the kernel faults them in again, one 4 KiB page at a time. With `mmap` off for malloc and the heap
never trimmed, freed blocks stay in the heap and the next step reuses them (what jemalloc or tcmalloc, which Intel's
PyTorch CPU guides preload, also do). The numbers do not change; only where the bytes live. The cost: memory a run
has freed goes back to the kernel only when the process ends (its peak stays resident).

`keep_freed_memory()` sets this once per process (`loop.fit` and the RL loops call it on CPU unless
`train.cpu_keep_freed_memory: false`); elsewhere than Linux with glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's <malloc.h>
_STATE: dict[str, bool] = {}


def keep_freed_memory() -> bool:
    """Ask glibc to serve every block from its heap and never trim it; True if it took (now or before)."""
    if "set" in _STATE:
        return _STATE["set"]
    ok = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None)
            ok = (hasattr(libc, "gnu_get_libc_version") and libc.mallopt(M_MMAP_MAX, 0) == 1
                  and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1)
        except (OSError, AttributeError):  # no C library to talk to, or one without mallopt (musl)
            ok = False
    _STATE["set"] = ok
    return ok


def applies(device) -> bool:
    """Whether a run on `device` (a torch.device, 'cpu', 'cuda', ...) trains on the CPU."""
    return str(getattr(device, "type", device)).split(":")[0] == "cpu"
