"""action_selector faults: broken checkpoints, CUDA that is not there, an exception inside
inference, and many deactivate/activate cycles. Real rclpy nodes over DDS (in-process: these
tests read the node's counters directly; lifecycle transitions go through its services)."""
import json
import os
import shutil
import threading

import pytest

rclpy = pytest.importorskip('rclpy')

from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from support.ros import Harness, frame, image_msg, make_text_checkpoint  # noqa: E402
from vla_embedding_ros.ros.action_selector_node import (  # noqa: E402
    LATCHED_QOS,
    SENSOR_QOS,
    ActionSelectorNode,
)

RED = 'pick up the red cube'


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    return make_text_checkpoint(tmp_path_factory.mktemp('reliability_faults'))


def rss_mb() -> float:
    with open('/proc/self/statm') as handle:
        return int(handle.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def selector(h: Harness, model_path: str, **params) -> ActionSelectorNode:
    base = {'model_path': model_path, 'device': 'cpu', 'max_rate_hz': 0.0,
            'max_image_age_s': 0.0, 'autostart': False, **params}
    return h.start(ActionSelectorNode(
        context=h.context, parameter_overrides=[Parameter(k, value=v) for k, v in base.items()]))


class Client:
    def __init__(self, h: Harness):
        self.h = h
        self.image = h.node.create_publisher(Image, 'image', SENSOR_QOS)
        self.instruction = h.node.create_publisher(String, 'instruction', LATCHED_QOS)
        self.scores = []
        h.node.create_subscription(String, '/action_selector/scores',
                                   lambda m: self.scores.append(json.loads(m.data)), 10)

    def decide(self, seed=0, timeout=10.0) -> dict:
        assert self.h.spin_until(lambda: self.image.get_subscription_count() > 0, timeout)
        self.instruction.publish(String(data=RED))
        self.h.spin_for(0.1)
        stamp = self.h.now()
        self.image.publish(image_msg(frame(seed), stamp))
        key = {'sec': stamp.sec, 'nanosec': stamp.nanosec}
        assert self.h.spin_until(lambda: any(s['stamp'] == key for s in self.scores),
                                 timeout), 'no decision on a good frame'
        return [s for s in self.scores if s['stamp'] == key][-1]


def lifecycle(h: Harness, node: ActionSelectorNode):
    """``go(transition) -> state``: transitions through the node's change_state service, as
    ``ros2 lifecycle set`` sends them, so they run on the executor thread that spins the node.
    Triggered from the test thread instead, a deactivate destroyed subscriptions while that
    executor was waiting on them; rclpy raised InvalidHandle there and the executor thread died
    (seen in CI: no decision after 100 cycles)."""
    client = h.node.create_client(ChangeState, f'/{node.get_name()}/change_state')
    assert client.wait_for_service(timeout_sec=10.0)
    ids = {'configure': Transition.TRANSITION_CONFIGURE,
           'activate': Transition.TRANSITION_ACTIVATE,
           'deactivate': Transition.TRANSITION_DEACTIVATE}

    def go(transition: str) -> str:
        future = client.call_async(ChangeState.Request(transition=Transition(id=ids[transition])))
        assert h.spin_until(future.done, 30.0), f'{transition}: no answer from change_state'
        return node.state

    return go


def _break_weights(model_dir):
    path = os.path.join(model_dir, 'model.safetensors')
    with open(path, 'r+b') as handle:  # a header length pointing past the end of the file
        handle.write(b'\xff' * 8)
    return path


def _mismatch_config(model_dir):
    path = os.path.join(model_dir, 'config.json')
    config = json.load(open(path))
    config['embed_dim'] = config['embed_dim'] * 2  # weights were saved for the other size
    json.dump(config, open(path, 'w'))
    return os.path.join(model_dir, 'model.safetensors')


def _remove_config(model_dir):
    path = os.path.join(model_dir, 'config.json')
    os.remove(path)
    return path


@pytest.mark.parametrize('damage', [_break_weights, _mismatch_config, _remove_config])
def test_broken_checkpoint_fails_configure_naming_the_file_then_recovers(ckpt, tmp_path,
                                                                          damage):
    model_dir = str(tmp_path / 'model')
    shutil.copytree(ckpt, model_dir)
    named = damage(model_dir)
    with Harness() as h:
        node = selector(h, model_dir)
        go = lifecycle(h, node)
        assert go('configure') == 'unconfigured'
        assert named in node.last_error, node.last_error
        assert node.stats.snapshot()['errors'] == {'configure': 1}
        # Fixed in place (same model_path): the next configure works and the node answers.
        shutil.rmtree(model_dir)
        shutil.copytree(ckpt, model_dir)
        assert go('configure') == 'inactive'
        assert go('activate') == 'active'
        assert Client(h).decide()['selected'] == 'pick_red'


def test_cuda_requested_without_cuda_is_a_clear_configure_error(ckpt):
    import torch
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA')
    with Harness() as h:
        node = selector(h, ckpt, device='cuda')
        go = lifecycle(h, node)
        assert go('configure') == 'unconfigured'
        assert "device 'cuda' was requested but CUDA is not available" in node.last_error
        # Set to cpu (allowed while unconfigured) and it configures.
        assert node.set_parameters([Parameter('device', value='cpu')])[0].successful
        assert go('configure') == 'inactive'


def test_an_exception_inside_inference_is_counted_and_the_next_frame_processed(ckpt):
    with Harness() as h:
        node = selector(h, ckpt)
        go = lifecycle(h, node)
        assert go('configure') == 'inactive'
        assert go('activate') == 'active'
        client = Client(h)
        client.decide(seed=1)
        # FAULT INJECTION (test only): the one place we patch production code, because no
        # well-formed input makes a healthy model raise. The patch is on this node's own
        # selector instance and fails exactly once, like a transient CUDA or driver error.
        real_select, calls = node.selector.select, []

        def failing_once(*args, **kwargs):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError('injected inference fault')
            return real_select(*args, **kwargs)

        node.selector.select = failing_once
        client.image.publish(image_msg(frame(2), h.now()))
        assert h.spin_until(lambda: node.stats.snapshot()['errors'].get('inference') == 1)
        assert 'injected inference fault' in node.stats.snapshot()['last_error']
        assert node._worker.is_alive()
        assert client.decide(seed=3)['selected'] == 'pick_red'
        assert len(calls) == 2


def test_100_deactivate_activate_cycles_leak_no_threads_or_memory(ckpt):
    with Harness() as h:
        node = selector(h, ckpt)
        go = lifecycle(h, node)
        assert go('configure') == 'inactive'

        def cycles(n):
            for _ in range(n):
                assert go('activate') == 'active'
                assert go('deactivate') == 'inactive'

        cycles(10)  # warm-up: first-use allocations of rclpy, DDS and torch
        # The threads themselves, not their count: one thread ending while another leaks would
        # leave the count unchanged.
        threads, rss = set(threading.enumerate()), rss_mb()
        cycles(100)
        growth = rss_mb() - rss
        new_threads = set(threading.enumerate()) - threads
        print(f'100 cycles: threads {len(threads)} -> {threading.active_count()}, '
              f'RSS growth {growth:+.1f} MiB')
        assert not new_threads, f'threads left behind: {sorted(t.name for t in new_threads)}'
        assert growth < 20, f'RSS grew {growth:.1f} MiB over 100 cycles'
        assert go('activate') == 'active'
        assert Client(h).decide()['selected'] == 'pick_red'
