"""action_selector: a lifecycle node that picks an action from camera frame(s) + an instruction.

Lifecycle: *configure* loads the checkpoint and action library (a failure logs the path and
leaves the node unconfigured), *activate* opens the topics and starts the inference thread,
*deactivate* closes them and moves the model off the GPU (``torch.cuda.empty_cache``),
*cleanup* drops the model. With ``autostart`` (default) a one-shot timer walks it to active;
as a program (:func:`main`) a failed autostart configure then ends the process (exit 1, with
``exit_on_configure_failure``). Active and no frame for 5 s: a warning every 10 s names the
resolved camera topic(s) (:class:`.selector_stats.FrameWatch`).

Topics (relative names, remap as needed)::

    subscribes  image (sensor_msgs/Image, sensor-data QoS, depth 5)   one per image_topics
                image/compressed (sensor_msgs/CompressedImage)      with image_transport:=compressed
                instruction (std_msgs/String, reliable; latched or volatile publishers)
                candidates (std_msgs/Float32MultiArray N x D; empty message = back to library)
                action_choice (std_msgs/String: pins the space's choice, e.g. pick; empty =
                               the model chooses; candidate_mode sampled)
    publishes   ~/selected_action (std_msgs/String)   ~/action_vector (Float32MultiArray)
                ~/scores (String, JSON)   ~/debug_image (Image, only built when subscribed)
                cmd_vel (geometry_msgs/Twist, publish_cmd_vel)   /diagnostics

Subscription callbacks only store the newest message per camera (an overwritten unprocessed
frame counts as dropped); a worker thread woken through a ``threading.Condition`` converts,
selects and publishes, so a slow model never blocks the executor. Every output that has a
header carries the stamp of the frame it was computed from (the first camera's), and the
scores JSON carries it too; the periodic /diagnostics is stamped with the node clock's now.

Bad input never stops the node: it is counted by kind under ``rejected`` in /diagnostics and
logged at most once per ``LOG_PERIOD_S`` per kind (the rules: :mod:`.selector_inputs`); an
exception inside inference is counted under ``errors['inference']``.
"""
from __future__ import annotations

import sys
import threading
import time
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSPolicyKind
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float32MultiArray, String

from ..selection.selector import CandidateError
from . import selector_outputs as outputs
from . import selector_params as params
from . import selector_setup as setup
from .debug_overlay import decision_overlay
from .decision_queue import DecisionQueue, Job, Skip, clock_advice, missing_cameras
from .image_conversion import ImageError, numpy_to_image
from .node_program import print_help, program_name, run_lifecycle_node, wants_help
from .qos import INSTRUCTION_QOS, LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS
from .selector_inputs import (
    ChoiceError,
    candidate_rows,
    check_frame,
    clean_instruction,
    frames_of,
    pinned_choice,
)
from .selector_messages import decision_messages
from .selector_stats import FrameWatch, LogLimiter, SelectorStats, no_frame_message

LOG_PERIOD_S = 5.0   # at most one log line per kind of bad input / failure in this time
# Routine events (frames replaced by newer ones, frames ignored between instructions in
# on_instruction mode) are logged too, so nothing vanishes unexplained, but more rarely.
ROUTINE_LOG_PERIOD_S = 60.0


def _stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class ActionSelectorNode(LifecycleNode):
    """The action selector as a ROS 2 lifecycle node (see the module docstring)."""

    _sampled_refusal = staticmethod(setup.sampled_refusal)

    def __init__(self, node_name: str = 'action_selector', **kwargs):
        super().__init__(node_name, **kwargs)
        self.settings = params.declare_all(self)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.stats = SelectorStats()
        self._log_limiter = LogLimiter(LOG_PERIOD_S)
        self.debug_images_built = 0   # tests read this: the overlay runs only with subscribers
        self.debug_image_ms: deque = deque(maxlen=100)   # its cost, apart from latency_ms
        self.last_error = ''          # the last configure failure, path included
        self.exit_reason = ''         # set: main() ends the process with it (see autostart)
        self._frame_watch = FrameWatch()
        self.selector = None
        self._model = None
        self._library = None
        self._device = None
        self._queue = DecisionQueue()   # the callbacks' inputs and the worker's next job
        self._worker: threading.Thread | None = None
        self._subs: list = []
        self._pubs: dict = {}
        self._diag_timer = None
        self._sub_group = ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self.create_timer(1.0, self._check_frames, callback_group=self._timer_group)
        self._autostart_timer = None
        if self.settings['autostart']:
            # After construction, from the executor: a launch file or test can still remap,
            # and the lifecycle services are up before the (slow) model load starts.
            self._autostart_timer = self.create_timer(0.0, self._autostart)

    # The instruction now (None: none, or cleared) and how many arrived; tests read these.
    _instruction = property(lambda self: self._queue.instruction)
    _instruction_seq = property(lambda self: self._queue.instruction_seq)

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """The current lifecycle state label ('unconfigured', 'inactive', 'active', ...)."""
        return self._state_machine.current_state[1]

    def _autostart(self) -> None:
        self.destroy_timer(self._autostart_timer)
        self._autostart_timer = None
        if self.state == 'unconfigured':
            self.trigger_configure()
            if self.state != 'inactive' and self.settings['exit_on_configure_failure']:
                self.exit_reason = f'configure failed: {self.last_error}'
        if self.state == 'inactive':
            self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            done = setup.configure(self.settings, self._report_warm_up)
        except setup.ConfigureError as exc:
            # The one failure path: recorded for /diagnostics and tests, logged, and the node
            # stays unconfigured.
            self.last_error = str(exc)
            self.get_logger().error(f'configure failed: {self.last_error}')
            self.stats.error('configure', self.last_error)
            return TransitionCallbackReturn.FAILURE
        self._device = done.device
        self.selector, self._model, self._library = done.selector, done.selector.model, \
            done.selector.library
        self.last_error = ''
        self.get_logger().info(f'configured: {done.where} on {self._device}, '
                               f'{len(self._library)} actions')
        return TransitionCallbackReturn.SUCCESS

    def _sampling_config(self):
        """The sampled-mode settings as a SamplingConfig (sample_count 0 resolved by device)."""
        device_type = self._device.type if self._device is not None else 'cpu'
        return setup.sampling_config(self.settings, device_type)

    def _report_warm_up(self, selector, seconds: float) -> None:
        warnings, summary = setup.warm_up_report(selector, seconds)
        for text in warnings:
            self.get_logger().warning(text)
        self.get_logger().info(summary)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.selector is None:  # deactivated earlier: bring the model back to the device
            self.selector, seconds = setup.reactivate(self._model, self._library,
                                                      self.settings, self._device)
            self._report_warm_up(self.selector, seconds)
        self._open_topics()
        self._queue.start()
        self._worker = threading.Thread(target=self._work, name='action_selector_inference',
                                        daemon=True)
        self._worker.start()
        self.get_logger().info(f'active: cameras {self._camera_topics()}, '
                               f'mode {self.settings["mode"]}')
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        self._close_topics()
        self._release_device()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._drop_model()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        self._close_topics()
        self._drop_model()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f'error while leaving {state.label}; resetting to unconfigured')
        return self.on_shutdown(state)

    def _release_device(self) -> None:
        """Keep the model off the GPU, drop the selector (library embeddings, caches)."""
        if self.selector is not None:
            selector, self.selector = self.selector, None
            self._model = setup.release_device(selector, self._device)

    def _drop_model(self) -> None:
        self._release_device()
        self.selector = self._model = self._library = None
        self._queue.clear()

    def destroy_node(self) -> None:
        """Stop the inference thread and free the model before the node's handles go away."""
        if hasattr(self, '_queue'):   # else __init__ failed (a parameter out of its range)
            self._stop_worker()
            self._release_device()
        super().destroy_node()

    # -- topics ---------------------------------------------------------------------------------
    def _camera_topics(self) -> list[str]:
        return setup.camera_topics(self.settings)

    def _events(self, topic: str, latched_twin: bool = False) -> SubscriptionEventCallbacks:
        return SubscriptionEventCallbacks(incompatible_qos=lambda event, t=topic: (
            self._on_incompatible_qos(t, event, latched_twin)))

    def _open_topics(self) -> None:
        msg_type = CompressedImage if self.settings['image_transport'] == 'compressed' else Image
        self._queue.open(len(self.settings['image_topics']))
        for i, topic in enumerate(self._camera_topics()):
            self._subs.append(self.create_subscription(
                msg_type, topic, lambda msg, i=i: self._on_image(i, msg), SENSOR_QOS,
                callback_group=self._sub_group, event_callbacks=self._events(topic)))
        # Two subscriptions: the transient-local one gets a latched instruction published
        # before this node started; the volatile one accepts what a transient-local one
        # refuses, e.g. `ros2 topic pub --once` (volatile by default). A latched publisher
        # matches both, so each message arrives twice and _on_instruction keeps the first.
        self._subs.append(self.create_subscription(
            String, 'instruction', self._on_instruction, LATCHED_QOS,
            callback_group=self._sub_group,
            event_callbacks=self._events('instruction', latched_twin=True)))
        self._subs.append(self.create_subscription(
            String, 'instruction', self._on_instruction, INSTRUCTION_QOS,
            callback_group=self._sub_group, event_callbacks=self._events('instruction')))
        self._subs.append(self.create_subscription(
            Float32MultiArray, 'candidates', self._on_candidates, RELIABLE_QOS,
            callback_group=self._sub_group, event_callbacks=self._events('candidates')))
        self._subs.append(self.create_subscription(
            String, 'action_choice', self._on_choice, RELIABLE_QOS,
            callback_group=self._sub_group, event_callbacks=self._events('action_choice')))
        self._pubs = {
            'selected_action': self.create_publisher(String, '~/selected_action', RELIABLE_QOS),
            'action_vector': self.create_publisher(Float32MultiArray, '~/action_vector',
                                                   RELIABLE_QOS),
            'scores': self.create_publisher(String, '~/scores', RELIABLE_QOS),
            'debug_image': self.create_publisher(Image, '~/debug_image', 1),
            'diagnostics': self.create_publisher(DiagnosticArray, '/diagnostics', 10),
        }
        self._diag_timer = self.create_timer(self.settings['diagnostics_period_s'],
                                             self._publish_diagnostics,
                                             callback_group=self._timer_group)
        self._frame_watch.start(len(self.settings['image_topics']), time.monotonic())

    def _close_topics(self) -> None:
        for sub in self._subs:
            self.destroy_subscription(sub)
        for pub in self._pubs.values():
            self.destroy_publisher(pub)
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
        self._frame_watch.stop()
        self._subs, self._pubs, self._diag_timer = [], {}, None

    def _check_frames(self) -> None:   # every second; the watch is empty unless active
        if silent := self._frame_watch.due(time.monotonic()):
            topics = [self.resolve_topic_name(t) for t in self._camera_topics()]
            self.get_logger().warning(no_frame_message(
                silent, topics, [self.count_publishers(t) for t in topics]))

    def _cmd_vel_publisher(self):
        if 'cmd_vel' not in self._pubs:
            self._pubs['cmd_vel'] = self.create_publisher(Twist, 'cmd_vel', RELIABLE_QOS)
        return self._pubs['cmd_vel']

    # -- callbacks (cheap: store and notify) ----------------------------------------------------
    def _on_image(self, camera: int, msg) -> None:
        self.stats.count('received')
        self._frame_watch.frame(camera, time.monotonic())
        try:   # O(1) checks of the header, no pixel read: a bad frame never takes the slot
            check_frame(msg, self.settings['max_image_pixels'])
        except ImageError as exc:
            self._reject(exc.kind, str(exc))
            return
        replaced = self._queue.put_frame(camera, msg, _stamp_ns(msg.header.stamp),
                                         time.monotonic())
        if replaced:
            self.stats.count('dropped')
            self._log_limited('dropped', 'frames replaced by newer ones before the model was '
                              'free to take them (the newest frame wins; frames_dropped in '
                              '/diagnostics counts them)', 'info', ROUTINE_LOG_PERIOD_S)

    def _reject(self, kind: str, message: str) -> None:
        """Count a bad input by kind; log it at most once per LOG_PERIOD_S per kind."""
        self.stats.reject(kind, message)
        self._log_limited(kind, f'rejected input ({kind}): {message}', 'warning')

    def _log_limited(self, kind: str, text: str, level: str,
                     period: float | None = None) -> None:
        self._log_limiter.log(self.get_logger(), kind, text, level, period)

    def _on_instruction(self, msg: String, info: dict) -> None:
        # The same sample through both instruction subscriptions has one source timestamp
        # and sequence number (the writer's): decide on it once.
        key = (info['source_timestamp'], info.get('publication_sequence_number'), msg.data)
        if self._queue.is_repeat(key):
            return
        text, rejected = clean_instruction(msg.data, self.settings['max_instruction_chars'])
        for kind, message in rejected:
            self._reject(kind, message)
        self._queue.set_instruction(text, self._clock_ns())
        # Rate-limited too: a publisher looping at 1 kHz must not turn into a log storm.
        self._log_limited('instruction', f'instruction: {(text or "")[:200]!r}', 'info')

    def _on_candidates(self, msg: Float32MultiArray) -> None:
        """N x D candidate vectors; bad ones are rejected and counted, the previous stay."""
        data = np.asarray(msg.data, dtype=np.float32)
        if data.size == 0:
            self._queue.set_candidates(None)
            self._log_limited('candidates_cleared', 'empty candidates message: scoring the '
                                                    'action library again', 'info')
            return
        if self.selector is None:   # the topics are closing
            return
        try:
            candidates = candidate_rows(data, [d.size for d in msg.layout.dim], self.selector)
        except CandidateError as exc:
            self._reject(f'candidates_{exc.kind}', str(exc))
            return
        self._queue.set_candidates(candidates)

    def _on_choice(self, msg: String) -> None:
        """Pin the space's choice (a robot's task state: pick, then place); a bad pin is
        rejected and counted, the previous one stays."""
        space = self._library.space if self._library is not None else None
        try:
            option = pinned_choice(msg.data, space, self.settings['candidate_mode'])
        except ChoiceError as exc:
            self._reject(f'choice_{exc.kind}', str(exc))
            return
        self._queue.set_choice(option)

    def _on_incompatible_qos(self, topic: str, event, latched_twin: bool = False) -> None:
        if latched_twin and event.last_policy_kind == QoSPolicyKind.DURABILITY:
            return   # a volatile instruction publisher: the volatile twin subscription takes it
        self.stats.count('incompatible_qos')
        self.get_logger().warning(
            f'a publisher on {topic} has QoS incompatible with this subscription '
            f'(policy {event.last_policy_kind}); no messages will arrive from it. Expected: '
            f'{"reliable" if topic in ("instruction", "candidates") else "any reliability"}')

    # -- parameters -----------------------------------------------------------------------------
    def _validate_parameters(self, changes) -> SetParametersResult:
        backend = self.selector.backend_name if self.selector is not None else None
        for p in changes:
            if reason := params.change_refusal(p.name, p.value, self.state, backend,
                                               self._library, len(self.settings['image_topics'])):
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _apply_parameters(self, changes) -> None:
        with self._queue.lock:   # the worker reads the settings under it: all changes or none
            for p in changes:
                self.settings[p.name] = p.value
            if self.selector is not None:
                self.selector.top_k = self.settings['top_k']
                self.selector.min_confidence = self.settings['min_confidence']
        self._queue.wake()   # a new rate or mode takes effect now

    # -- inference thread -----------------------------------------------------------------------
    def _stop_worker(self) -> None:
        self._queue.stop()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=10.0)
        self._worker = None

    def _clock_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _work(self) -> None:
        while (item := self._queue.next(self.settings, self._clock_ns)) is not None:
            if isinstance(item, Skip):
                self._report_skip(item)
                continue
            try:
                self._process(item)
            except Exception as exc:  # keep the thread alive; count and report
                self.stats.error('inference', f'{type(exc).__name__}: {exc}')
                self._log_limited('inference', f'selection failed: {type(exc).__name__}: '
                                               f'{exc}', 'error')

    def _report_skip(self, skip: Skip) -> None:
        self.stats.skip(skip.counter, skip.reason, warn=bool(skip.remedy))
        if skip.remedy:   # a clock fault: without a warning the node would wait in silence
            advice = clock_advice(self.get_parameter('use_sim_time').value, skip.remedy)
            self._log_limited(skip.kind, f'{skip.message} {advice}', 'warning')
        else:
            self._log_limited(skip.kind, skip.message, 'info',
                              ROUTINE_LOG_PERIOD_S if skip.routine else None)

    def _process(self, job: Job) -> None:
        # Latency runs from the trigger frame's arrival in the callback, so the time it waited
        # for the worker (another decision still running) is counted, not hidden.
        header = job.msgs[0].header
        missing, reason = missing_cameras(self._camera_topics(), job,
                                          self.settings['camera_timeout_s'], time.monotonic())
        job.missing = missing
        decide_without = bool(missing) and self.settings['missing_camera'] == 'decide'
        selection, frames, color, cameras, inference_ms = None, None, 'rgb', None, 0.0
        if missing and not decide_without:
            self._log_limited('abstain_camera', f'abstaining: {reason} (missing_camera: '
                              'abstain; decide fuses the cameras there are)', 'info')
        elif job.instruction is None:
            reason = 'no instruction received'
            self._log_limited('abstain_instruction', 'abstaining: no instruction yet (publish '
                              f'one on {self.resolve_topic_name("instruction")})', 'info')
        else:
            present = [i for i, t in enumerate(self._camera_topics()) if t not in missing]
            cameras = present if missing else None
            frames, color = self._convert([job.msgs[i] for i in present])
            if frames is None:
                return
            if decide_without:
                self._log_limited('decide_without_camera', f'deciding without camera(s) '
                                  f'{missing}: {reason}', 'warning')
            t_select = time.perf_counter()
            selection = self._select(job, frames, color, cameras)
            inference_ms = (time.perf_counter() - t_select) * 1e3
            reason = selection.reason
        if self.settings['mode'] == 'on_instruction':
            self._queue.decided(job.instruction_seq)
        self.stats.cameras_missing(missing, decided=selection is not None)
        latency_ms = (time.monotonic() - job.received_at) * 1e3
        decision = outputs.Decision(job, selection, reason, latency_ms, inference_ms)
        self._publish(header, decision)
        if frames is not None and self._pubs['debug_image'].get_subscription_count() > 0:
            self._publish_debug(header, frames, color, decision, cameras)
        self.stats.decided(decision.abstained, reason, decision.latency_ms)

    def _select(self, job: Job, frames: list, color: str, cameras: list[int] | None):
        """Sampled mode searches the space unless the candidates topic gave vectors."""
        if self.settings['candidate_mode'] == 'sampled' and job.candidates is None:
            return self.selector.select_sampled(frames, job.instruction, self._sampling_config(),
                                                color=color, top_k=self.settings['top_k'],
                                                cameras=cameras, choice=job.choice)
        return self.selector.select(frames, job.instruction, color=color,
                                    candidates=job.candidates, top_k=self.settings['top_k'],
                                    cameras=cameras)

    def _convert(self, msgs) -> tuple[list | None, str]:
        try:
            return frames_of(msgs, self.settings['max_image_pixels'])
        except ValueError as exc:
            self._reject(getattr(exc, 'kind', 'image_layout'), str(exc))
            return None, 'rgb'

    # -- outputs --------------------------------------------------------------------------------
    def _publish(self, header, decision: outputs.Decision) -> None:
        for output, msg in decision_messages(header, decision, self._library,
                                             self.settings).items():
            pub = self._cmd_vel_publisher() if output == 'cmd_vel' else self._pubs[output]
            pub.publish(msg)

    def _publish_debug(self, header, frames, color, decision: outputs.Decision, cameras) -> None:
        self.debug_images_built += 1
        start = time.perf_counter()
        overlay = decision_overlay(self.selector, frames, color, decision,
                                   self.settings['debug_heatmap_size'], cameras)
        self._pubs['debug_image'].publish(numpy_to_image(overlay, 'rgb8', header))
        # Its own cost (the heatmap is a model evaluation): after the decision was published,
        # never inside latency_ms; /diagnostics reports it as debug_image_ms.
        self.debug_image_ms.append((time.perf_counter() - start) * 1e3)

    def _publish_diagnostics(self) -> None:
        pub = self._pubs.get('diagnostics')
        if pub is None:
            return
        extra = outputs.diagnostics_values(self.selector, self.settings, self._device,
                                   self._sampling_config().samples
                                   if self.settings['candidate_mode'] == 'sampled' else 0,
                                   self.debug_image_ms)
        # Stamped with the node clock's now, as diagnostic_updater does (the last frame's
        # stamp was 0 before the first frame, and stands still while frames are skipped).
        pub.publish(self.stats.diagnostics(f'{self.get_name()}: action selection',
                                           self.get_fully_qualified_name(),
                                           self.get_clock().now().to_msg(), self.state, extra))


def main(args=None) -> int:
    """Run the node until Ctrl-C or a failed autostart configure (exit 1): see
    :func:`.node_program.run_lifecycle_node`. ``--help`` prints the parameters."""
    prog = program_name('vla-action-selector')
    if wants_help(args):
        return print_help(prog, params.HELP, params.parameter_table(), params.HELP_EXAMPLE)
    return run_lifecycle_node(ActionSelectorNode, args, prog)


if __name__ == '__main__':
    sys.exit(main())
