"""What a test may not leave behind: Python threads it started, rclpy contexts it initialised.

A ROS test that leaves its executor thread spinning, or a context never shut down (its DDS
participant and Fast DDS's threads with it), burdens every later test and can hang one far
from the cause. conftest.py snapshots before each test (and each module) and fails the one
that leaked, naming the threads and where they are.
"""
from __future__ import annotations

import sys
import threading
import time
import traceback
import weakref

# Every rclpy Context made in this process; filled once rclpy is imported (see track_contexts).
_CONTEXTS: weakref.WeakSet = weakref.WeakSet()
# Threads may take a moment to return after a clean shutdown asked them to.
GRACE_S = 5.0
# Process-wide threads a library starts once and keeps by design (tqdm's progress monitor).
LIBRARY_THREADS = {'tqdm_monitor'}


def track_contexts() -> None:
    """Record every rclpy Context from now on (a no-op without rclpy or when done already)."""
    context_module = sys.modules.get('rclpy.context')
    if context_module is None or getattr(context_module.Context, '_tracked_by_tests', False):
        return
    cls = context_module.Context
    original_init = cls.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        _CONTEXTS.add(self)

    cls.__init__ = init
    cls._tracked_by_tests = True
    from rclpy.utilities import get_default_context
    _CONTEXTS.add(get_default_context())


def _live_contexts() -> set:
    live = set()
    for context in list(_CONTEXTS):
        try:
            if context.ok():
                live.add(context)
        except Exception:  # a context half torn down is not live
            pass
    return live


class Snapshot:
    """The threads alive and the contexts initialised now; ``leaks()`` says what came since."""

    def __init__(self):
        track_contexts()
        self.threads = set(threading.enumerate())
        self.contexts = _live_contexts()

    def leaks(self) -> str:
        """'' when nothing was left behind; else what was, with each thread's stack. Contexts
        left initialised are shut down here, so the tests after this one run clean."""
        end = time.monotonic() + GRACE_S
        while (threads := self._new_threads()) and time.monotonic() < end:
            time.sleep(0.05)
        contexts = _live_contexts() - self.contexts
        for context in contexts:
            context.try_shutdown()
        if not threads and not contexts:
            return ''
        frames = sys._current_frames()
        lines = [f'{len(contexts)} rclpy context(s) left initialised (now shut down)'] \
            if contexts else []
        for thread in threads:
            lines.append(f'thread {thread.name!r} (daemon={thread.daemon}) still running:')
            frame = frames.get(thread.ident)
            if frame is not None:
                lines += ['  ' + line for line in ''.join(traceback.format_stack(frame, 6))
                          .rstrip().splitlines()]
        return '\n'.join(lines)

    def _new_threads(self) -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t not in self.threads and t.is_alive()
                and t.name not in LIBRARY_THREADS and not t.name.startswith('pytest-timeout ')]
