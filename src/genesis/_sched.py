"""Scheduler hints for the event loop's thread (Linux): a short time slice, or a real-time
priority where the process may take one.

Linux 6.6+ schedules ordinary threads with EEVDF, which picks the runnable thread with the
earliest virtual deadline, ``vruntime + slice / weight``. Since 6.12 a thread may ask for its
own slice (``sched_setattr`` with ``sched_runtime`` on a ``SCHED_OTHER`` thread, 0.1-100 ms,
no privilege needed). An event loop runs in many short bursts (a callback, then back to
``epoll``); with a short slice each wake-up gets an early deadline, so the loop thread runs
soon after its socket becomes readable instead of waiting behind a CPU-bound thread's full
slice. Its share of the CPU does not change (that is the nice value's business), only how
soon it runs. On other systems, or older kernels, the call does nothing.

The short slice still leaves the loop waiting in the run queue when every core is busy (on 2
cores with the load generator, the fake model and the other worker beside it, two fifths of
the stalled samples' time in ``benchmarks/service_load.py``). :func:`request_realtime` gives
the loop thread ``SCHED_FIFO``: it preempts every ordinary thread the moment it wakes, and as
the loop sleeps in ``epoll`` whenever it has nothing to do (the CPU work is in the executor) it
takes only the CPU its callbacks need; the kernel's real-time throttling
(``sched_rt_runtime_us``, 95% by default) bounds even a runaway. It needs ``CAP_SYS_NICE`` or
an ``RLIMIT_RTPRIO`` allowance (root has both unless a container drops them); refused, it does
nothing. ``SCHED_RESET_ON_FORK`` goes with it, so the threads the loop thread starts (the
executor's, anyio's, the default executor's) begin as ordinary threads, not real-time ones.
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


def request_realtime(priority: int) -> bool:
    """Make the calling thread ``SCHED_FIFO`` at ``priority`` (1-99), with the threads it
    starts afterwards ordinary; True when the kernel took it. Best effort: False (logged at
    info, with what is missing) where it is refused or not supported."""
    policy = getattr(os, "SCHED_FIFO", None)
    if policy is None or not 1 <= priority <= 99:
        return False
    try:
        os.sched_setscheduler(0, policy | os.SCHED_RESET_ON_FORK, os.sched_param(priority))
    except OSError as exc:
        logger.info(
            "server.loop_rt_priority %d refused (%s): the event loop runs as an ordinary "
            "thread; allow it with CAP_SYS_NICE or `ulimit -r %d`, or set 0 to stop asking",
            priority,
            exc.strerror or exc,
            priority,
        )
        return False
    return True


def realtime_priority() -> int:
    """The calling thread's real-time priority (0: an ordinary thread)."""
    if not hasattr(os, "sched_getscheduler"):
        return 0
    policy = os.sched_getscheduler(0) & ~getattr(os, "SCHED_RESET_ON_FORK", 0)
    if policy not in (getattr(os, "SCHED_FIFO", -1), getattr(os, "SCHED_RR", -1)):
        return 0
    return int(os.sched_getparam(0).sched_priority)


def ordinary_thread() -> None:
    """Make the calling thread an ordinary (``SCHED_OTHER``) one again, keeping its nice."""
    if realtime_priority() and hasattr(os, "sched_setscheduler"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


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
    started from may have passed on), as an ordinary thread even if that one was real-time."""
    ordinary_thread()
    if hasattr(os, "setpriority"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    request_slice(0)


def _syscalls() -> tuple[int, int] | None:
    """This machine's (sched_setattr, sched_getattr) numbers; None off Linux."""
    return _SYSCALLS.get(platform.machine()) if sys.platform.startswith("linux") else None


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)
