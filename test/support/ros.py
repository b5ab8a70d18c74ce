"""Helpers for the ROS tests (no tests here): tiny checkpoints and a node-under-test harness.

``make_text_checkpoint`` builds a tiny late-fusion VLAModel whose choice is decided by the
instruction, by construction: the action MLP's last layer is zero, so an action's embedding
is the projection of its description's text features, and that projection is the same layer
the query uses for the instruction (the image projection is scaled down to a small nudge).
An instruction equal to an action's description therefore has cosine 1 with that action and
less with every other one, so the expected answer is known before the node runs.
"""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')

from rclpy.executors import SingleThreadedExecutor  # noqa: E402

# (name, description = the instruction that selects it, params, twist)
TEXT_ACTIONS = (
    ('pick_red', 'pick up the red cube', [1.0, 0.0, 0.2], None),
    ('push_blue', 'push the blue ball left', [0.0, 1.0, 0.4], ((0.1, 0.0, 0.0), (0.0, 0.0, 0.5))),
    ('wait', 'stop and wait', [0.0, 0.0, 0.5], None),
    ('grab_purple', 'grab the purple cube', [1.0, 0.0, 0.8], None),
)
PARAM_NAMES = ['grasp', 'push', 'x']


def make_text_checkpoint(root) -> str:
    """Save the instruction-decides tiny model (see the module docstring); return its dir."""
    import torch

    from support.models import make_tiny_bert, tiny_vla_config
    from vla_embedding_ros.model.vla_model import VLAModel
    from vla_embedding_ros.selection import Action, ActionLibrary, ActionSelector, Twist

    root = str(root)
    torch.manual_seed(0)
    model = VLAModel(tiny_vla_config(text_path=make_tiny_bert(os.path.join(root, 'bert')),
                                     fusion='late', param_dim=len(PARAM_NAMES),
                                     use_description=True))
    with torch.no_grad():
        model.action.mlp[-1].weight.zero_()
        model.action.mlp[-1].bias.zero_()
        model.fusion.vision_proj.weight.mul_(0.2)
        model.fusion.vision_proj.bias.zero_()
        model.action.description_proj.load_state_dict(model.fusion.text_proj.state_dict())
    ckpt = os.path.join(root, 'ckpt')
    model.save_pretrained(ckpt)
    actions = [Action(n, d, np.array(p, np.float32), Twist(*t) if t else None)
               for n, d, p, t in TEXT_ACTIONS]
    ActionLibrary(actions, PARAM_NAMES).to_yaml(os.path.join(ckpt, 'actions.yaml'))
    # The construction must hold through the real loading path, or every test is meaningless.
    selector = ActionSelector.from_pretrained(ckpt, device='cpu')
    for name, instruction, _, _ in TEXT_ACTIONS:
        assert selector.select(frame(0), instruction).name == name
    return ckpt


def make_tabletop_checkpoint(root) -> str:
    """A tiny untrained VLAModel over the 80-action tabletop library (for loop mechanics)."""
    import torch

    from support.models import make_tiny_bert, tiny_vla_config
    from vla_embedding_ros.data.tabletop import write_action_library
    from vla_embedding_ros.model.vla_model import VLAModel

    root = str(root)
    torch.manual_seed(0)
    model = VLAModel(tiny_vla_config(text_path=make_tiny_bert(os.path.join(root, 'bert')),
                                     fusion='late', param_dim=7))
    ckpt = os.path.join(root, 'ckpt')
    model.save_pretrained(ckpt)
    write_action_library(os.path.join(ckpt, 'actions.yaml'))
    return ckpt


def frame(seed: int, height: int = 48, width: int = 64) -> np.ndarray:
    """A random RGB frame."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def image_msg(array: np.ndarray, stamp, frame_id: str = 'cam'):
    """An rgb8 Image with the given stamp."""
    from vla_embedding_ros.ros.image_conversion import numpy_to_image

    msg = numpy_to_image(array, 'rgb8')
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg


class Harness:
    """A fresh rclpy Context; the node under test spins in a background executor thread, a
    test node (publishers, subscriptions, clients) is spun from the test via ``spin_until``."""

    def __init__(self, name: str = 'ros_test_client'):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=int(os.environ['ROS_DOMAIN_ID']))
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.nodes_under_test = []
        # The node's own executor kind (see action_selector_node.main): rclpy 9's
        # MultiThreadedExecutor delivers messages hundreds of ms late on a 2-core VM.
        self._bg = SingleThreadedExecutor(context=self.context)
        self._thread = None

    def start(self, node):
        """Spin ``node`` in the background executor thread."""
        self.nodes_under_test.append(node)
        self._bg.add_node(node)
        if self._thread is None:
            self._thread = threading.Thread(target=self._bg.spin, daemon=True)
            self._thread.start()
        return node

    def spin_until(self, condition, timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while not condition() and time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.02)
        return bool(condition())

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.02)

    def now(self):
        return self.node.get_clock().now().to_msg()

    def close(self) -> None:
        self._bg.shutdown(timeout_sec=2.0)
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        for node in self.nodes_under_test:
            node.destroy_node()
        self.node.destroy_node()
        self.executor.shutdown()
        rclpy.try_shutdown(context=self.context)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
