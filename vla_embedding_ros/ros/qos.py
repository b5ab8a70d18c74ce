"""The QoS profiles of the package's nodes, in one place so the selector and the simulators
(tabletop_sim, and the simulators that follow it) publish and subscribe with matching ones.

Tests and benches import these to talk to the nodes with the QoS the nodes use.
"""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

# The selector's camera subscriptions. Depth 5 as ROS's own sensor-data profile: with depth 1
# a burst of bad frames on the topic displaced good ones inside DDS, before any callback could
# count them (bench/soak.py --stress, 60 s, 2 cores burning: 52% of good frames decided at
# depth 1, 83% at depth 5). The callback still keeps only the newest frame per camera, so
# latency does not queue up.
SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                        reliability=ReliabilityPolicy.BEST_EFFORT,
                        durability=DurabilityPolicy.VOLATILE)
# A simulator's camera: only the newest frame matters (the selector's SENSOR_QOS matches it).
CAMERA_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                        reliability=ReliabilityPolicy.BEST_EFFORT,
                        durability=DurabilityPolicy.VOLATILE)
# The instruction (and a success rate): the last message reaches a node that starts later.
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Decisions, candidates and cmd_vel: every message counts, none is replayed to late joiners.
RELIABLE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                          reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.VOLATILE)
INSTRUCTION_QOS = RELIABLE_QOS   # the volatile twin of the latched instruction subscription
# A simulator's episode results: a burst of quick episodes must not overwrite unread ones,
# and a listener that matched late (discovery under load can take longer than a few quick
# episodes: the demo once saw none of 3) still gets the last 100 (transient local; a
# volatile subscriber matches too, without that history).
RESULTS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)


def flush(publishers, seconds: float = 2.0, listener_s: float = 3.0) -> None:
    """Wait until reliable subscribers acknowledged what ``publishers`` sent (an unacknowledged
    result would die with the process), first up to ``listener_s`` for a subscriber to match
    (a listener discovered late, e.g. the demo's under load, still gets the transient-local
    history while the process lives). Quiet when the context is already shutting down (the
    demo stops a finished simulator with SIGINT, which may land during the wait)."""
    import time

    from rclpy.duration import Duration
    from rclpy.exceptions import InvalidHandle
    from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy

    end = time.monotonic() + listener_s
    try:
        while time.monotonic() < end and not all(p.get_subscription_count() for p in publishers):
            time.sleep(0.05)
    except (_rclpy.RCLError, InvalidHandle):
        return
    for pub in publishers:
        try:
            pub.wait_for_all_acked(Duration(seconds=seconds))
        except (_rclpy.RCLError, InvalidHandle):
            return
