"""``make demo``: the tabletop simulator and the action selector as two processes over DDS.

No ROS CLI is needed: both nodes are started with ``python -m ... --ros-args`` on one
``ROS_DOMAIN_ID`` (a free-ish one is picked when unset), a small listener node in this process
collects the episode results, the selector's scores and its diagnostics, prints one line per
episode (instruction, chosen action, success, latency) and then a summary: success rate,
selector latency p50/p99 (``latency_ms`` of the scores), end-to-end latency (image stamp ->
episode result received here) and dropped frames. The nodes log
warnings and errors only (``--verbose``: their info lines too, ``--quiet``: nothing). The
children get SIGINT, then SIGKILL after a grace period.

When a node exits early the demo ends at once with its exit code and, for the selector, the
reason it could not configure (its ``configure failed: ...`` line): the simulator alone would
wait for a selector forever.

With ``--task continuous`` the simulator draws continuous scenes (objects anywhere on the
table) and judges action vectors; the selector runs ``candidate_mode: sampled`` (IBC-style
derivative-free optimisation over the library's space) on ``models/tabletop_continuous``, and
the summary adds the pick error in object radii and the select time (``inference_ms``).

With ``--task libero`` the simulator is ``libero_sim`` (LIBERO's scenes, robot and
``check_success``; needs requirements-libero.txt, in the venv ``make`` builds) over the official
initial states of ``--suite`` (or, with ``--placement-seed``, seeded random placements):
``--policy expert`` runs the scripted expert through the same topics (the simulator publishes
its answers, no selector); ``--policy selector`` (default) runs the action selector in
``candidate_mode: sampled`` on a LIBERO model (``--model``), each decision's primitive pinned
by the simulator over ``action_choice``.

Exit status: 0 when at least one episode completed and neither child crashed, else 1.

Example::

    python -m vla_embedding_ros.ros.demo --episodes 20 --device cpu
    python -m vla_embedding_ros.ros.demo --task continuous --episodes 20
    python -m vla_embedding_ros.ros.demo --task libero --suite libero_spatial --policy expert
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from ..training.libero_eval import LIBERO_ITERATIONS, LIBERO_SAMPLES
from .dds_transport import BUILTIN_VAR, PROFILES_VAR, with_large_frame_transport
from .dds_transport import describe as describe_transport

SELECTOR_NODE = 'action_selector'
# the selector's sampled search per task unless --samples/--iterations: (sample_count,
# sample_iterations); the tabletop's 0 is the node's auto (1024 on the CPU, 16384 on CUDA)
SEARCH_DEFAULTS = {'libero': (LIBERO_SAMPLES, LIBERO_ITERATIONS), 'continuous': (0, 3)}
SIM_NODE = 'tabletop_sim'
LIBERO_SIM_NODE = 'libero_sim'
CONTINUOUS_MODEL = ('models', 'tabletop_continuous')   # --task continuous's default model
LIBERO_MODEL = ('models', 'libero')                     # --task libero's, once one ships


def sim_node(args) -> str:
    return LIBERO_SIM_NODE if args.task == 'libero' else SIM_NODE


def _args(argv):
    from ..data.tabletop import SPLIT_NAMES
    from ..package_share import package_file
    from .selector_params import default_model_path

    ap = argparse.ArgumentParser(prog='vla-demo', description=__doc__.split('\n\n')[0])
    ap.add_argument('--episodes', type=int, default=20, help='episodes to run (default 20)')
    ap.add_argument('--task', default='grid', choices=('grid', 'continuous', 'libero'),
                    help='grid: named cell actions (candidate_mode library); continuous: '
                         'objects anywhere, action vectors chosen by sampling '
                         '(candidate_mode sampled); libero: LIBERO scenes judged by '
                         'check_success (--suite, --policy). Default grid')
    ap.add_argument('--suite', default='libero_spatial',
                    help='libero: the suite (default libero_spatial); episodes go through '
                         'its tasks in order, official initial states 0, 1, ... of each')
    ap.add_argument('--placement-seed', type=int, default=None, metavar='N',
                    help="libero: instead of the official initial states, the seeded random "
                         'placements vla-libero-dataset --seed N draws (your own scenes: '
                         'validate there; the official states are the test set)')
    ap.add_argument('--policy', default='selector', choices=('selector', 'expert'),
                    help="libero: who answers: the action selector on --model, or the "
                         "simulator's scripted expert over the same topics (default selector)")
    ap.add_argument('--image-size', type=int, default=256,
                    help='libero: agentview render size (default 256)')
    ap.add_argument('--model', default=None,
                    help='checkpoint folder (default: the shipped models/tabletop; with '
                         '--task continuous models/tabletop_continuous)')
    ap.add_argument('--library', default='',
                    help="action library YAML (default: the model's actions.yaml); "
                         '--task continuous needs one with a space')
    ap.add_argument('--samples', type=int, default=None,
                    help='continuous, libero: sample_count (default: continuous 0 = auto, '
                         f'1024 on the CPU and 16384 on CUDA; libero {LIBERO_SAMPLES})')
    ap.add_argument('--iterations', type=int, default=None,
                    help='continuous, libero: sample_iterations (default: continuous 3, '
                         f'libero {LIBERO_ITERATIONS})')
    ap.add_argument('--sample-seed', type=int, default=0, help='continuous: sample_seed')
    ap.add_argument('--candidates', default='sampled', choices=('sampled', 'library'),
                    help="continuous: the selector's candidate_mode. library scores the "
                         "library's fixed actions and sends their vectors: with the grid "
                         'model (--model models/tabletop) that is the grid-discretised '
                         'baseline on the same continuous scenes. Default sampled')
    ap.add_argument('--device', default='auto', help='auto | cpu | cuda[:N]')
    ap.add_argument('--timeout', type=float, default=300.0,
                    help='give up after this many seconds in all (default 300)')
    ap.add_argument('--seed', type=int, default=0, help='episode stream seed')
    ap.add_argument('--split', default='val', choices=SPLIT_NAMES,
                    help='tabletop split (default val)')
    ap.add_argument('--episode-timeout', type=float, default=10.0,
                    help='seconds the simulator waits for an action per episode')
    ap.add_argument('--rate', type=float, default=10.0, help='camera frames per second')
    ap.add_argument('--torch-threads', type=int, default=1,
                    help="the selector's torch_threads parameter (0 = torch default)")
    ap.add_argument('--quiet', action='store_true', help="hide the nodes' log output")
    ap.add_argument('--verbose', action='store_true',
                    help="show the nodes' info log lines too (default: warnings and errors)")
    args = ap.parse_args(argv)
    if args.task == 'libero' and args.episode_timeout == 10.0:
        args.episode_timeout = 60.0    # a decision's timeout: the first one loads the model
    if args.model is None:
        shipped = {'continuous': CONTINUOUS_MODEL, 'libero': LIBERO_MODEL}.get(args.task)
        args.model = (os.path.dirname(package_file(*shipped, 'config.json')) if shipped
                      else default_model_path())
    return args


def _libero_sim(args, py, level) -> list[str]:
    trials = max(1, -(-args.episodes // 10))     # spread over a suite's (usually 10) tasks
    cmd = py + ['vla_embedding_ros.ros.libero_sim_node', '--ros-args', *level,
                '-p', f'suite:={args.suite}', '-p', f'trials_per_task:={min(trials, 50)}',
                '-p', f'episodes:={args.episodes}', '-p', f'image_size:={args.image_size}',
                '-p', f'decision_timeout_s:={float(args.episode_timeout)}']
    if args.placement_seed is not None:
        cmd += ['-p', 'placement:=random', '-p', f'seed:={args.placement_seed}']
    if args.policy == 'expert':
        cmd += ['-p', 'publish_expert:=true', '-p', 'action_topic:=libero_sim/expert_action']
    return cmd


def child_commands(args) -> dict[str, list[str]]:
    """The two ``python -m`` command lines (remapped so the nodes meet on the same topics)."""
    py = [sys.executable, '-m']
    # Warnings and errors only: the demo prints one line per episode itself.
    level = ['--log-level', 'info' if getattr(args, 'verbose', False) else 'warn']
    if args.task == 'libero':
        sim = _libero_sim(args, py, level)
        if args.policy == 'expert':
            return {LIBERO_SIM_NODE: sim}
    else:
        sim = _tabletop_sim(args, py, level)
    selector = py + ['vla_embedding_ros.ros.action_selector_node', '--ros-args', *level,
                     '-p', f'model_path:={args.model}', '-p', f'device:={args.device}',
                     # LIBERO asks twice per instruction (pick, then place): every frame
                     '-p', f'mode:={"continuous" if args.task == "libero" else "on_instruction"}',
                     '-p', 'max_rate_hz:=0.0',
                     # The simulator renders on the same cores: one torch thread gives the
                     # small default model its lowest latency there (bench/node_latency.py).
                     '-p', f'torch_threads:={args.torch_threads}',
                     '-r', 'image:=/camera/image_raw', '-r', 'instruction:=/instruction']
    if args.library:
        selector += ['-p', f'library_path:={args.library}']
    if args.task in SEARCH_DEFAULTS:
        mode = 'sampled' if args.task == 'libero' else args.candidates
        default_samples, default_iterations = SEARCH_DEFAULTS[args.task]
        samples = default_samples if args.samples is None else args.samples
        iterations = default_iterations if args.iterations is None else args.iterations
        selector += ['-p', f'candidate_mode:={mode}', '-p', f'sample_count:={samples}',
                     '-p', f'sample_iterations:={iterations}',
                     '-p', f'sample_seed:={args.sample_seed}']
    return {sim_node(args): sim, SELECTOR_NODE: selector}


def _tabletop_sim(args, py, level) -> list[str]:
    return py + ['vla_embedding_ros.ros.tabletop_sim_node', '--ros-args', *level,
                 '-p', f'episodes:={args.episodes}', '-p', f'seed:={args.seed}',
                 '-p', f'split:={args.split}', '-p', f'rate_hz:={float(args.rate)}',
                 '-p', f'episode_timeout_s:={float(args.episode_timeout)}',
                 '-p', f'task:={args.task}']


class _Listener:
    """A plain rclpy node collecting results, scores and diagnostics (callbacks only store)."""

    def __init__(self, context, sim: str = SIM_NODE):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from std_msgs.msg import String

        from .qos import RESULTS_QOS

        self.node = rclpy.create_node('vla_demo_listener', context=context)
        self.results: list[dict] = []
        self.scores: list[dict] = []
        self.e2e_ms: list[float] = []
        self.decision_ms: list[float] = []
        self.diagnostics: dict[str, str] = {}
        self._last_decision_stamp = None
        self.node.create_subscription(String, f'/{sim}/episode_result', self._on_result,
                                      RESULTS_QOS)
        self.node.create_subscription(String, f'/{SELECTOR_NODE}/scores', self._on_scores, 100)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 10)

    def _on_scores(self, msg) -> None:
        data = json.loads(msg.data)
        self.scores.append(data)
        if not data.get('abstained'):
            stamp = data['stamp']
            self._last_decision_stamp = stamp['sec'] + stamp['nanosec'] * 1e-9
            self.decision_ms.append((time.time() - self._last_decision_stamp) * 1e3)

    def _on_result(self, msg) -> None:
        result = json.loads(msg.data)
        self.results.append(result)
        if result.get('chosen') is not None and self._last_decision_stamp is not None:
            # Both sides stamp with the wall clock (no sim time here): image stamp -> result.
            self.e2e_ms.append((time.time() - self._last_decision_stamp) * 1e3)
        print(episode_line(result), flush=True)

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith(SELECTOR_NODE):
                self.diagnostics = {kv.key: kv.value for kv in status.values}


def episode_line(result: dict) -> str:
    """One line per episode: number, success, instruction, chosen action (and the expected
    one when they differ), position error (continuous), time from the episode's start."""
    mark = 'ok  ' if result['success'] else 'FAIL'
    if 'suite' in result:     # libero_sim: LIBERO's check_success judged two decisions
        how = '' if result['success'] else f" ({result['failure']})"
        return (f"[demo] episode {result['episode']:3d} {mark} {result['suite']} task "
                f"{result['task']} state {result['initial_state']}{how}, {result['steps']} "
                f"steps, {result['wall_s']:.1f} s: {result['instruction']!r}")
    chosen = 'no answer (timeout)' if result['chosen'] is None else result['chosen']
    expected = '' if result['success'] else f" (expected {result['expected']})"
    error = result.get('position_error')
    where = f', {error:.2f} radii off' if error is not None else ''
    return (f"[demo] episode {result['episode']:3d} {mark} {result['instruction']!r} -> "
            f"{chosen}{expected}{where}, {result['latency'] * 1e3:.0f} ms")


class _Reason:
    """Forwards a child's stderr (unless quiet) and keeps its ``configure failed``
    line, the reason to print when the selector exits early."""

    def __init__(self, stream, forward: bool):
        import threading

        self.line = ''
        self._stream, self._forward = stream, forward
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for raw in iter(self._stream.readline, b''):
            text = raw.decode('utf-8', 'replace')
            if 'configure failed:' in text and not self.line:   # the node's log line
                self.line = text[text.index('configure failed:'):].strip()
            if self._forward:
                sys.stderr.write(text)
                sys.stderr.flush()

    def join(self) -> str:
        self._thread.join(timeout=5.0)
        return self.line


def _p(values, q):
    return float(np.percentile(values, q)) if values else float('nan')


def summary(listener: _Listener, episodes: int) -> str:
    """The printed report."""
    results = listener.results
    done = len(results)
    wins = sum(r['success'] for r in results)
    latency = [s['latency_ms'] for s in listener.scores if s.get('instruction')]
    diag = listener.diagnostics
    libero = [r for r in results if 'suite' in r]
    if libero:
        # A LIBERO result arrives after both decisions and the executor's moves, so the
        # end-to-end time that means something is per decision: the frame's stamp to its scores.
        end_to_end = (f'end-to-end latency : p50 {_p(listener.decision_ms, 50):.1f} ms, '
                      f'p99 {_p(listener.decision_ms, 99):.1f} ms (image stamp -> decision '
                      f'received, {len(listener.decision_ms)} decisions)')
    else:
        end_to_end = (f'end-to-end latency : p50 {_p(listener.e2e_ms, 50):.1f} ms, '
                      f'p99 {_p(listener.e2e_ms, 99):.1f} ms (image stamp -> result received)')
    lines = [
        f'episodes completed : {done} / {episodes}',
        f'success rate       : {wins / done:.1%} ({wins}/{done})' if done else
        'success rate       : n/a (no episode completed)',
        f'timeouts           : '
        f'{sum(bool(r.get("timeout")) or r.get("failure") == "timeout" for r in results)}',
    ]
    if libero and not listener.scores and not diag:   # --policy expert: no selector ran
        lines.append('selector           : none (the simulator\'s expert answered)')
    else:
        lines += [
            f'selector latency   : p50 {_p(latency, 50):.1f} ms, p99 {_p(latency, 99):.1f} ms '
            f'({len(latency)} decisions, scores latency_ms)',
            end_to_end,
            f'frames             : received {diag.get("frames_received", "?")}, processed '
            f'{diag.get("frames_processed", "?")}, dropped {diag.get("frames_dropped", "?")}, '
            f'stale {diag.get("frames_stale", "?")}',
        ]
    if libero:
        tasks: dict = {}
        for r in libero:
            tasks.setdefault((r['suite'], r['task']), []).append(r['success'])
        per_task = ', '.join(f'{task} {sum(w)}/{len(w)}' for (_, task), w in tasks.items())
        failures = sorted({r['failure'] for r in libero if not r['success']})
        lines.insert(2, f'per task           : {per_task}')
        lines.insert(3, f'failures           : {", ".join(failures) or "none"}')
    if any(r.get('task') == 'continuous' for r in results):
        errors = [r['position_error'] for r in results if r.get('position_error') is not None]
        select = [s['inference_ms'] for s in listener.scores
                  if s.get('instruction') and not s.get('abstained')]
        evaluations = sorted({s.get('evaluations') for s in listener.scores
                              if s.get('candidates') == 'sampled'} - {None})
        samples = sorted({s['sampling']['samples'] for s in listener.scores
                          if s.get('sampling')})
        lines.insert(2, f'pick error         : mean {np.mean(errors):.2f} radii, median '
                        f'{np.median(errors):.2f} ({len(errors)} answered; < 1 = on the '
                        'object)' if errors else 'pick error         : n/a (no vector answered)')
        how = (f'{"/".join(map(str, samples))} samples, '
               f'{"/".join(map(str, evaluations))} evaluations per decision' if samples
               else 'library actions')
        lines.insert(4, f'select             : p50 {_p(select, 50):.1f} ms, p99 '
                        f'{_p(select, 99):.1f} ms (inference_ms; {how})')
    return '\n'.join(lines)


def stop(proc: subprocess.Popen, grace: float = 10.0) -> int | None:
    """SIGINT, then SIGKILL after ``grace`` seconds; return the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def main(argv=None) -> int:
    """Run the demo; return (and exit with) 0 on success."""
    args = _args(argv)
    env = dict(os.environ)
    env.setdefault('ROS_DOMAIN_ID', str(20 + os.getpid() % 80))
    env.setdefault('AMENT_PREFIX_PATH', sys.prefix)
    # Fast DDS's default transports lose most 640x480 rgb8 frames (921 KB, over its 0.5 MB
    # shared-memory segment, so UDP fragments that overflow the socket buffer): 4 of 20
    # episodes timed out waiting for a frame. The large-frame profile loses none.
    env = with_large_frame_transport(env)
    os.environ.update({k: env[k] for k in ('ROS_DOMAIN_ID', 'AMENT_PREFIX_PATH', PROFILES_VAR,
                                           BUILTIN_VAR) if k in env})
    needs_model = not (args.task == 'libero' and args.policy == 'expert')
    if needs_model and not os.path.isfile(os.path.join(args.model, 'config.json')):
        hint = ('; --task continuous needs a continuous model (train: vla-train --config '
                'config/train_tabletop_continuous.yaml, then export it to '
                'models/tabletop_continuous), or for plumbing only the grid model: --model '
                'models/tabletop --library config/tabletop_continuous_actions.yaml'
                if args.task == 'continuous' else
                '; no LIBERO model ships yet: --policy expert runs the scripted expert '
                'through the same topics, or train one (README: LIBERO)'
                if args.task == 'libero' else '')
        print(f'[demo] no model at {args.model} (config.json missing); pass --model{hint}',
              file=sys.stderr)
        return 1
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    print(f"[demo] ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, "
          f'{describe_transport(env)}, model {args.model}, task {args.task}, '
          f'{args.episodes} episodes', flush=True)
    out = subprocess.DEVNULL if args.quiet else None
    procs: dict[str, subprocess.Popen] = {}
    reasons: dict[str, _Reason] = {}
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env['ROS_DOMAIN_ID']))
    crashed = []
    listener = None
    try:
        listener = _Listener(context, sim_node(args))
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(listener.node)
        for name, cmd in child_commands(args).items():
            procs[name] = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.PIPE)
            reasons[name] = _Reason(procs[name].stderr, forward=not args.quiet)
        deadline = time.monotonic() + args.timeout
        while len(listener.results) < args.episodes and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
            crashed = [n for n, p in procs.items() if p.poll() is not None
                       and not (n == sim_node(args) and p.returncode == 0)]  # done: it exits
            if crashed:
                break
        end = time.monotonic() + 1.5  # a last diagnostics message for the frame counts
        while time.monotonic() < end and not crashed:
            executor.spin_once(timeout_sec=0.1)
    except KeyboardInterrupt:
        print('[demo] interrupted', file=sys.stderr)
    finally:
        codes = {name: stop(p) for name, p in procs.items()}
        why = {name: reason.join() for name, reason in reasons.items()}
        if listener is not None:
            if listener.results or not crashed:
                print(summary(listener, args.episodes), flush=True)
            listener.node.destroy_node()
        rclpy.try_shutdown(context=context)
    for name in crashed:
        reason = why.get(name, '')
        print(f'[demo] {name} exited early with code {codes[name]}'
              + (f': {reason}' if reason else ' (its log above says why)'), file=sys.stderr)
    completed = listener is not None and len(listener.results) > 0
    if not completed:
        print('[demo] no episode completed', file=sys.stderr)
    return 0 if completed and not crashed else 1


if __name__ == '__main__':
    sys.exit(main())
