"""The reliability tests' client: publishes every input kind (raw and compressed images,
instructions, candidates) under a namespace, reads the node's rejection counts from
/diagnostics, and floods a topic at a set rate."""
import json
import time

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float32MultiArray, String

from support.ros import Harness, frame, image_msg
from vla_embedding_ros.ros.action_selector_node import LATCHED_QOS, SENSOR_QOS

RED = 'pick up the red cube'


class Client:
    """Publishers for every input, recorders of scores and diagnostics."""

    def __init__(self, h: Harness, ns: str = ''):
        n = h.node
        self.h = h
        self.image = n.create_publisher(Image, f'{ns}image', SENSOR_QOS)
        self.compressed = n.create_publisher(CompressedImage, f'{ns}image/compressed',
                                             SENSOR_QOS)
        self.instruction = n.create_publisher(String, f'{ns}instruction', LATCHED_QOS)
        self.candidates = n.create_publisher(Float32MultiArray, f'{ns}candidates', 10)
        self.scores, self.diags = [], []
        self.node_name = f'{ns}action_selector'.strip('/')
        n.create_subscription(String, f'/{self.node_name}/scores',
                              lambda m: self.scores.append(json.loads(m.data)), 100)
        n.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 10)

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.hardware_id == "/" + self.node_name:
                self.diags.append({kv.key: kv.value for kv in status.values})

    def say(self, text: str) -> None:
        self.instruction.publish(String(data=text))
        self.h.spin_for(0.1)

    def decide(self, instruction=RED, seed=0, timeout=10.0) -> dict:
        """Send (instruction and) a good frame; return the scores of the decision on it."""
        if instruction is not None:
            self.say(instruction)
        stamp = self.h.now()
        self.image.publish(image_msg(frame(seed), stamp))
        key = {'sec': stamp.sec, 'nanosec': stamp.nanosec}
        assert self.h.spin_until(lambda: any(s['stamp'] == key for s in self.scores),
                                 timeout), 'the node stopped answering good frames'
        return [s for s in self.scores if s['stamp'] == key][-1]

    def rejected(self) -> dict[str, int]:
        if not self.diags or self.diags[-1]['rejected'] == 'none':
            return {}
        pairs = (p.split('=') for p in self.diags[-1]['rejected'].split(', '))
        return {k: int(v) for k, v in pairs}

    def wait_rejected(self, kind: str, at_least: int, timeout=5.0) -> int:
        self.h.spin_until(lambda: self.rejected().get(kind, 0) >= at_least, timeout)
        return self.rejected().get(kind, 0)

    def flood(self, publish, seconds: float, rate: float = 1000.0) -> tuple[int, float]:
        """Call ``publish(i)`` at ``rate`` Hz for ``seconds``; return (count, achieved Hz)."""
        start, i = time.monotonic(), 0
        while (now := time.monotonic()) - start < seconds:
            if i < (now - start) * rate:
                publish(i)
                i += 1
            else:
                self.h.executor.spin_once(timeout_sec=0.0005)
        return i, i / (time.monotonic() - start)


def selector_overrides(ckpt, **params):
    """An in-process node's parameters matching the node process's: no rate limit, no image
    age limit, diagnostics every 0.2 s."""
    base = {'model_path': ckpt, 'device': 'cpu', 'max_rate_hz': 0.0, 'max_image_age_s': 0.0,
            'diagnostics_period_s': 0.2, **params}
    return [Parameter(k, value=v) for k, v in base.items()]
