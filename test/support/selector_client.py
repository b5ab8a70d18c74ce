"""The in-process selector node tests' client: publishes the node's inputs (instruction,
one or more cameras, candidates) and records every output it publishes."""
import json

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray, String

from support.ros import Harness, frame, image_msg
from vla_embedding_ros.ros.action_selector_node import LATCHED_QOS, SENSOR_QOS


class Client:
    """Publishers for the node's inputs and recorders of all its outputs."""

    def __init__(self, h: Harness, image_topics=('image',)):
        n = h.node
        self.h = h
        self.instruction = n.create_publisher(String, 'instruction', LATCHED_QOS)
        self.images = [n.create_publisher(Image, t, SENSOR_QOS) for t in image_topics]
        self.candidates = n.create_publisher(Float32MultiArray, 'candidates', 10)
        self.actions, self.scores, self.vectors, self.twists, self.diags = [], [], [], [], []
        n.create_subscription(String, '/action_selector/selected_action',
                              lambda m: self.actions.append(m.data), 10)
        n.create_subscription(String, '/action_selector/scores',
                              lambda m: self.scores.append(json.loads(m.data)), 10)
        n.create_subscription(Float32MultiArray, '/action_selector/action_vector',
                              self.vectors.append, 10)
        n.create_subscription(Twist, 'cmd_vel', self.twists.append, 10)
        n.create_subscription(DiagnosticArray, '/diagnostics', self.diags.append, 10)

    def wait_connected(self, node):
        assert self.h.spin_until(lambda: node.state == 'active', 30.0), node.state
        assert self.h.spin_until(lambda: all(p.get_subscription_count() for p in self.images)
                                 and self.instruction.get_subscription_count())

    def send(self, instruction=None, seed=0, camera=0, array=None):
        """Publish (instruction and) one frame; return the frame's stamp."""
        if instruction is not None:
            self.instruction.publish(String(data=instruction))
            self.h.spin_for(0.1)
        stamp = self.h.now()
        self.images[camera].publish(image_msg(frame(seed) if array is None else array, stamp))
        return stamp

    def decide(self, instruction=None, seed=0, timeout=5.0):
        """Send a frame and wait for the scores of a decision on that frame."""
        stamp = self.send(instruction, seed)
        key = {'sec': stamp.sec, 'nanosec': stamp.nanosec}
        assert self.h.spin_until(lambda: any(s['stamp'] == key for s in self.scores),
                                 timeout), f'no decision on frame {key}'
        return stamp, [s for s in self.scores if s['stamp'] == key][-1]
