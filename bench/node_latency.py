"""Node latency over real DDS: the action_selector node against a naive node, same workload.

    python bench/node_latency.py                 # 96x96 and 640x480 at 30 Hz, 20 s each
    python bench/node_latency.py --quick         # 3 s each: a smoke check
    python bench/node_latency.py --device cuda --node-threads 0 --impl fast
    python bench/node_latency.py --backends torch,onnxruntime --node-threads 1 --sizes 640x480

Three processes per row, as on a robot: a camera publisher (this script, ``--role
publisher``) sends rgb8 frames of rendered tabletop scenes at ``--rate`` Hz, the node under
test decides, and this process listens to ``~/scores``. Reported per row:

* node p50/p95/p99: inside the node, image callback entered -> outputs published (the
  ``latency_ms`` the node writes into ``~/scores``; queueing for the worker included);
* e2e p50/p95/p99: the frame's header stamp (set by the publisher right before publishing)
  -> the scores message received here; DDS transport of the frame and of the answer included;
* sent / decided / dropped: frames published, decisions received, and the difference (frames
  replaced by a newer one before the node got to them, or lost by best-effort transport).

Implementations:

* ``fast``: the package's node (``python -m vla_embedding_ros.ros.action_selector_node``):
  one copy from the message buffer, resize and normalise in torch, instruction and library
  embeddings cached, one matrix product, a worker thread off the callback.
  With ``--backends torch,onnxruntime`` one fast row per backend (``onnxruntime`` runs the
  ``vla-export-onnx`` export in ``--onnx-path``; exported to a temporary folder when absent).
* ``transport``: a node that answers every frame at once without looking at it: the floor
  that DDS alone sets for e2e latency and for frames lost on the way (large best-effort
  frames are dropped by transport when the machine is busy, before any node sees them).
* ``naive``: written below as most people would write it first, with the same model, topics,
  QoS and scores JSON: ``np.array(msg.data)``, PIL resize and NumPy normalisation on the CPU,
  the instruction re-encoded every frame, each library action embedded and scored one at a
  time in a Python loop, all inside the subscription callback.

Every process runs with the package's ``config/fastdds_large_frames.xml`` (shared memory
with a 16 MB segment; ``--dds-transports``): with Fast DDS's default transports most 640x480
rgb8 frames (921 KB) never arrive, which measures the transport's losses rather than the node
(``--dds-transports DEFAULT`` shows them; ``LARGE_DATA`` is Fast DDS's TCP-based answer).

A row whose processes never discover each other (a DDS discovery stall: the node is not seen
in 60 s, or the camera's publisher matches no subscription in 20 s) is started again once,
with fresh processes, and the retry is reported under the table.

Under the table: the model's FLOPs per decision and the floor they set at the matrix-product
throughput measured in this run (1 thread), so each fast row's ``x floor`` says how far its
node p50 is from the arithmetic limit.

The first ``--warmup`` seconds of decisions are left out. Run it on an otherwise idle machine:
the publisher, the node and this listener share its cores.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchlib import cpu_name, machine_line, percentile, pick_device, print_table, write_json
from vla_embedding_ros.ros.dds_transport import BUILTIN_VAR, PROFILES_VAR, large_frames_profile
from vla_embedding_ros.ros.dds_transport import describe as describe_transport

REPO = Path(__file__).resolve().parents[1]
NODE_NAME = 'action_selector'
CPU_TARGET_P50_MS = 1.5    # issue 18 target: CPU, default model, 640x480, node-internal p50
CPU_TARGET_SPEEDUP = 15.0  # ... and at least this many times faster than the naive baseline
CPU_TARGET_E2E_MS = 2.0    # ... and e2e p50 within this of the transport-only row
# Discovery normally takes 0.5-4 s here; past these the row counts as a discovery stall.
NODE_UP_S = 60.0
NODE_UP_COMPILE_S = 180.0    # torch.compile runs at configure, before the node subscribes
CAMERA_MATCH_S = 20.0
DISCOVERY_STALL_EXIT = 3


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--role', default='bench',
                   choices=('bench', 'publisher', 'naive', 'transport'),
                   help=argparse.SUPPRESS)
    p.add_argument('--model', default=str(REPO / 'models' / 'tabletop'))
    p.add_argument('--device', default='cpu', help='cpu | cuda | auto (fast node)')
    p.add_argument('--impl', default='transport,fast,naive',
                   help='comma-separated: transport, fast, naive')
    p.add_argument('--node-threads', default='0',
                   help='torch_threads of the fast node, comma-separated for one row each '
                        '(0 = torch default, one per core)')
    p.add_argument('--compile', default='none', help='compile parameter of the fast node')
    p.add_argument('--precision', default='fp32', help='precision parameter of the fast node')
    p.add_argument('--backends', default='torch',
                   help='comma-separated backend parameters of the fast node: torch, '
                        'onnxruntime (one row each)')
    p.add_argument('--onnx-path', default=None,
                   help='vla-export-onnx folder for backend onnxruntime (default MODEL/onnx, '
                        'exported to a temporary folder when absent)')
    p.add_argument('--sizes', default='96x96,640x480', help='comma-separated WxH frames')
    p.add_argument('--rate', type=float, default=30.0, help='camera frames per second')
    p.add_argument('--duration', type=float, default=20.0, help='seconds per row')
    p.add_argument('--warmup', type=float, default=1.0, help='seconds of decisions left out')
    p.add_argument('--domain', type=int, default=None, help='ROS_DOMAIN_ID (default: random)')
    p.add_argument('--dds-transports', default='profile',
                   help="'profile' (default): the package's fastdds_large_frames.xml for "
                        "every process (the default transports lose most 640x480 frames); "
                        "'env': the environment's; else a FASTDDS_BUILTIN_TRANSPORTS value "
                        "such as DEFAULT or LARGE_DATA")
    p.add_argument('--quick', action='store_true', help='3 s per row')
    p.add_argument('--json', help='also write the rows here (JSON)')
    p.add_argument('--size', help=argparse.SUPPRESS)            # publisher role
    p.add_argument('--count-file', help=argparse.SUPPRESS)      # publisher role
    return p.parse_args(argv)


def _size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split('x'))
    return width, height


# -- the camera: a separate process ------------------------------------------------------------
def run_publisher(args) -> int:
    """Publish rendered tabletop frames at ``--rate`` for ``--duration`` s; write the count."""
    import cv2
    import rclpy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from vla_embedding_ros.data.tabletop import TabletopGenerator
    from vla_embedding_ros.ros.action_selector_node import LATCHED_QOS, SENSOR_QOS

    width, height = _size(args.size)
    samples = list(TabletopGenerator(split='val', seed=7).samples(30))
    # Pre-rendered and pre-serialised: the camera's own cost must not skew its rate.
    payloads = [cv2.resize(s.image, (width, height), interpolation=cv2.INTER_LINEAR).tobytes()
                for s in samples]
    rclpy.init()
    node = rclpy.create_node('bench_camera')
    images = node.create_publisher(Image, 'image', SENSOR_QOS)
    instruction = node.create_publisher(String, 'instruction', LATCHED_QOS)
    # Start the clock only once the node's subscriptions have matched this process's
    # publishers: discovery takes a second or two on a busy machine, and frames sent before
    # it would be counted as dropped. The transport node has no instruction subscription.
    # Phases go to this process's log (stderr): the bench prints it when a row goes wrong.
    _phase(f'camera {width}x{height} ready, waiting for the image subscription')
    waited = time.monotonic()
    deadline = waited + CAMERA_MATCH_S
    while images.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    _phase(f'image subscriptions matched: {images.get_subscription_count()} after '
           f'{time.monotonic() - waited:.1f} s')
    if images.get_subscription_count() == 0:
        Path(args.count_file).write_text('0')
        # Straight out: a participant stuck in discovery has hung in shutdown here. The bench
        # retries the row with fresh processes.
        os._exit(DISCOVERY_STALL_EXIT)
    deadline = time.monotonic() + 3.0
    while instruction.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    instruction.publish(String(data=samples[0].instruction))
    time.sleep(0.2)   # the latched instruction lands before the first frame
    msg = Image(height=height, width=width, encoding='rgb8', is_bigendian=0, step=width * 3)
    msg.header.frame_id = 'camera'
    sent, period = 0, 1.0 / args.rate
    start = time.monotonic()
    while time.monotonic() - start < args.duration:
        msg.data = payloads[sent % len(payloads)]
        msg.header.stamp = node.get_clock().now().to_msg()
        images.publish(msg)
        sent += 1
        rclpy.spin_once(node, timeout_sec=0.0)
        delay = start + sent * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    Path(args.count_file).write_text(str(sent))
    _phase(f'sent {sent} frames, shutting down')
    node.destroy_node()
    rclpy.try_shutdown()
    _phase('shut down')
    return 0


def _phase(text: str) -> None:
    print(f'{time.strftime("%H:%M:%S")} {text}', file=sys.stderr, flush=True)


def _log_tail(path: str, lines: int = 25) -> str:
    text = Path(path).read_text(errors='replace').splitlines()[-lines:]
    return f'--- last lines of {path} ---\n' + '\n'.join(text)


# -- the transport floor: answer at once ---------------------------------------------------------
def run_transport_node(args) -> int:
    """Publish a scores message for every frame straight from the callback."""
    import rclpy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from vla_embedding_ros.ros.action_selector_node import SENSOR_QOS

    rclpy.init()
    node = rclpy.create_node(NODE_NAME)
    scores = node.create_publisher(String, '~/scores', 10)

    def on_image(msg):
        start = time.monotonic()
        stamp = {'sec': msg.header.stamp.sec, 'nanosec': msg.header.stamp.nanosec}
        scores.publish(String(data=json.dumps(
            {'stamp': stamp, 'latency_ms': (time.monotonic() - start) * 1e3})))

    node.create_subscription(Image, 'image', on_image, SENSOR_QOS)
    _phase('transport node spinning')
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


# -- the naive baseline node ---------------------------------------------------------------------
def run_naive_node(args) -> int:
    """The baseline: everything in the callback, PIL on the CPU, nothing cached, a loop."""
    import rclpy
    import torch
    from PIL import Image as PILImage
    from rclpy.node import Node
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from vla_embedding_ros.model.vla_model import VLAModel
    from vla_embedding_ros.ros.action_selector_node import LATCHED_QOS, SENSOR_QOS
    from vla_embedding_ros.selection import ActionLibrary

    class NaiveSelector(Node):
        def __init__(self, model_path: str):
            super().__init__(NODE_NAME)
            self.model = VLAModel.from_pretrained(model_path, device='cpu').eval()
            self.library = ActionLibrary.from_yaml(Path(model_path) / 'actions.yaml')
            size = self.model.image_size
            self.size = (size, size) if isinstance(size, int) else tuple(size)
            self.mean = np.array(self.model.image_mean, np.float32)
            self.std = np.array(self.model.image_std, np.float32)
            self.instruction = None
            self.create_subscription(String, 'instruction', self.on_instruction, LATCHED_QOS)
            self.create_subscription(Image, 'image', self.on_image, SENSOR_QOS)
            self.scores = self.create_publisher(String, '~/scores', 10)
            self.selected = self.create_publisher(String, '~/selected_action', 10)

        def on_instruction(self, msg):
            self.instruction = msg.data

        def on_image(self, msg):
            start = time.monotonic()
            if self.instruction is None:
                return
            frame = np.array(msg.data, dtype=np.uint8).reshape(msg.height, msg.width, 3)
            resized = PILImage.fromarray(frame).resize(self.size[::-1], PILImage.BILINEAR)
            pixels = (np.asarray(resized, np.float32) / 255.0 - self.mean) / self.std
            pixels = torch.from_numpy(pixels.transpose(2, 0, 1)).unsqueeze(0)
            with torch.no_grad():
                text = self.model.encode_text([self.instruction])
                query = self.model.encode_query(pixels, text)
                best, best_score = -1, float('-inf')
                for i, action in enumerate(self.library):
                    embedding = self.model.encode_actions(action.params[None], None)
                    score = float(self.model.score(query, embedding)[0, 0])
                    if score > best_score:
                        best, best_score = i, score
            name = self.library.names[best]
            self.selected.publish(String(data=name))
            latency_ms = (time.monotonic() - start) * 1e3
            stamp = {'sec': msg.header.stamp.sec, 'nanosec': msg.header.stamp.nanosec}
            self.scores.publish(String(data=json.dumps(
                {'selected': name, 'stamp': stamp, 'latency_ms': latency_ms})))

    rclpy.init()
    node = NaiveSelector(args.model)
    _phase('naive node spinning')
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


# -- the benchmark: start processes, listen, summarise -------------------------------------------
class Listener:
    """Receives ~/scores (end-to-end latency taken here) and the node's /diagnostics."""

    def __init__(self):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from std_msgs.msg import String

        rclpy.init()
        self.node = rclpy.create_node('bench_listener')
        # (received, e2e ms, node ms, selector ms: the part of node ms spent in select())
        self.records: list[tuple[float, float, float, float]] = []
        self.diag: dict[str, str] = {}
        self.node.create_subscription(String, f'/{NODE_NAME}/scores', self._on_scores, 100)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 10)

    def _on_scores(self, msg) -> None:
        now_ns = self.node.get_clock().now().nanoseconds
        scores = json.loads(msg.data)
        stamp_ns = scores['stamp']['sec'] * 1_000_000_000 + scores['stamp']['nanosec']
        self.records.append((time.monotonic(), (now_ns - stamp_ns) * 1e-6,
                             float(scores['latency_ms']),
                             float(scores.get('inference_ms', float('nan')))))

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if status.hardware_id.endswith(NODE_NAME):
                self.diag = {kv.key: kv.value for kv in status.values}

    def spin(self, seconds: float, until=None) -> bool:
        import rclpy
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(self.node, timeout_sec=0.01)
            if until is not None and until():
                return True
        return False

    def node_ready(self) -> bool:
        return (self.node.count_subscribers('/image') > 0
                and self.node.count_publishers(f'/{NODE_NAME}/scores') > 0)

    def close(self) -> None:
        import rclpy
        self.node.destroy_node()
        rclpy.try_shutdown()


def _start(cmd: list[str], env: dict, log_name: str) -> subprocess.Popen:
    # Logs go to a file: a pipe nobody reads could fill up and stall the process under test.
    log = tempfile.NamedTemporaryFile('w+', prefix=f'vla_bench_{log_name}_', suffix='.log',
                                      delete=False)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    proc.log_path = log.name
    return proc


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        _phase(f'{proc.args[1:4]} ignored SIGINT for 10 s; killed')
        proc.kill()
        proc.wait()


def node_command(args, impl: str, threads: int, backend: str = 'torch') -> list[str]:
    if impl in ('naive', 'transport'):
        return [sys.executable, __file__, '--role', impl, '--model', args.model]
    cmd = [sys.executable, '-m', 'vla_embedding_ros.ros.action_selector_node', '--ros-args',
           '-p', f'model_path:={args.model}', '-p', f'device:={args.device}',
           '-p', 'max_rate_hz:=0.0', '-p', 'max_image_age_s:=0.0',
           '-p', f'compile:={args.compile}', '-p', f'precision:={args.precision}',
           '-p', f'backend:={backend}']
    if backend == 'onnxruntime':
        cmd += ['-p', f'onnx_path:={args.onnx_path}']
    if threads > 0:
        cmd += ['-p', f'torch_threads:={threads}']
    return cmd


class DiscoveryStall(RuntimeError):
    """The row's processes never found each other over DDS: no measurement, retry it."""


def measure(args, listener: Listener, env: dict, impl: str, threads: int,
            size: str, backend: str = 'torch') -> dict:
    """One row: start the node, wait for it, run the camera for --duration, summarise."""
    node = camera = None
    count_file = tempfile.NamedTemporaryFile(prefix='vla_bench_sent_', delete=False).name
    try:
        node = _start(node_command(args, impl, threads, backend), env, f'{impl}_node')
        # torch.compile and model loading happen before the node subscribes.
        waited = time.monotonic()
        limit = NODE_UP_S if args.compile == 'none' else NODE_UP_COMPILE_S
        listener.spin(limit, until=lambda: listener.node_ready() or node.poll() is not None)
        if node.poll() is not None:
            raise RuntimeError(f'{impl} node exited with {node.returncode}; '
                               + _log_tail(node.log_path))
        if not listener.node_ready():
            raise DiscoveryStall(f'{impl} node not discovered in {limit:g} s; '
                                 + _log_tail(node.log_path))
        _phase(f'{impl} node up after {time.monotonic() - waited:.1f} s')
        listener.records.clear()
        listener.diag = {}
        camera = _start([sys.executable, __file__, '--role', 'publisher', '--size', size,
                         '--rate', str(args.rate), '--duration', str(args.duration),
                         '--count-file', count_file], env, 'camera')
        started = time.monotonic()
        listener.spin(args.duration + 90.0, until=lambda: camera.poll() is not None)
        listener.spin(1.5)    # answers to the last frames, and a diagnostics message
        sent = int(Path(count_file).read_text() or 0)
        if camera.poll() == DISCOVERY_STALL_EXIT:
            raise DiscoveryStall(f'the camera matched no image subscription of the {impl} '
                                 f'node in {CAMERA_MATCH_S:g} s; '
                                 + _log_tail(camera.log_path) + '\n' + _log_tail(node.log_path))
    finally:
        _stop(camera)
        _stop(node)
        os.unlink(count_file)
    if sent == 0 or not listener.records:
        # Say why in the output: CI keeps the output, not the logs in /tmp.
        print(f'{impl} at {size}: sent {sent}, decided {len(listener.records)}\n'
              f'{_log_tail(camera.log_path)}\n{_log_tail(node.log_path)}',
              file=sys.stderr, flush=True)
    first = listener.records[0][0] if listener.records else started
    kept = [r for r in listener.records if r[0] - first >= args.warmup]
    e2e, inside = [r[1] for r in kept], [r[2] for r in kept]
    select = [r[3] for r in kept if r[3] == r[3]]   # NaN: the node does not report it
    label = impl
    if impl == 'fast':
        label = ('fast' if backend == 'torch' else f'fast {backend}') + \
            f' ({threads or "default"} thr)'
    return {'impl': label, 'frame': size, 'sent': sent, 'decided': len(listener.records),
            'dropped': max(0, sent - len(listener.records)),
            # The node's own counters (fast only): frames its callback saw, and those it
            # replaced before deciding; sent - received is what transport lost.
            'node_received': listener.diag.get('frames_received', '-'),
            'node_dropped': listener.diag.get('frames_dropped', '-'),
            **{f'node_p{q}': percentile(inside, q) for q in (50, 95, 99)},
            **{f'e2e_p{q}': percentile(e2e, q) for q in (50, 95, 99)},
            'select_p50': percentile(select, 50)}


def summary_notes(rows: list[dict], args) -> list[str]:
    notes = []
    for size in args.sizes.split(','):
        naive = [r for r in rows if r['frame'] == size and r['impl'] == 'naive']
        for fast in (r for r in rows if r['frame'] == size and r['impl'].startswith('fast')):
            if naive:
                notes.append(f'{size}, {fast["impl"]}: naive/fast node p50 = '
                             f'{naive[0]["node_p50"] / fast["node_p50"]:.1f}x, e2e p50 = '
                             f'{naive[0]["e2e_p50"] / fast["e2e_p50"]:.1f}x')
    if args.device == 'cpu':
        big = [r for r in rows if r['frame'] == '640x480']
        naive = [r for r in big if r['impl'] == 'naive']
        transport = [r for r in big if r['impl'] == 'transport']
        for fast in (r for r in big if r['impl'].startswith('fast')):
            p50 = fast['node_p50']
            verdict = ('met' if p50 <= CPU_TARGET_P50_MS else
                       f'missed by {p50 - CPU_TARGET_P50_MS:.2f} ms')
            line = (f'target, CPU 640x480 node p50 <= {CPU_TARGET_P50_MS:g} ms: '
                    f'{fast["impl"]} {p50:.2f} ms, {verdict}')
            if naive:
                ratio = naive[0]['node_p50'] / p50
                line += (f'; >= {CPU_TARGET_SPEEDUP:g}x the naive baseline: {ratio:.1f}x, '
                         + ('met' if ratio >= CPU_TARGET_SPEEDUP else 'missed'))
            if transport:
                gap = fast['e2e_p50'] - transport[0]['e2e_p50']
                line += (f'; e2e p50 within {CPU_TARGET_E2E_MS:g} ms of transport: '
                         f'+{gap:.2f} ms, ' + ('met' if gap <= CPU_TARGET_E2E_MS else 'missed'))
            notes.append(line)
    return notes


def floor_notes(args, rows: list[dict]) -> list[str]:
    """The model's FLOPs per decision, the floor they set at this machine's measured matrix
    product throughput (1 thread), and each fast row's node p50 in multiples of it."""
    import torch
    from query_path import matmul_gflops

    from vla_embedding_ros.model import VLAModel
    from vla_embedding_ros.model.deploy import query_flops

    try:
        model = VLAModel.from_pretrained(args.model, device='cpu')
    except Exception as exc:  # a zero-shot checkpoint: no plan to count
        return [f'FLOPs not counted for {args.model}: {type(exc).__name__}']
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    gflops = matmul_gflops()
    torch.set_num_threads(threads)
    parts = query_flops(model, num_cameras=1, text_len=10)
    flops = parts['vision'] + parts['fusion'] + 2 * 80 * model.config.embed_dim
    floor_ms = flops / (gflops * 1e9) * 1e3
    notes = [f'FLOPs per decision (cached instruction): {flops / 1e6:.1f} M (image encoder '
             f'{parts["vision"] / 1e6:.1f} M, fusion {parts["fusion"] / 1e6:.1f} M); matrix '
             f'products run at {gflops:.1f} GFLOP/s on 1 thread here (512x512 fp32, measured '
             f'in this run): floor {floor_ms:.2f} ms']
    for r in rows:
        if r['impl'].startswith('fast') and r['node_p50'] == r['node_p50']:
            r['x_floor'] = r['node_p50'] / floor_ms
            notes.append(f'{r["frame"]}, {r["impl"]}: node p50 = {r["x_floor"]:.1f}x the '
                         'arithmetic floor')
    return notes


def _ensure_export(args) -> object:
    """Point --onnx-path at a complete export; make one in a temporary folder if needed."""
    from vla_embedding_ros.model.onnx_export import default_export_dir, export_onnx

    path = Path(args.onnx_path) if args.onnx_path else default_export_dir(args.model)
    if (path / 'manifest.json').is_file():
        args.onnx_path = str(path)
        return None
    tmp = tempfile.TemporaryDirectory(prefix='vla_bench_onnx_')
    _phase(f'no ONNX export in {path}: exporting to {tmp.name} for this run')
    args.onnx_path = str(export_onnx(args.model, Path(tmp.name) / 'onnx',
                                     log=lambda *_: None))
    return tmp


def run_bench(args) -> int:
    if args.quick:
        args.duration, args.warmup = 3.0, 0.5
    domain = args.domain if args.domain is not None else int(
        os.environ.get('ROS_DOMAIN_ID') or random.randint(120, 200))
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED='1')
    env.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
    if args.dds_transports != 'env':
        for var in (PROFILES_VAR, BUILTIN_VAR):
            env.pop(var, None)
            os.environ.pop(var, None)
        if args.dds_transports == 'profile':
            env[PROFILES_VAR] = large_frames_profile()
        else:
            env[BUILTIN_VAR] = args.dds_transports
    os.environ.update({k: env[k] for k in ('ROS_DOMAIN_ID', 'RMW_IMPLEMENTATION', PROFILES_VAR,
                                           BUILTIN_VAR) if k in env})
    impls = [i.strip() for i in args.impl.split(',') if i.strip()]
    unknown = set(impls) - {'transport', 'fast', 'naive'}
    if unknown:
        raise SystemExit(f'unknown --impl {sorted(unknown)}; expected transport, fast, naive')
    backends = [b.strip() for b in args.backends.split(',') if b.strip()]
    if set(backends) - {'torch', 'onnxruntime'}:
        raise SystemExit(f'unknown --backends {backends}; expected torch, onnxruntime')
    export_tmp = _ensure_export(args) if 'onnxruntime' in backends else None
    listener = Listener()
    rows, retries = [], []
    try:
        for size in args.sizes.split(','):
            for impl in impls:
                threads_list = [int(t) for t in args.node_threads.split(',')] \
                    if impl == 'fast' else [0]
                runs = [(b, t) for b in backends for t in threads_list] \
                    if impl == 'fast' else [('torch', 0)]
                for backend, threads in runs:
                    try:
                        rows.append(measure(args, listener, env, impl, threads, size, backend))
                    except DiscoveryStall as stall:
                        print(f'discovery stall, retrying the row once: {stall}',
                              file=sys.stderr, flush=True)
                        retries.append(f'{impl} at {size}: {str(stall).split(";")[0]}')
                        rows.append(measure(args, listener, env, impl, threads, size,
                                            backend))
                    print(f'  measured {rows[-1]["impl"]} at {size}: '
                          f'{rows[-1]["decided"]} decisions', file=sys.stderr, flush=True)
    finally:
        listener.close()
        if export_tmp is not None:
            export_tmp.cleanup()
    where = (f'device {args.device}, compile {args.compile}, precision {args.precision}, '
             f'DDS transports {describe_transport(env)}')
    print(machine_line(pick_device(args.device)).rsplit(', device', 1)[0] + f', {where}')
    print_table(f'action_selector latency over DDS, {args.rate:g} Hz rgb8 frames, '
                f'{args.duration:g} s per row (ms)',
                ['node', 'frame', 'sent', 'decided', 'dropped', 'node p50', 'node p95',
                 'node p99', 'of which select p50', 'e2e p50', 'e2e p95', 'e2e p99'],
                [[r['impl'], r['frame'], r['sent'], r['decided'], r['dropped'], r['node_p50'],
                  r['node_p95'], r['node_p99'], r['select_p50'], r['e2e_p50'], r['e2e_p95'],
                  r['e2e_p99']] for r in rows],
                summary_notes(rows, args) + floor_notes(args, rows)
                + [f'retried after a DDS discovery stall: {r}' for r in retries])
    if args.json:
        write_json(args.json, {'machine': f'{cpu_name()} ({os.cpu_count()} cores)',
                               'device': args.device, 'rate_hz': args.rate,
                               'duration_s': args.duration, 'rows': rows})
    return 0 if all(r['decided'] > 0 for r in rows) else 1


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.role == 'publisher':
        return run_publisher(args)
    if args.role == 'naive':
        return run_naive_node(args)
    if args.role == 'transport':
        return run_transport_node(args)
    return run_bench(args)


if __name__ == '__main__':
    raise SystemExit(main())
