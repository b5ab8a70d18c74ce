"""A hang is a failure with a name: the report pytest-timeout's thread method writes when a
test runs past its limit, plus what that report cannot see.

pytest-timeout (``timeout_method = thread``, setup.cfg) dumps every *Python* thread's stack
and ends the run with exit status 1. The threads that spin in a DDS hang are Fast DDS's own
C++ threads, which Python's dump does not list, so the report here adds the test's name, a
table of every native thread (name, state, scheduling policy and the CPU it used in the last
second: a spinning thread shows ~100%) and, where gdb is installed, the native stacks of the
busy ones.

That report runs in a Python thread, so it needs the GIL; a hang in which a C extension holds
the GIL forever (seen once: two Fast DDS async threads spinning while rclpy held it) would never
be reported and the run would hang until CI's limit. :data:`BACKSTOP_S` later, faulthandler's
own watchdog (a C thread that needs no GIL) dumps every Python thread's stack, the hung test's
frame among them, and ends the process with status 1.
"""
from __future__ import annotations

import faulthandler
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

CLOCK_TICKS = os.sysconf('SC_CLK_TCK')
POLICIES = {0: 'OTHER', 1: 'FIFO', 2: 'RR', 3: 'BATCH', 5: 'IDLE'}
BUSY_PERCENT = 50.0
BACKSTOP_S = 120.0     # after the test's limit: the report above had its chance
BACKSTOP_ENV = 'VLA_TEST_HANG_BACKSTOP_S'   # tests of this plugin shorten it


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item, settings):
    """The thread method's timer, with report_and_exit in place of the plugin's own."""
    if settings.method != 'thread':
        return None
    timer = threading.Timer(settings.timeout, report_and_exit, (item, settings))
    timer.name = f'pytest-timeout {item.nodeid}'
    timer.daemon = True

    def cancel():
        faulthandler.cancel_dump_traceback_later()
        timer.cancel()
        timer.join()

    item.cancel_timeout = cancel
    timer.start()
    sys.stderr.flush()
    backstop = float(os.environ.get(BACKSTOP_ENV, BACKSTOP_S))
    faulthandler.dump_traceback_later(settings.timeout + backstop, exit=True,
                                      file=_terminal_fd(item))
    return True


def _terminal_fd(item) -> int:
    """The run's real stderr: while a test runs, fd 2 is pytest's capture file, which an exit
    from the watchdog would leave unread (pytest keeps the original in its fd capture)."""
    capman = item.config.pluginmanager.getplugin('capturemanager')
    err = getattr(getattr(capman, '_global_capturing', None), 'err', None)
    saved = getattr(err, 'targetfd_save', None)
    return saved if isinstance(saved, int) else sys.__stderr__.fileno()


def report_and_exit(item, settings) -> None:
    """Write the hang report for ``item`` to the terminal and end the run (status 1): the
    hung test cannot be stopped from another thread, and the next test would share its
    stuck threads."""
    import pytest_timeout

    terminal = item.config.get_terminal_writer()
    title = f'TIMEOUT {item.nodeid} ran past {settings.timeout:g} s'
    try:
        capman = item.config.pluginmanager.getplugin('capturemanager')
        if capman:
            capman.suspend_global_capture(item)
            out, err = capman.read_global_capture()
            for name, text in (('stdout', out), ('stderr', err)):
                if text:
                    terminal.sep('~', f'captured {name}')
                    terminal.write(text)
        terminal.sep('+', title)
        busy, table = native_threads()
        terminal.sep('~', 'native threads (CPU % over the last second)')
        terminal.write(table + '\n')
        terminal.write(native_stacks(busy))
        pytest_timeout.dump_stacks(terminal)
        terminal.sep('+', title)
    except Exception:  # the exit below must happen whatever the report hit
        import traceback
        traceback.print_exc()
    finally:
        terminal.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


def _thread_stats() -> dict[int, tuple[str, str, int, str]]:
    """{tid: (name, state, cpu ticks, scheduling policy)} for this process's threads."""
    stats = {}
    for tid in os.listdir('/proc/self/task'):
        try:
            with open(f'/proc/self/task/{tid}/stat') as handle:
                raw = handle.read()
        except OSError:  # the thread ended meanwhile
            continue
        name = raw[raw.index('(') + 1:raw.rindex(')')]
        fields = raw[raw.rindex(')') + 2:].split()   # fields[0] is stat field 3 (state)
        ticks = int(fields[11]) + int(fields[12])     # utime + stime
        policy = int(fields[38])                       # stat field 41
        stats[int(tid)] = (name, fields[0], ticks, POLICIES.get(policy, str(policy)))
    return stats


def native_threads(interval: float = 1.0) -> tuple[list[int], str]:
    """(busy thread ids, a table of every thread), busiest first."""
    if not os.path.isdir('/proc/self/task'):
        return [], '(no /proc: native threads not listed)'
    before = _thread_stats()
    time.sleep(interval)
    after = _thread_stats()
    rows = []
    for tid, (name, state, ticks, policy) in after.items():
        used = ticks - before.get(tid, (None, None, ticks))[2]
        rows.append((100.0 * used / CLOCK_TICKS / interval, tid, name, state, policy))
    rows.sort(reverse=True)
    lines = [f'{"cpu%":>6} {"tid":>8}  state policy  name']
    lines += [f'{cpu:6.0f} {tid:>8}  {state:<5} {policy:<6}  {name}'
              for cpu, tid, name, state, policy in rows]
    return [tid for cpu, tid, *_ in rows if cpu >= BUSY_PERCENT], '\n'.join(lines)


def native_stacks(tids: list[int]) -> str:
    """gdb's backtraces of the given threads ('' without gdb or busy threads)."""
    gdb = shutil.which('gdb')
    if not tids or gdb is None:
        return ''
    try:
        out = subprocess.run([gdb, '-p', str(os.getpid()), '-batch', '-nx',
                              '-ex', 'thread apply all bt 25'],
                             capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired) as err:
        return f'(gdb failed: {err})\n'
    # Keep the blocks of the busy threads: "Thread 7 (Thread 0x... (LWP 1234) ...):"
    blocks = out.split('\nThread ')
    wanted = [b for b in blocks[1:] if any(f'(LWP {tid})' in b.split('\n', 1)[0]
                                            for tid in tids)]
    return ''.join(f'--- native stack of busy thread {b}\n' for b in wanted)
