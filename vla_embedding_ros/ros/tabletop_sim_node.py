"""tabletop_sim: the tabletop benchmark as a ROS 2 simulator for closed-loop runs.

Each episode draws a scene and an instruction from :class:`TabletopGenerator` (``split``,
``seed``), publishes the instruction (latched) and a camera stream of the scene (rendered at
``image_size``, upscaled with ``cv2.resize`` to ``camera_width`` x ``camera_height``, rgb8),
then waits for one action name on ``selected_action``. The action is applied with
``apply_action`` (pick lifts the object, a push moves it one cell), judged, and the result is
published; no answer within ``episode_timeout_s`` is a failure. Then the next episode starts.
Run as a program (``main``), it exits with status 0 after its last episode (``episodes`` > 0),
once its results are acknowledged, so a launch file can end the whole run on its exit.

With ``task: continuous`` the scenes come from :class:`ContinuousTabletopGenerator` (objects
anywhere on the table) and the simulator waits for a continuous action vector
``[one-hot primitive, x, y]`` on ``action_selector/action_vector`` (the selector's output in
``candidate_mode: sampled``) instead of a name; ``apply_vector`` judges it (the point on the
referred object, the asked primitive) and the result also carries the position error in object
radii.

Topics::

    publishes   camera/image_raw (sensor_msgs/Image)   instruction (std_msgs/String, latched)
                ~/episode_result (String JSON)   ~/success_rate (std_msgs/Float32, latched)
                /clock (rosgraph_msgs/Clock) when publish_clock is true
    subscribes  action_selector/selected_action (std_msgs/String): the selector's default output
                action_selector/action_vector (std_msgs/Float32MultiArray) with task continuous

With ``publish_clock`` the simulator owns time: ``/clock`` advances with wall time times
``real_time_factor`` and every stamp it publishes is that sim time; run the other nodes with
``use_sim_time:=true``.
"""
from __future__ import annotations

import json
import time

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.time import Time
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import Float32, Float32MultiArray, String

from ..data.tabletop import (
    SPLIT_NAMES,
    TabletopConfig,
    TabletopGenerator,
    apply_action,
    camera_frame,
)
from ..data.tabletop.continuous import (
    CONTINUOUS_SPACE,
    ContinuousTabletopGenerator,
    apply_vector,
    position_error,
)
from .descriptors import fixed_float_range as _float
from .descriptors import fixed_int_range as _int
from .image_conversion import numpy_to_image
from .node_program import print_help, program_name, wants_help
from .qos import CAMERA_QOS, LATCHED_QOS, RESULTS_QOS, flush

CAMERA_TOPIC = 'camera/image_raw'   # a selector's image subscription is remapped here
ACTION_TOPIC = 'action_selector/selected_action'
VECTOR_TOPIC = 'action_selector/action_vector'
TASKS = ('grid', 'continuous')



PARAMETERS = {
    'task': ('grid', ParameterDescriptor(
        description='grid: cell-aligned scenes, judges action names on '
                    f'{ACTION_TOPIC}; continuous: objects anywhere, judges action vectors '
                    f'[one-hot primitive, x, y] on {VECTOR_TOPIC} (the selector in '
                    'candidate_mode sampled)', read_only=True)),
    'episodes': (0, _int('episodes to run; 0 = forever', 0, 1_000_000)),
    'seed': (0, _int('seed of the episode stream (same seed and split, same episodes)', 0,
                     2**31 - 1)),
    'split': ('val', ParameterDescriptor(
        description=f'tabletop split to draw episodes from: {", ".join(SPLIT_NAMES)}',
        read_only=True)),
    'image_size': (96, _int('render size of the scene (square), before upscaling', 48, 1024)),
    'camera_width': (640, _int('published image width', 16, 4096)),
    'camera_height': (480, _int('published image height', 16, 4096)),
    'rate_hz': (10.0, _float('camera frames per second', 0.1, 200.0)),
    'episode_timeout_s': (10.0, _float('no action within this many seconds = failure', 0.1,
                                       3600.0)),
    'wait_for_selector': (True, ParameterDescriptor(
        description='start the first episode only once selected_action has a publisher',
        read_only=True)),
    'publish_clock': (False, ParameterDescriptor(
        description='publish /clock (sim time) and stamp everything with it', read_only=True)),
    'real_time_factor': (1.0, _float('sim seconds per wall second with publish_clock', 0.01,
                                     100.0)),
    'clock_rate_hz': (100.0, _float('/clock messages per second', 1.0, 1000.0)),
    'frame_id': ('camera', ParameterDescriptor(description='header.frame_id of the images',
                                               read_only=True)),
}


class TabletopSimNode(Node):
    """Runs tabletop episodes over ROS topics (see the module docstring)."""

    def __init__(self, node_name: str = 'tabletop_sim', **kwargs):
        super().__init__(node_name, **kwargs)
        self.p = {name: self.declare_parameter(name, default, desc).value
                  for name, (default, desc) in PARAMETERS.items()}
        if self.p['split'] not in SPLIT_NAMES:
            raise ValueError(f'unknown split {self.p["split"]!r}; expected one of {SPLIT_NAMES}')
        if self.p['task'] not in TASKS:
            raise ValueError(f'unknown task {self.p["task"]!r}; expected one of {list(TASKS)}')
        self.continuous = self.p['task'] == 'continuous'
        make = ContinuousTabletopGenerator if self.continuous else TabletopGenerator
        self.generator = make(TabletopConfig(image_size=self.p['image_size']),
                              split=self.p['split'], seed=self.p['seed'])
        self.results: list[dict] = []
        self.sample = None
        self.scene = None
        self.frame = None
        self.episode = 0
        self.finished = False
        self.ignored_actions = 0
        self._episode_start = 0.0
        self._first_stamp = None
        self._wall0 = time.monotonic()
        self.image_pub = self.create_publisher(Image, CAMERA_TOPIC, CAMERA_QOS)
        self.instruction_pub = self.create_publisher(String, 'instruction', LATCHED_QOS)
        self.result_pub = self.create_publisher(String, '~/episode_result', RESULTS_QOS)
        self.rate_pub = self.create_publisher(Float32, '~/success_rate', LATCHED_QOS)
        self.clock_pub = None
        if self.p['publish_clock']:
            self.clock_pub = self.create_publisher(Clock, '/clock', 10)
            self.create_timer(1.0 / self.p['clock_rate_hz'], self._publish_clock)
        # The selector's default output (its ~/selected_action), so the two nodes meet without
        # a remap; relative, so a namespace given to both still pairs them.
        if self.continuous:
            self.action_topic = self.resolve_topic_name(VECTOR_TOPIC)
            self.create_subscription(Float32MultiArray, VECTOR_TOPIC, self._on_vector, 10)
        else:
            self.action_topic = self.resolve_topic_name(ACTION_TOPIC)
            self.create_subscription(String, ACTION_TOPIC, self._on_action, 10)
        self.create_timer(1.0 / self.p['rate_hz'], self._tick)
        self.get_logger().info(
            f'tabletop_sim: task {self.p["task"]}, split {self.p["split"]}, seed '
            f'{self.p["seed"]}, episodes '
            f'{self.p["episodes"] or "forever"}, camera {self.p["camera_width"]}x'
            f'{self.p["camera_height"]} at {self.p["rate_hz"]} Hz')

    # -- time ---------------------------------------------------------------------------------
    def sim_now(self) -> Time:
        """The simulator's time: sim time with publish_clock, else the node clock."""
        if self.clock_pub is None:
            return self.get_clock().now()
        elapsed = (time.monotonic() - self._wall0) * self.p['real_time_factor']
        return Time(nanoseconds=int(elapsed * 1e9))

    def _publish_clock(self) -> None:
        self.clock_pub.publish(Clock(clock=self.sim_now().to_msg()))

    # -- episodes -------------------------------------------------------------------------------
    def _start_episode(self) -> None:
        self.episode += 1
        self.sample = self.generator.sample()
        self.scene = self.sample.scene
        self.frame = self._render()
        self._first_stamp = None
        self._episode_start = time.monotonic()
        self.instruction_pub.publish(String(data=self.sample.instruction))
        self.get_logger().info(f'episode {self.episode}: {self.sample.instruction!r} '
                               f'(expects {self._expected()})')

    def _expected(self) -> str:
        if self.continuous:
            return CONTINUOUS_SPACE.describe(self.sample.vector)
        return self.sample.action_name

    def _render(self):
        return camera_frame(self.scene, self.generator.config,
                            (self.p['camera_width'], self.p['camera_height']))

    def _tick(self) -> None:
        if self.finished:
            return
        if self.sample is None:
            if self.p['wait_for_selector'] and not self.count_publishers(self.action_topic):
                output, topic = (('~/action_vector', VECTOR_TOPIC) if self.continuous
                                 else ('~/selected_action', ACTION_TOPIC))
                self.get_logger().info(f'waiting for a publisher on {self.action_topic} (the '
                                       f'selector\'s {output}; remap {topic} if yours is '
                                       'elsewhere)', throttle_duration_sec=10.0)
                return
            self._start_episode()
            return  # the first frame goes out on the next tick, after the instruction
        if time.monotonic() - self._episode_start > self.p['episode_timeout_s']:
            self.get_logger().warning(
                f'episode {self.episode}: no action on {self.action_topic} within '
                f'episode_timeout_s {self.p["episode_timeout_s"]} '
                f'({self.count_publishers(self.action_topic)} publisher(s) there)')
            self._finish(None, False)
            return
        msg = numpy_to_image(self.frame, 'rgb8')
        msg.header.stamp = self.sim_now().to_msg()
        msg.header.frame_id = self.p['frame_id']
        if self._first_stamp is None:
            self._first_stamp = msg.header.stamp
        self.image_pub.publish(msg)

    def _on_action(self, msg: String) -> None:
        if self.sample is None or self.finished:
            self.ignored_actions += 1
            state = 'all episodes are done' if self.finished else 'no episode is running yet'
            self.get_logger().warning(f'ignoring action {msg.data!r}: {state} '
                                      f'({self.ignored_actions} ignored so far)',
                                      throttle_duration_sec=5.0)
            return
        self._finish(msg.data, None)

    def _on_vector(self, msg: Float32MultiArray) -> None:
        if self.sample is None or self.finished:
            self.ignored_actions += 1
            state = 'all episodes are done' if self.finished else 'no episode is running yet'
            self.get_logger().warning(f'ignoring action vector {list(msg.data)}: {state} '
                                      f'({self.ignored_actions} ignored so far)',
                                      throttle_duration_sec=5.0)
            return
        vector = [float(v) for v in msg.data]
        extra = {'vector': vector, 'expected_vector': [float(v) for v in self.sample.vector],
                 'position_error': None}
        try:
            checked = CONTINUOUS_SPACE.check_vector(vector, 'action vector')
        except ValueError as exc:   # not a vector of the space: a failed episode, said why
            self.get_logger().warning(f'cannot apply {vector}: {exc}')
            self._finish(f'invalid {vector}', False, extra)
            return
        self.scene, success = apply_vector(self.scene, checked)
        extra['position_error'] = position_error(self.sample.target, checked,
                                                 self.generator.config.image_size)
        self._finish(CONTINUOUS_SPACE.describe(checked), success, extra)

    def _finish(self, chosen: str | None, success: bool | None,
                extra: dict | None = None) -> None:
        if chosen is not None and not self.continuous:
            try:
                self.scene, success = apply_action(self.scene, chosen)
            except ValueError as exc:  # not a tabletop action: a failed episode, said why
                self.get_logger().warning(f'cannot apply {chosen!r}: {exc}')
                success = False
        latency = time.monotonic() - self._episode_start
        result = {'episode': self.episode, 'instruction': self.sample.instruction,
                  'task': self.p['task'], 'expected': self._expected(), 'chosen': chosen,
                  'success': bool(success), 'timeout': chosen is None,
                  'latency': latency, 'latency_ms': latency * 1e3,
                  'first_image_stamp': None if self._first_stamp is None else {
                      'sec': self._first_stamp.sec, 'nanosec': self._first_stamp.nanosec}}
        if self.continuous:   # position error in object radii (None: no usable vector)
            result.update({'vector': None, 'expected_vector': [float(v) for v in
                                                                self.sample.vector],
                           'position_error': None})
            result.update(extra or {})
        self.results.append(result)
        rate = sum(r['success'] for r in self.results) / len(self.results)
        self.result_pub.publish(String(data=json.dumps(result)))
        self.rate_pub.publish(Float32(data=float(rate)))
        error = result.get('position_error')
        self.get_logger().info(
            f'episode {self.episode}: chose {chosen} expected {self._expected()} -> '
            f'{"success" if success else "failure"}'
            + (f', {error:.2f} radii from the target' if error is not None else '')
            + f' ({latency * 1e3:.0f} ms); success rate {rate:.2f} over {len(self.results)}')
        if self.p['episodes'] and self.episode >= self.p['episodes']:
            self.finished = True
            self.sample = None
            self.get_logger().info(f'done: {len(self.results)} episodes, success rate '
                                   f'{rate:.3f}')
            return
        self._start_episode()


HELP = ('The tabletop benchmark as a ROS 2 simulator: each episode publishes an instruction '
        '(latched, on instruction) and a camera stream (camera/image_raw), waits for the '
        f"selector's action on {ACTION_TOPIC} (task continuous: {VECTOR_TOPIC}), judges it "
        'and publishes ~/episode_result and ~/success_rate. Exits (status 0) after its last '
        'episode.')
EXAMPLE = """vla-tabletop-sim --ros-args -p episodes:=20
vla-action-selector --ros-args -r image:=/camera/image_raw -p mode:=on_instruction  # selector"""


def main(args=None) -> int | None:
    """Run the simulator until its last episode is done (forever with ``episodes: 0``) or
    Ctrl-C; ``--help`` prints the parameters."""
    if wants_help(args):
        return print_help(program_name('vla-tabletop-sim'), HELP, PARAMETERS, EXAMPLE)
    rclpy.init(args=args)
    node = None
    try:
        node = TabletopSimNode()
        while rclpy.ok() and not node.finished:
            rclpy.spin_once(node, timeout_sec=0.1)
        if node.finished:
            # Reliable results still unacknowledged would die with the process.
            flush((node.result_pub, node.rate_pub))
            node.get_logger().info('all episodes done: exiting')
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
