"""libero_sim: LIBERO episodes over ROS 2 topics, judged by LIBERO's own ``check_success``.

``tabletop_sim``'s twin for a world nobody here wrote: each episode resets a task of a LIBERO
suite to one of its official initial states, publishes the task's instruction (latched) and
the agentview camera (rgb8, its depth as 32FC1 in metres, its ``camera_info`` and pose), then
asks for two decisions: a *pick* point from the first frame and a *place* point from the frame
after the grasp (a pick the gripper reports empty is asked again from a new frame,
``grasp_attempts``). A decision is an action vector ``[pick, place, u, v]`` (one-hot primitive,
normalised point of the upright image) on ``action_selector/action_vector``: the existing
``action_selector`` in ``candidate_mode: sampled`` with ``config/libero_actions.yaml`` answers
it unchanged, its search pinned to the decision's primitive by ``action_choice`` (the robot
knows it picks, then places; the model chooses where). The point is executed by the ROS-free
executor (``libero/executor.py``: lifted with depth and the camera calibration only, no
simulator state), and the episode is judged.

Bad actions (a vector of the wrong length, NaN, the wrong primitive, a point off the table or
outside the image) are logged and end their episode as failed; the node keeps running. No
decision within ``decision_timeout_s`` fails the episode too. With ``publish_expert`` the
simulator also publishes the scripted expert's answer (privileged: it reads the simulator's
state) on ``~/expert_action`` for each decision frame; pointing ``action_topic`` there runs the
expert through the same topics (``vla-demo --task libero --policy expert``) and records
demonstrations with the episode recorder.

Topics::

    publishes   camera/image_raw (Image rgb8)  camera/depth (Image 32FC1, metres)
                camera/camera_info (CameraInfo)  camera/pose (PoseStamped, world <- camera)
                wrist/image_raw (Image rgb8, with publish_wrist)
                instruction (String, latched)  ~/episode_result (String JSON)
                action_choice (String: the decision's primitive, with every frame; choice_topic)
                ~/success_rate (Float32, latched)  ~/expert_action (Float32MultiArray)
                /clock with publish_clock (sim time: 50 ms per control step)
    subscribes  action_selector/action_vector (Float32MultiArray), or action_topic
"""
from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass

import numpy as np
import rclpy
from builtin_interfaces.msg import Time as TimeMsg
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Float32, Float32MultiArray, String

from ..libero.episode import GRASP_ATTEMPTS, PolicyFailure, check_action
from .descriptors import fixed_float_range as _float
from .descriptors import fixed_int_range as _int
from .image_conversion import depth_to_image, numpy_to_image
from .node_program import print_help, program_name, wants_help
from .qos import CAMERA_QOS, LATCHED_QOS, RELIABLE_QOS, RESULTS_QOS, flush

VECTOR_TOPIC = 'action_selector/action_vector'
CHOICE_TOPIC = 'action_choice'     # the action_selector's (relative, as instruction)
CONTROL_PERIOD_S = 0.05     # LIBERO's 20 Hz control: sim time advances this much per step
OFFICIAL_STATES = 50        # fixed initial states per LIBERO task


def _text(desc: str) -> ParameterDescriptor:
    return ParameterDescriptor(description=desc, read_only=True)



PARAMETERS = {
    'suite': ('libero_spatial', _text('LIBERO suite (any the installed benchmark registers, '
                                      'LIBERO-PRO variants included)')),
    'tasks': ('', ParameterDescriptor(
        description="task indices of the suite: one (3), a list ([0, 3]) or text ('0,3'); "
                    "'' = every task", read_only=True, dynamic_typing=True)),
    'placement': ('official', _text("official: the task's official initial states (the "
                                    "benchmark's test set); random: LIBERO's seeded random "
                                    'placements (demonstrations), as vla-libero-dataset draws')),
    'seed': (0, _int('placement seed with placement random (the k-th episode of a task gets '
                     'the placement vla-libero-dataset --seed gives its k-th)', 0, 2**31 - 1)),
    'trials_per_task': (50, _int('episodes per task: initial states (or placements) first_trial '
                                 '.. first_trial + N - 1', 1, 1_000_000)),
    'first_trial': (0, _int('first initial state (or placement) of each task', 0, 1_000_000)),
    'episodes': (0, _int('stop after this many episodes; 0 = tasks x trials_per_task', 0,
                         1_000_000)),
    'image_size': (256, _int('agentview (and wrist) render size, square', 64, 1024)),
    'publish_wrist': (False, _text('also render and publish the wrist camera')),
    'frame_rate_hz': (5.0, _float('how often the decision frame is re-published while the '
                                  'simulator waits (no re-render)', 0.1, 100.0)),
    'decision_timeout_s': (60.0, _float('no decision within this many seconds = failed '
                                        'episode', 0.1, 3600.0)),
    'grasp_attempts': (GRASP_ATTEMPTS, _int(
        'picks an episode may make: a pick the gripper reports empty (missed_grasp) or that '
        'lost its object (dropped) is asked again from a new frame while the step budget lasts',
        1, 10)),
    'action_topic': (VECTOR_TOPIC, _text('where decisions arrive (Float32MultiArray '
                                         '[pick, place, u, v])')),
    'choice_topic': (CHOICE_TOPIC, _text(
        "where each decision's primitive (pick, then place) is published before its frames: "
        "the selector's action_choice pins it and searches only where; an answer for the "
        "other primitive (made before the pin arrived) is ignored. '' = not published: the "
        'policy chooses the primitive and a wrong one fails the episode (wrong_primitive)')),
    'publish_expert': (False, _text("publish the scripted expert's answer on ~/expert_action "
                                    '(privileged simulator state: demonstrations, plumbing)')),
    'wait_for_policy': (True, _text('start the first episode only once action_topic has a '
                                    'publisher')),
    'publish_clock': (False, _text('publish /clock (sim time, 50 ms per control step) and '
                                   'stamp everything with it')),
    'frame_id': ('agentview', _text('header.frame_id of the agentview images')),
}


@dataclass
class _Decision:
    primitive: str
    frame: object                 # libero.camera.Frame
    stamp: TimeMsg
    answer: list | None = None


class LiberoSimNode(Node):
    """Runs LIBERO episodes over ROS topics (see the module docstring). The episodes run in a
    worker thread (the physics and the executor block); the node's callbacks only hand
    decisions over."""

    def __init__(self, node_name: str = 'libero_sim', **kwargs):
        super().__init__(node_name, **kwargs)
        self.p = {name: self.declare_parameter(name, default, desc).value
                  for name, (default, desc) in PARAMETERS.items()}
        from ..libero.suites import num_tasks
        if self.p['placement'] not in ('official', 'random'):
            raise ValueError(f"placement must be 'official' or 'random', got "
                             f"{self.p['placement']!r}")
        if self.p['placement'] == 'official' and \
                self.p['first_trial'] + self.p['trials_per_task'] > OFFICIAL_STATES:
            raise ValueError(f'a LIBERO task has {OFFICIAL_STATES} official initial states: '
                             f"first_trial + trials_per_task must be at most {OFFICIAL_STATES}")
        self.task_indices = self._task_indices(num_tasks(self.p['suite']))
        self.plan = [(t, self.p['first_trial'] + k) for t in self.task_indices
                     for k in range(self.p['trials_per_task'])]
        if self.p['episodes']:
            self.plan = self.plan[:self.p['episodes']]
        self.results: list[dict] = []
        self.finished = False
        self.ignored_actions = 0
        self.sim_seconds = 0.0      # sim time at the start of the running episode
        self.env = None
        self._lock = threading.Lock()
        self._decision: _Decision | None = None
        self._answered = threading.Event()
        self._stop = threading.Event()
        self.image_pub = self.create_publisher(Image, 'camera/image_raw', CAMERA_QOS)
        self.depth_pub = self.create_publisher(Image, 'camera/depth', CAMERA_QOS)
        self.info_pub = self.create_publisher(CameraInfo, 'camera/camera_info', CAMERA_QOS)
        self.pose_pub = self.create_publisher(PoseStamped, 'camera/pose', LATCHED_QOS)
        self.wrist_pub = (self.create_publisher(Image, 'wrist/image_raw', CAMERA_QOS)
                          if self.p['publish_wrist'] else None)
        self.instruction_pub = self.create_publisher(String, 'instruction', LATCHED_QOS)
        self.result_pub = self.create_publisher(String, '~/episode_result', RESULTS_QOS)
        self.rate_pub = self.create_publisher(Float32, '~/success_rate', LATCHED_QOS)
        self.choice_pub = (self.create_publisher(String, self.p['choice_topic'], RELIABLE_QOS)
                           if self.p['choice_topic'] else None)
        self.expert_pub = (self.create_publisher(Float32MultiArray, '~/expert_action',
                                                 RELIABLE_QOS)
                           if self.p['publish_expert'] else None)
        self.clock_pub = None
        if self.p['publish_clock']:
            self.clock_pub = self.create_publisher(Clock, '/clock', 10)
            self.create_timer(0.05, self._publish_clock)
        self.action_topic = self.resolve_topic_name(self.p['action_topic'])
        self.create_subscription(Float32MultiArray, self.p['action_topic'], self._on_vector,
                                 RELIABLE_QOS)
        self.create_timer(1.0 / self.p['frame_rate_hz'], self._republish)
        self.worker = threading.Thread(target=self._run, name='libero_episodes', daemon=True)
        self.get_logger().info(
            f'libero_sim: suite {self.p["suite"]}, tasks {self.task_indices}, '
            f'{len(self.plan)} episodes, decisions on {self.action_topic}')

    def _task_indices(self, count: int) -> list[int]:
        value = self.p['tasks']
        if isinstance(value, str) and not value.strip():
            return list(range(count))
        try:
            parts = value.split(',') if isinstance(value, str) else (
                list(value) if isinstance(value, (list, tuple)) else [value])
            indices = [int(t) for t in parts]
        except (TypeError, ValueError):
            raise ValueError(f'tasks must be task indices, got {value!r}') from None
        bad = [i for i in indices if not 0 <= i < count]
        if bad:
            raise ValueError(f'suite {self.p["suite"]} has tasks 0..{count - 1}, not {bad}')
        return indices

    def start(self) -> None:
        """Start the episodes (in the worker thread)."""
        self.worker.start()

    def stop(self) -> None:
        self._stop.set()
        self._answered.set()

    # -- time ---------------------------------------------------------------------------------
    def sim_time(self) -> float:
        """Seconds of simulated time: 50 ms per control step of every episode so far."""
        env = self.env
        return self.sim_seconds + (env.steps * CONTROL_PERIOD_S if env is not None else 0.0)

    def stamp(self) -> TimeMsg:
        """Sim time with publish_clock, else the node clock."""
        if self.clock_pub is None:
            return self.get_clock().now().to_msg()
        seconds = self.sim_time()
        sec = int(seconds)
        return TimeMsg(sec=sec, nanosec=int((seconds - sec) * 1e9))

    def _publish_clock(self) -> None:
        self.clock_pub.publish(Clock(clock=self.stamp()))

    # -- decisions over topics ------------------------------------------------------------------
    def _on_vector(self, msg: Float32MultiArray) -> None:
        with self._lock:
            decision = self._decision
            if decision is None or decision.answer is not None:
                # Between decisions (the executor is moving, or no episode runs): an answer
                # to an older frame. Counted, never applied to the next decision.
                self.ignored_actions += 1
                self.get_logger().info(f'ignoring an action vector outside a decision '
                                       f'({self.ignored_actions} so far)',
                                       throttle_duration_sec=10.0)
                return
            if self.choice_pub is not None and other_primitive(msg.data, decision.primitive):
                # Made on a frame that reached the selector before this decision's pin.
                self.ignored_actions += 1
                self.get_logger().info(f'ignoring an answer for the other primitive while '
                                       f'{decision.primitive} is pinned ({self.ignored_actions} '
                                       'ignored so far)', throttle_duration_sec=10.0)
                return
            decision.answer = list(msg.data)
        self._answered.set()

    def _republish(self) -> None:
        with self._lock:
            decision = self._decision
        if decision is not None and decision.answer is None:
            self._publish_frame(decision)

    def _publish_frame(self, decision: _Decision) -> None:
        # Stamped now, each time: while the robot waits the scene does not change, so a
        # re-published frame is what a camera would see now (and a selector that skips frames
        # older than max_image_age_s keeps deciding on it).
        frame, stamp, header_id = decision.frame, self.stamp(), self.p['frame_id']
        if self.choice_pub is not None:   # with every frame: a lost pin is sent again
            self.choice_pub.publish(String(data=decision.primitive))
        image = numpy_to_image(frame.rgb, 'rgb8')
        depth = depth_to_image(frame.depth)
        for msg in (image, depth):
            msg.header.stamp, msg.header.frame_id = stamp, header_id
        self.image_pub.publish(image)
        self.depth_pub.publish(depth)
        self.info_pub.publish(camera_info(frame.calibration, stamp, header_id))

    def policy(self, frame, instruction: str, primitive: str) -> tuple[float, float]:
        """The episode's policy: publish the decision frame (then the expert's answer to it,
        with publish_expert), re-publish it until an answer comes, and check the answer."""
        decision = _Decision(primitive, frame, self.stamp())
        self._answered.clear()
        with self._lock:
            self._decision = decision
        self.pose_pub.publish(camera_pose(frame.calibration, decision.stamp, 'world'))
        if self.wrist_pub is not None:
            wrist = numpy_to_image(self.env.render('robot0_eye_in_hand', depth=False).rgb,
                                   'rgb8')
            wrist.header.stamp, wrist.header.frame_id = decision.stamp, 'wrist'
            self.wrist_pub.publish(wrist)
        self._publish_frame(decision)
        if self.expert_pub is not None:
            # After the frame: a recorder pairs each action with the newest frame before it.
            u, v = self.expert(frame, instruction, primitive)
            onehot = [1.0, 0.0] if primitive == 'pick' else [0.0, 1.0]
            self.expert_pub.publish(Float32MultiArray(data=[*onehot, float(u), float(v)]))
        answered = self._answered.wait(self.p['decision_timeout_s'])
        with self._lock:
            self._decision = None
        if self._stop.is_set():
            raise PolicyFailure('stopped', 'the node is shutting down')
        if not answered or decision.answer is None:
            raise PolicyFailure('timeout', f'no {primitive} decision on {self.action_topic} '
                                 f'within {self.p["decision_timeout_s"]} s '
                                 f'({self.count_publishers(self.action_topic)} publisher(s))')
        return check_action(decision.answer, primitive)

    # -- episodes -------------------------------------------------------------------------------
    def _run(self) -> None:
        from ..libero.demonstrations import Job, reset_demonstration, trial_spec
        from ..libero.env import LiberoEnv
        from ..libero.episode import run_episode
        from ..libero.expert import ExpertPolicy
        try:
            while self.p['wait_for_policy'] and not self.count_publishers(self.action_topic):
                self.get_logger().info(f'waiting for a publisher on {self.action_topic} (the '
                                       "selector's ~/action_vector; remap it or set "
                                       'action_topic if yours is elsewhere)',
                                       throttle_duration_sec=10.0)
                if self._stop.wait(0.2):
                    return
            for number, (task_index, trial) in enumerate(self.plan, 1):
                if self._stop.is_set():
                    return
                job = Job(self.p['suite'], task_index, trial)
                # random placements: each run of placements has its own layout
                wanted = trial_spec(job, self.p['seed'] if self.p['placement'] == 'random'
                                    else None)
                if self.env is None or self.env.spec.bddl_path != wanted.bddl_path:
                    if self.env is not None:
                        self.sim_seconds = self.sim_time()
                        self.env.close()
                    self.env = LiberoEnv(wanted, image_size=self.p['image_size'])
                    self.expert = ExpertPolicy(self.env)
                self.sim_seconds = self.sim_time()
                change = None
                if self.p['placement'] == 'random':
                    change = reset_demonstration(self.env, job, self.p['seed'])
                else:
                    self.env.reset_official(trial)
                self.instruction_pub.publish(String(data=self.env.instruction))
                result = run_episode(self.env, self.policy,
                                     grasp_attempts=self.p['grasp_attempts'],
                                     before_frame=change)
                self._report(number, task_index, trial, result)
        except Exception as exc:   # the simulator cannot go on: say why, end the run
            self.get_logger().error(f'libero_sim stopped: {type(exc).__name__}: {exc}')
        finally:
            if self.env is not None:
                self.env.close()
            self.finished = True

    def _report(self, number: int, task_index: int, trial: int, result) -> None:
        row = {'episode': number, 'suite': self.p['suite'], 'task': task_index,
               'initial_state': trial, 'instruction': self.env.instruction,
               **result.to_dict()}
        self.results.append(row)
        rate = sum(r['success'] for r in self.results) / len(self.results)
        self.result_pub.publish(String(data=json.dumps(row)))
        self.rate_pub.publish(Float32(data=float(rate)))
        outcome = 'success' if result.success else f'failure ({result.failure})'
        self.get_logger().info(
            f'episode {number}/{len(self.plan)} task {task_index} state {trial}: {outcome} in '
            f'{result.steps} steps; success rate {rate:.2f} over {len(self.results)}')


def other_primitive(values, primitive: str) -> bool:
    """True when the action vector ``values`` is well-formed and chose the primitive other
    than ``primitive`` (a malformed one is :func:`check_action`'s to fail)."""
    try:
        check_action(values, primitive)
    except PolicyFailure as exc:
        return exc.kind == 'wrong_primitive'
    return False


def camera_info(calibration, stamp: TimeMsg, frame_id: str) -> CameraInfo:
    """``sensor_msgs/CameraInfo`` of a pinhole calibration (no distortion: a render)."""
    K = np.asarray(calibration.K, float)
    msg = CameraInfo(width=int(calibration.width), height=int(calibration.height),
                     distortion_model='plumb_bob')
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.k = K.reshape(-1).tolist()
    msg.d = [0.0] * 5
    msg.r = np.eye(3).reshape(-1).tolist()
    msg.p = np.hstack([K, np.zeros((3, 1))]).reshape(-1).tolist()
    return msg


def camera_pose(calibration, stamp: TimeMsg, frame_id: str) -> PoseStamped:
    """The camera's pose in the world (``world_from_camera``, OpenCV's optical frame)."""
    pose = np.asarray(calibration.world_from_camera, float)
    msg = PoseStamped()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = pose[:3, 3].tolist()
    x, y, z, w = _quaternion(pose[:3, :3])
    msg.pose.orientation.x, msg.pose.orientation.y = x, y
    msg.pose.orientation.z, msg.pose.orientation.w = z, w
    return msg


def _quaternion(R: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation matrix (Shepperd's method: stable for every rotation)."""
    trace = R[0, 0] + R[1, 1] + R[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        return ((R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s,
                0.25 * s)
    i = int(np.argmax(np.diag(R)))
    j, k = (i + 1) % 3, (i + 2) % 3
    s = 2.0 * math.sqrt(1.0 + R[i, i] - R[j, j] - R[k, k])
    q = [0.0, 0.0, 0.0]
    q[i] = 0.25 * s
    q[j] = (R[j, i] + R[i, j]) / s
    q[k] = (R[k, i] + R[i, k]) / s
    return q[0], q[1], q[2], (R[k, j] - R[j, k]) / s


HELP = ('LIBERO episodes over ROS 2 topics, judged by check_success: publishes the agentview '
        'camera (camera/image_raw rgb8, camera/depth 32FC1 metres, camera/camera_info, '
        'camera/pose) and the task instruction (latched), asks for a pick and then a place '
        f'decision [pick, place, u, v] on {VECTOR_TOPIC} (the selector in candidate_mode '
        'sampled), executes them from depth and calibration only, publishes ~/episode_result '
        'and ~/success_rate. Exits (status 0) after its last episode. Needs LIBERO '
        '(requirements-libero.txt).')
EXAMPLE = """vla-libero-sim --ros-args -p suite:=libero_spatial -p trials_per_task:=2
vla-action-selector --ros-args -r image:=/camera/image_raw -r instruction:=/instruction \\
    -p model_path:=MODEL -p candidate_mode:=sampled -p max_rate_hz:=0.0   # the selector
vla-libero-sim --ros-args -p publish_expert:=true -p action_topic:=libero_sim/expert_action"""


def main(args=None) -> int:
    """Run the episodes and exit (0 after the last one; 1 when the simulator failed);
    ``--help`` prints the parameters."""
    if wants_help(args):
        return print_help(program_name('vla-libero-sim'), HELP, PARAMETERS, EXAMPLE)
    rclpy.init(args=args)
    node = None
    try:
        node = LiberoSimNode()
        node.start()
        while rclpy.ok() and not node.finished:
            rclpy.spin_once(node, timeout_sec=0.1)
        flush((node.result_pub, node.rate_pub))
        done = len(node.results)
        rate = sum(r['success'] for r in node.results) / done if done else 0.0
        # the line tabletop_sim ends with too: launch files tell a finished run by it
        node.get_logger().info(f'done: {done} episodes, success rate {rate:.3f} '
                               f'({len(node.plan)} planned): exiting')
        return 0 if done == len(node.plan) else 1
    except (KeyboardInterrupt, ExternalShutdownException):
        return 130
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    raise SystemExit(main())
