"""glibc's malloc set up for a training loop that runs in a thread, as a Ray Train worker's does.

Ray Train V2 runs the training function in a thread of the worker actor, and
glibc gives every thread but the main one its own arena. With glibc's defaults
such an arena hands the step's freed activations back to the kernel (trimming
its heaps, unmapping large blocks), so the next step faults every page in
again: a dcgan step at batch 64 took about 5,000 minor page faults in a Ray
Train worker, against none in a process's main thread, and ran at 0.68 of its
speed. Keeping freed memory in the arena makes the thread as fast as the main
thread (``benchmarks/trainer_overhead.py --section allocator``). The cost is
that a worker's resident memory stays at its high-water mark.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt's option numbers, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

RETAINING_MALLOC = (
    (M_MMAP_THRESHOLD, 32 << 20),  # glibc's largest: blocks up to 32 MiB come from the arena, not their own mmap
    (M_TRIM_THRESHOLD, 1 << 30),  # trim an arena's top only once 1 GiB lies free there
    (M_TOP_PAD, 64 << 20),  # a thread arena's heaps are 64 MiB: padding that much keeps a freed heap mapped
)


def keep_freed_memory() -> bool:
    """Make this process's malloc keep freed memory for reuse; False where the C library is not glibc.

    Process-wide: it covers every arena, those of threads already running included.
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # musl, macOS, Windows: no mallopt, and a different allocator
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(option, value) == 1 for option, value in RETAINING_MALLOC)
