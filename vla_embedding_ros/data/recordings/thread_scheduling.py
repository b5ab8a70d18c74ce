"""Keep a library call from leaving this process's threads at real-time priority.

SVT-AV1 (the AV1 encoder LeRobot datasets use) switches the thread that opens an encoder to
``SCHED_FIFO`` priority 99 whenever it is allowed to, which is whenever the process runs as
root or with ``CAP_SYS_NICE``: most robot containers. Its worker threads inherit that, and so
does every thread the caller starts afterwards (DDS's, an executor's). A busy real-time thread
at priority 99 starves every normal thread on its core: a ROS executor then stops delivering
messages and the process looks hung. Measured here as root on 2 cores: the test suite hung in
the first DDS test after a LeRobot AV1 round trip, two Fast DDS threads at FIFO 99 spinning.
SVT-AV1 has no option to turn this off, so :func:`keeping_thread_scheduling` puts the
caller's policy back after the call, and gives it to the threads the call started too.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

_TASKS = '/proc/self/task'
_REALTIME = {getattr(os, 'SCHED_FIFO', -1), getattr(os, 'SCHED_RR', -1)}


def _thread_ids() -> set[int]:
    try:
        return {int(tid) for tid in os.listdir(_TASKS)}
    except OSError:
        return set()


@contextmanager
def keeping_thread_scheduling():
    """Run the body, then restore the calling thread's scheduling policy and priority, and
    give threads started during the body that policy if they were made real-time.

    A no-op where the platform has no ``sched_getscheduler`` (macOS, Windows).
    """
    if not hasattr(os, 'sched_getscheduler'):
        yield
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    before = _thread_ids()
    try:
        yield
    finally:
        if os.sched_getscheduler(0) != policy or os.sched_getparam(0) != param:
            os.sched_setscheduler(0, policy, param)
        if policy not in _REALTIME:
            for tid in _thread_ids() - before:
                try:
                    if os.sched_getscheduler(tid) in _REALTIME:
                        os.sched_setscheduler(tid, policy, param)
                except OSError:   # the thread ended meanwhile
                    pass
