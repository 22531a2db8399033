"""Scheduler hints for the event loop's thread (Linux): a short time slice.

Linux 6.6+ schedules ordinary threads with EEVDF, which picks the runnable thread with the
earliest virtual deadline, ``vruntime + slice / weight``. Since 6.12 a thread may ask for its
own slice (``sched_setattr`` with ``sched_runtime`` on a ``SCHED_OTHER`` thread, 0.1-100 ms,
no privilege needed). An event loop runs in many short bursts (a callback, then back to
``epoll``); with a short slice each wake-up gets an early deadline, so the loop thread runs
soon after its socket becomes readable instead of waiting behind a CPU-bound thread's full
slice. Its share of the CPU does not change (that is the nice value's business), only how
soon it runs. On other systems, or older kernels, the call does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import platform
import sys
import threading

logger = logging.getLogger(__name__)

# (sched_setattr, sched_getattr) syscall numbers by machine (neither has a libc wrapper).
_SYSCALLS = {"x86_64": (314, 315), "aarch64": (274, 275)}
_SCHED_OTHER = 0


class _SchedAttr(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("sched_policy", ctypes.c_uint32),
        ("sched_flags", ctypes.c_uint64),
        ("sched_nice", ctypes.c_int32),
        ("sched_priority", ctypes.c_uint32),
        ("sched_runtime", ctypes.c_uint64),
        ("sched_deadline", ctypes.c_uint64),
        ("sched_period", ctypes.c_uint64),
    ]


BACKGROUND_NICE = 10


def request_slice(microseconds: float) -> bool:
    """Ask the scheduler for a ``microseconds`` time slice for the calling thread (0: the
    kernel's default again); True when the kernel took it. Best effort: False (logged at
    debug) where it is not supported. Threads the caller starts afterwards inherit it."""
    numbers = _syscalls()
    if numbers is None:
        return False
    attr = _SchedAttr(
        size=ctypes.sizeof(_SchedAttr),
        sched_policy=_SCHED_OTHER,
        # the thread's own nice value, unchanged (sched_setattr sets both at once)
        sched_nice=os.getpriority(os.PRIO_PROCESS, threading.get_native_id()),
        sched_runtime=int(microseconds * 1000),
    )
    if _libc().syscall(numbers[0], 0, ctypes.byref(attr), 0) != 0:
        logger.debug(
            "sched_setattr (slice %s us) refused: errno %d", microseconds, ctypes.get_errno()
        )
        return False
    return True


def current_slice_us() -> float | None:
    """The calling thread's requested slice in microseconds (None where unknown)."""
    numbers = _syscalls()
    if numbers is None:
        return None
    attr = _SchedAttr(size=ctypes.sizeof(_SchedAttr))
    if _libc().syscall(numbers[1], 0, ctypes.byref(attr), ctypes.sizeof(_SchedAttr), 0) != 0:
        return None
    return float(attr.sched_runtime) / 1000.0


def background_thread(nice: int = BACKGROUND_NICE) -> None:
    """Make the calling thread yield to the event loop's: nice ``nice`` (Linux schedules each
    thread with its own) and the default slice (not the short one the loop thread it was
    started from may have passed on)."""
    if hasattr(os, "setpriority"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    request_slice(0)


def _syscalls() -> tuple[int, int] | None:
    """This machine's (sched_setattr, sched_getattr) numbers; None off Linux."""
    return _SYSCALLS.get(platform.machine()) if sys.platform.startswith("linux") else None


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)
