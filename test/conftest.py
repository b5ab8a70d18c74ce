"""Shared test set-up: isolate DDS traffic and make ament_index find the venv; fail the test
that leaves the process real-time, or leaves threads or rclpy contexts behind; turn a hang
into a named failure (support/hangs.py). Helpers the tests share live in support/."""
import gc
import os
import sys

# A distinct ROS_DOMAIN_ID is the only thing that isolates concurrent runs on one machine;
# `make test` picks one per run, this covers a bare `pytest`.
os.environ.setdefault('ROS_DOMAIN_ID', str(20 + os.getpid() % 80))
os.environ.setdefault('AMENT_PREFIX_PATH', sys.prefix)
os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
# Nothing in the suite may reach a model hub.
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')


import pytest  # noqa: E402

from support.leaks import Snapshot  # noqa: E402

# The per-test limit itself is in setup.cfg (timeout, timeout_method).
pytest_plugins = ['support.hangs']


@pytest.fixture(scope='module')
def text_path(tmp_path_factory):
    """A tiny BERT saved with save_pretrained (the training tests' frozen text encoder)."""
    from support.models import make_tiny_bert
    return make_tiny_bert(tmp_path_factory.mktemp('bert'))


@pytest.fixture
def repo_cwd(monkeypatch, request):
    """Run in the repository root, where the training configs' relative paths resolve."""
    monkeypatch.chdir(request.config.rootpath)


@pytest.fixture(autouse=True)
def no_test_leaves_the_process_real_time():
    """A test thread left at SCHED_FIFO/RR (SVT-AV1 does this to whoever opens it as root)
    hands real-time priority to every thread started later; a busy DDS thread then starves
    the executors and a later ROS test hangs, far from the cause. Fail the test that did it
    and put the thread back, so the rest of the suite still runs."""
    yield
    if not hasattr(os, 'sched_getscheduler'):
        return
    policy, priority = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
    if policy in (os.SCHED_FIFO, os.SCHED_RR):
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        pytest.fail(f'this test left the main thread real-time (policy {policy}, '
                    f'priority {priority})')


def _uses_ros(request) -> bool:
    module = getattr(request, 'module', None)
    return module is not None and 'rclpy' in vars(module)


@pytest.fixture(autouse=True)
def no_ros_test_leaves_threads_or_contexts(request):
    """A ROS test must stop what it started: its executor threads and its rclpy contexts (a
    live context keeps a DDS participant and Fast DDS's threads running into later tests)."""
    if not _uses_ros(request):
        yield
        return
    before = Snapshot()
    yield
    if leaks := before.leaks():
        pytest.fail(f'{request.node.nodeid} left behind:\n{leaks}', pytrace=False)


@pytest.fixture(scope='module', autouse=True)
def no_ros_module_leaves_threads_or_contexts(request):
    """The same for what a ROS module's fixtures start and stop (a node process's client)."""
    if not _uses_ros(request):
        yield
        return
    before = Snapshot()
    yield
    # A closed Harness's DDS participant (~12 Fast DDS threads) lives until the cyclic
    # collector frees it; without this a run accumulates ~11 idle participants in one domain
    # (26 -> 147 native threads). Once per module: ~150 ms, not per test.
    gc.collect()
    if leaks := before.leaks():
        pytest.fail(f'{request.module.__name__}\'s fixtures left behind:\n{leaks}',
                    pytrace=False)
