"""A two-camera action_selector over real DDS when one camera stops (issue 20): with
``missing_camera: decide`` it keeps deciding with the camera it has and names the missing one
in ~/scores and /diagnostics; with ``abstain`` it abstains naming the camera. Frames are the
procedural renderer's top view and its oblique view (data/tabletop/cameras.py); the model is
the shipped one."""
import json

import pytest

rclpy = pytest.importorskip('rclpy')

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from support.ros import Harness, image_msg  # noqa: E402
from vla_embedding_ros.data.tabletop import TabletopGenerator  # noqa: E402
from vla_embedding_ros.data.tabletop.cameras import render_views  # noqa: E402
from vla_embedding_ros.ros.action_selector_node import (  # noqa: E402
    LATCHED_QOS,
    SENSOR_QOS,
    ActionSelectorNode,
)
from vla_embedding_ros.ros.selector_params import default_model_path  # noqa: E402
from vla_embedding_ros.selection import ActionSelector  # noqa: E402

TOPICS = ('cam_top', 'cam_oblique')
TIMEOUT_S = 0.5


@pytest.fixture(scope='module')
def scene():
    sample = TabletopGenerator(split='val', seed=21).sample()
    return sample, render_views(sample.image, ('top', 'oblique'))


class TwoCameras:
    def __init__(self, h: Harness):
        n = h.node
        self.h = h
        self.instruction = n.create_publisher(String, 'instruction', LATCHED_QOS)
        self.cams = [n.create_publisher(Image, t, SENSOR_QOS) for t in TOPICS]
        self.scores, self.diags = [], []
        n.create_subscription(String, '/action_selector/scores',
                              lambda m: self.scores.append(json.loads(m.data)), 10)
        n.create_subscription(DiagnosticArray, '/diagnostics',
                              lambda m: self.diags.append(m), 10)

    def wait_connected(self, node):
        assert self.h.spin_until(lambda: node.state == 'active', 60.0), node.state
        assert self.h.spin_until(lambda: all(p.get_subscription_count() for p in self.cams)
                                 and self.instruction.get_subscription_count())

    def decide(self, views, cameras=(0, 1), timeout=10.0):
        """Publish the given cameras' frames (the trigger camera, 0, last) and wait for the
        decision on the trigger frame."""
        stamp = self.h.now()
        for c in sorted(cameras, reverse=True):
            self.cams[c].publish(image_msg(views[c], stamp, TOPICS[c]))
            if c:
                self.h.spin_for(0.05)
        key = {'sec': stamp.sec, 'nanosec': stamp.nanosec}
        assert self.h.spin_until(lambda: any(s['stamp'] == key for s in self.scores),
                                 timeout), f'no decision on frame {key}'
        return [s for s in self.scores if s['stamp'] == key][-1]

    def status(self):
        status = self.diags[-1].status[0]
        return status, {kv.key: kv.value for kv in status.values}


def _node(h, **params):
    overrides = [Parameter('device', value='cpu'), Parameter('max_rate_hz', value=0.0),
                 Parameter('image_topics', value=list(TOPICS)),
                 Parameter('camera_timeout_s', value=TIMEOUT_S),
                 Parameter('diagnostics_period_s', value=0.2)]
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    return h.start(ActionSelectorNode(context=h.context, parameter_overrides=overrides))


def test_decide_keeps_deciding_without_the_silent_camera_and_says_which(scene):
    sample, views = scene
    selector = ActionSelector.from_pretrained(default_model_path(), device='cpu')
    with Harness() as h:
        client = TwoCameras(h)
        node = _node(h, missing_camera='decide')
        client.wait_connected(node)
        client.instruction.publish(String(data=sample.instruction))
        h.spin_for(0.1)
        both = client.decide(views)
        assert not both['abstained'] and both['cameras'] == 2
        assert both['missing_cameras'] == []
        expected = selector.select(list(views), sample.instruction)
        assert both['top_scores'] == pytest.approx(expected.top_scores, abs=1e-4)

        h.spin_for(TIMEOUT_S + 0.3)            # the oblique camera stops publishing
        for _ in range(3):
            alone = client.decide(views, cameras=(0,))
            assert not alone['abstained'], alone['reason']
            assert alone['missing_cameras'] == ['cam_oblique'] and alone['cameras'] == 1
        assert alone['selected'] is not None
        # The node's decision is the selector's with camera 1 left out of the fusion.
        direct = selector.select([views[0]], sample.instruction, cameras=[0])
        assert alone['top_names'] == direct.top_names
        assert alone['top_scores'] == pytest.approx(direct.top_scores, abs=1e-4)
        assert alone['top_scores'] != pytest.approx(both['top_scores'], abs=1e-6)

        def without():
            counts = client.status()[1].get('decisions_without_camera', '') if client.diags \
                else ''
            return int(counts.split('cam_oblique=')[1]) if 'cam_oblique=' in counts else 0

        assert h.spin_until(lambda: without() >= 3, 5.0), without()
        status, values = client.status()
        assert values['missing_cameras'] == 'cam_oblique'
        assert 'deciding without camera(s) cam_oblique' in status.message

        # The camera comes back: both are fused again and nothing is reported missing.
        back = client.decide(views)
        assert back['missing_cameras'] == [] and back['cameras'] == 2
        assert back['top_scores'] == pytest.approx(both['top_scores'], abs=1e-4)


def test_abstain_names_the_silent_camera(scene):
    sample, views = scene
    with Harness() as h:
        client = TwoCameras(h)
        node = _node(h, missing_camera='abstain')
        client.wait_connected(node)
        client.instruction.publish(String(data=sample.instruction))
        h.spin_for(0.1)
        never = client.decide(views, cameras=(0,))   # the oblique camera never sent one
        assert never['abstained'] and "no frame yet from ['cam_oblique']" in never['reason']
        assert never['missing_cameras'] == ['cam_oblique']
        assert not client.decide(views)['abstained']
        h.spin_for(TIMEOUT_S + 0.3)
        stale = client.decide(views, cameras=(0,))
        assert stale['abstained'] and stale['selected'] is None
        assert 'cam_oblique' in stale['reason'] and 'camera_timeout_s' in stale['reason']
        assert h.spin_until(lambda: client.diags and 'cam_oblique' in client.status()[0].message,
                            5.0)
        assert client.status()[1]['decisions_without_camera'] == 'none'


def test_decide_with_onnxruntime_fails_configure_naming_the_backend():
    with Harness() as h:
        node = _node(h, missing_camera='decide', backend='onnxruntime')
        # The error is recorded before the lifecycle transition returns to unconfigured.
        assert h.spin_until(lambda: node.last_error and node.state == 'unconfigured', 30.0), \
            (node.state, node.last_error)
        assert 'missing_camera: decide needs backend torch' in node.last_error
