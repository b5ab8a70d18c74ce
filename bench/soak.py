"""Soak test: flood a running action_selector for a long time and watch for drift.

    python bench/soak.py                         # 10 min against a node it starts (shipped model)
    python bench/soak.py --duration 20           # smoke check
    python bench/soak.py --attach --node /robot/action_selector   # a node already running
    python bench/soak.py --stress                # 10 min at 30 Hz, CPU burner, bad-input flood

It publishes frames at ``--rate`` Hz (a malformed one every ``--bad-every``), changes the
instruction every ``--instruction-period`` seconds, and reads the node's ``~/scores`` and
``/diagnostics``. Every window it prints decisions/s, end-to-end latency (image stamp to scores
received) and the node's own latency, the node's RSS and thread count (from diagnostics, so
``--attach`` works too), and the rejected/error/dropped counters. The summary compares the
first and the last window: throughput, latency drift, memory drift, error counts. Not a CI
test: run it before a release or after touching the node's threading. Exit status 1 when the
node died, stopped answering, or counted an error other than the injected bad input.

``--stress`` is the shared-lab worst case: 30 Hz frames while a CPU burner keeps every core
busy (one spinning process per core) and a flood of bad messages hits every input topic at
``--flood-rate`` Hz each: malformed and oversized images on ``image``, 100 KB instructions on
``instruction`` (cut to ``max_instruction_chars``, still meaningful), NaN and wrongly shaped
rows on ``candidates``. The summary adds the whole run's latency tail (p99, p99.9, max),
memory growth, decided/dropped/stale frames and the rejections by kind.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

INSTRUCTIONS = ('push the red ball to the left', 'pick up the blue cube',
                'push the green ring right', 'stop and wait')


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--duration', type=float, default=600.0, help='seconds (default 600)')
    p.add_argument('--rate', type=float, default=100.0, help='frames per second to publish')
    p.add_argument('--size', default='320x240', help='frame WxH (default 320x240)')
    p.add_argument('--bad-every', type=int, default=50,
                   help='every Nth frame is malformed (unsupported encoding); 0 = never')
    p.add_argument('--instruction-period', type=float, default=5.0,
                   help='seconds between instruction changes')
    p.add_argument('--window', type=float, default=None,
                   help='seconds per report line (default: duration/10, 2..60)')
    p.add_argument('--attach', action='store_true', help='use a running node; start none')
    p.add_argument('--node', default='/action_selector', help='fully qualified node name')
    p.add_argument('--model', default='', help='model_path for the node this script starts')
    p.add_argument('--device', default='cpu', help='device for the node this script starts')
    p.add_argument('--stress', action='store_true',
                   help='30 Hz, CPU burner on every core, bad-input flood on every topic')
    p.add_argument('--burners', type=int, default=None,
                   help='CPU burner processes (default: one per core with --stress, else 0)')
    p.add_argument('--flood-rate', type=float, default=None,
                   help='bad messages per second per input topic (default 100 with --stress)')
    args = p.parse_args(argv)
    if args.stress:
        args.rate = 30.0 if args.rate == p.get_default('rate') else args.rate
        args.burners = os.cpu_count() if args.burners is None else args.burners
        args.flood_rate = 100.0 if args.flood_rate is None else args.flood_rate
    args.burners = args.burners or 0
    args.flood_rate = args.flood_rate or 0.0
    return args


def _burn() -> None:
    """Keep one core busy until terminated (the CPU burner of --stress)."""
    x = 0
    while True:
        x = (x * 1103515245 + 12345) & 0xffffffff


def start_burners(count: int) -> list:
    procs = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(count)]
    for proc in procs:
        proc.start()
    return procs


def start_node(args) -> subprocess.Popen:
    """The node under test, every frame decided (max_rate_hz 0), no age check."""
    cmd = [sys.executable, '-m', 'vla_embedding_ros.ros.action_selector_node', '--ros-args',
           '-p', f'device:={args.device}', '-p', 'max_rate_hz:=0.0',
           '-p', 'max_image_age_s:=0.0', '-p', 'diagnostics_period_s:=1.0']
    if args.model:
        cmd += ['-p', f'model_path:={args.model}']
    # Its log goes to a file, not a pipe: a pipe nobody reads for 10 minutes could fill up
    # and block the node, which is exactly the kind of stall a soak must not cause itself.
    log = tempfile.NamedTemporaryFile('w+', prefix='vla_soak_node_', suffix='.log',
                                      delete=False)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONUNBUFFERED='1'))
    proc.log_path = log.name
    return proc


class Probe:
    """Publishers for frames and instructions, recorders of scores and diagnostics."""

    def __init__(self, node_name: str, width: int, height: int):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import Image
        from std_msgs.msg import Float32MultiArray, MultiArrayDimension, String

        from vla_embedding_ros.ros.action_selector_node import (
            LATCHED_QOS,
            RELIABLE_QOS,
            SENSOR_QOS,
        )
        from vla_embedding_ros.ros.image_conversion import numpy_to_image

        rclpy.init()
        self.node = rclpy.create_node('vla_soak_probe')
        ns = node_name.rsplit('/', 1)[0]
        self.image = self.node.create_publisher(Image, f'{ns}/image', SENSOR_QOS)
        self.instruction = self.node.create_publisher(String, f'{ns}/instruction', LATCHED_QOS)
        self.candidates = self.node.create_publisher(Float32MultiArray, f'{ns}/candidates',
                                                     RELIABLE_QOS)
        self.node_name = node_name
        self.latency, self.node_latency, self.decisions = [], [], 0
        self.all_latency: list[float] = []
        self.diag: dict = {}
        self.node.create_subscription(String, f'{node_name}/scores', self._on_scores, 100)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 10)
        rng = np.random.default_rng(0)
        self.frames = [numpy_to_image(rng.integers(0, 256, (height, width, 3), np.uint8))
                       for _ in range(8)]
        self.bad = Image(height=height, width=width, encoding='yuv422', step=width * 2)
        self.bad.data = bytes(height * width * 2)
        self.String = String
        self.flood_images = [self.bad, _image(Image, 'rgb8', 8, 8, 20, bytes(192)),
                             _image(Image, 'rgb8', 0, 8, 24, b''),
                             # declares 20000x20000, carries 24 bytes: refused in O(1)
                             _image(Image, 'rgb8', 20000, 20000, 60000, bytes(24))]
        self.flood_instructions = [String(data=(INSTRUCTIONS[k % len(INSTRUCTIONS)] + ' ')
                                          * 5000) for k in range(len(INSTRUCTIONS))]
        nan = Float32MultiArray(data=[float('nan')] * 14)
        nan.layout.dim = [MultiArrayDimension(label='n', size=2, stride=14),
                          MultiArrayDimension(label='d', size=7, stride=7)]
        self.flood_candidates = [nan, Float32MultiArray(data=[1.0] * 13)]

    def _on_scores(self, msg) -> None:
        scores = json.loads(msg.data)
        sent = scores['stamp']['sec'] + scores['stamp']['nanosec'] * 1e-9
        now = self.node.get_clock().now().nanoseconds * 1e-9
        self.latency.append((now - sent) * 1e3)
        self.all_latency.append(self.latency[-1])
        self.node_latency.append(scores['latency_ms'])
        self.decisions += 1

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if status.hardware_id == self.node_name:
                self.diag = {kv.key: kv.value for kv in status.values}

    def spin(self, seconds: float) -> None:
        import rclpy
        end = time.monotonic() + seconds
        while True:
            rclpy.spin_once(self.node, timeout_sec=max(0.0, min(0.002, end - time.monotonic())))
            if time.monotonic() >= end:
                return

    def connected(self) -> bool:
        return (self.image.get_subscription_count() > 0
                and self.instruction.get_subscription_count() > 0)

    def say(self, text: str) -> None:
        self.instruction.publish(self.String(data=text))

    def flood(self, i: int) -> None:
        """One bad message on every input topic."""
        self.image.publish(self.flood_images[i % len(self.flood_images)])
        self.instruction.publish(self.flood_instructions[i % len(self.flood_instructions)])
        self.candidates.publish(self.flood_candidates[i % len(self.flood_candidates)])

    def send(self, i: int, bad_every: int) -> None:
        msg = self.bad if bad_every and i % bad_every == bad_every - 1 else self.frames[i % 8]
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.image.publish(msg)


def _image(cls, encoding: str, height: int, width: int, step: int, data: bytes):
    msg = cls(height=height, width=width, encoding=encoding, step=step)
    msg.data = data
    return msg


def _pct(values, q) -> float:
    return float(np.percentile(values, q)) if values else float('nan')


def _counts(text: str) -> dict[str, int]:
    if not text or text == 'none':
        return {}
    return {k: int(v) for k, v in (p.split('=') for p in text.split(', '))}


def run(args) -> int:
    width, height = (int(v) for v in args.size.lower().split('x'))
    window = args.window or min(60.0, max(2.0, args.duration / 10))
    proc = None if args.attach else start_node(args)
    # Forked before rclpy starts its DDS threads in this process, and killed with SIGKILL:
    # rclpy's signal handlers, inherited by a fork, would swallow a SIGTERM.
    burners = start_burners(args.burners)
    probe = Probe(args.node, width, height)
    deadline = time.monotonic() + 60
    while not probe.connected():
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            print('the node never became active' + (
                f' (log {proc.log_path}):\n{open(proc.log_path).read()[-3000:]}'
                if proc is not None else ''))
            if proc is not None:
                proc.kill()
            return 1
        probe.spin(0.1)
    probe.say(INSTRUCTIONS[0])
    probe.spin(1.0)
    print(f'soak: {args.duration:.0f} s, {args.rate:.0f} Hz {width}x{height} frames, '
          f'bad every {args.bad_every}, node {args.node} '
          f'({"attached" if args.attach else f"pid {proc.pid}"}), {args.burners} CPU '
          f'burner(s) on {os.cpu_count()} core(s), flood {args.flood_rate:.0f} Hz per topic')
    header = (f'{"t_s":>6} {"sent":>7} {"dec/s":>7} {"e2e_p50":>8} {"e2e_p99":>8} '
              f'{"node_p50":>8} {"rss_MiB":>8} {"thr":>4} {"dropped":>8} {"rejected":>9} '
              f'{"errors":>7}')
    print(header)
    rows, sent, flooded, start = [], 0, 0, time.monotonic()
    next_instruction = start + args.instruction_period
    while time.monotonic() - start < args.duration:
        win_start, win_sent = time.monotonic(), sent
        probe.latency, probe.node_latency, probe.decisions = [], [], 0
        while (now := time.monotonic()) - win_start < window and now - start < args.duration:
            if sent < (now - start) * args.rate:
                probe.send(sent, args.bad_every)
                sent += 1
            if flooded < (now - start) * args.flood_rate:
                probe.flood(flooded)
                flooded += 1
            if now >= next_instruction:
                probe.say(INSTRUCTIONS[int(now - start) % len(INSTRUCTIONS)])
                next_instruction += args.instruction_period
            probe.spin(0.0005)
        span = time.monotonic() - win_start
        d = probe.diag
        row = {'t': time.monotonic() - start, 'sent': sent - win_sent,
               'rate': probe.decisions / span, 'e2e50': _pct(probe.latency, 50),
               'e2e99': _pct(probe.latency, 99), 'node50': _pct(probe.node_latency, 50),
               'rss': float(d.get('rss_mb', 'nan')), 'threads': d.get('threads', '?'),
               'dropped': int(d.get('frames_dropped', 0)),
               'rejected': sum(_counts(d.get('rejected', '')).values()),
               'errors': _counts(d.get('errors', ''))}
        rows.append(row)
        print(f'{row["t"]:6.0f} {row["sent"]:7d} {row["rate"]:7.1f} {row["e2e50"]:8.1f} '
              f'{row["e2e99"]:8.1f} {row["node50"]:8.1f} {row["rss"]:8.1f} '
              f'{row["threads"]:>4} {row["dropped"]:8d} {row["rejected"]:9d} '
              f'{sum(row["errors"].values()):7d}', flush=True)
        if proc is not None and proc.poll() is not None:
            break
    for burner in burners:
        burner.kill()
    return summarise(rows, proc, probe, sent, flooded)


def summarise(rows, proc, probe, sent: int, flooded: int) -> int:
    first, last = rows[0], rows[-1]
    alive = proc is None or proc.poll() is None
    total = sum(r['rate'] for r in rows) / len(rows)
    print('\nsummary')
    print(f'  node alive:             {alive}')
    print(f'  decisions/s:            mean {total:.1f}, first window {first["rate"]:.1f}, '
          f'last {last["rate"]:.1f}')
    print(f'  e2e latency p50 drift:  {last["e2e50"] - first["e2e50"]:+.1f} ms '
          f'({first["e2e50"]:.1f} -> {last["e2e50"]:.1f}); p99 last {last["e2e99"]:.1f} ms')
    print(f'  node RSS drift:         {last["rss"] - first["rss"]:+.1f} MiB '
          f'({first["rss"]:.1f} -> {last["rss"]:.1f})')
    print(f'  node RSS max:           {max(r["rss"] for r in rows):.1f} MiB')
    print(f'  threads:                {first["threads"]} -> {last["threads"]}')
    lat = probe.all_latency
    print(f'  e2e latency, whole run: p50 {_pct(lat, 50):.1f}, p99 {_pct(lat, 99):.1f}, '
          f'p99.9 {_pct(lat, 99.9):.1f}, max {max(lat, default=float("nan")):.1f} ms '
          f'({len(lat)} decisions)')
    d = probe.diag
    print(f'  frames:                 sent {sent}, received {d.get("frames_received", "?")}, '
          f'decided {d.get("frames_processed", "?")}, dropped (slot) {last["dropped"]}, '
          f'stale {d.get("frames_stale", "?")}')
    print(f'  flood:                  {flooded} bad messages on each of image, instruction, '
          'candidates')
    print(f'  rejected (bad input):   {probe.diag.get("rejected", "none")}')
    print(f'  errors (faults):        {probe.diag.get("errors", "none")}')
    if proc is not None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    ok = alive and last['rate'] > 0 and not last['errors']
    if proc is not None:
        print(f'  node log:               {proc.log_path}')
    print(f'  verdict:                {"OK" if ok else "FAIL"}')
    return 0 if ok else 1


def main(argv=None) -> int:
    return run(parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
