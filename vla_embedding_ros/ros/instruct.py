"""vla-instruct: send the robot an instruction without the ROS 2 CLI.

``vla-instruct "pick up the red cube"`` does what ``ros2 topic pub --once /instruction
std_msgs/msg/String "{data: 'pick up the red cube'}"`` does, for a pip install that has no
``ros2`` command: it waits for a subscriber, publishes the instruction latched (reliable,
transient local, depth 1: the QoS the action_selector's latched instruction subscription
asks for; its volatile twin takes it too), waits until every subscriber has it, and exits.
With ``--keep`` it stays until Ctrl-C, so a node that starts (or restarts) later still
receives the instruction: a latched message lives in its publisher's process.

Exit status: 0 delivered (or, with ``--keep``, stopped with Ctrl-C); 1 no subscriber within
``--wait`` seconds, or one that did not acknowledge; 2 a usage error.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import rclpy
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException
from rclpy.utilities import remove_ros_args
from std_msgs.msg import String

# The action_selector's latched instruction QoS (DESIGN.md section 4): the last instruction
# reaches a node that starts later, as long as this process runs.
from .qos import LATCHED_QOS

POLL_S = 0.05


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='vla-instruct',
        description='Publish an instruction (std_msgs/String, latched) for the action selector.',
        epilog='ROS arguments go after --ros-args, e.g. --ros-args -r __ns:=/robot1')
    parser.add_argument('text', help='the instruction, e.g. "pick up the red cube" ("" makes '
                                     'the selector abstain)')
    parser.add_argument('--topic', default='/instruction',
                        help='topic to publish on (default: %(default)s)')
    parser.add_argument('--wait', type=float, default=10.0, metavar='SECONDS',
                        help='how long to wait for a subscriber and its acknowledgement '
                             '(default: %(default)s)')
    parser.add_argument('--keep', action='store_true',
                        help='stay until Ctrl-C, so nodes that start later get it too')
    return parser


def _wait_for(condition, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() >= end:
            return False
        time.sleep(POLL_S)
    return True


def send(text: str, topic: str, wait_s: float, keep: bool, args=None) -> int:
    """Publish ``text`` on ``topic`` (see the module docstring); returns the exit status."""
    rclpy.init(args=args)
    node = rclpy.create_node(f'vla_instruct_{os.getpid()}')
    try:
        publisher = node.create_publisher(String, topic, LATCHED_QOS)
        where = publisher.topic_name   # after remapping and namespace
        if not keep and not _wait_for(lambda: publisher.get_subscription_count() > 0, wait_s):
            print(f'vla-instruct: no subscriber on {where} within {wait_s:g} s; is the '
                  'action selector running? (--keep publishes and waits for one)',
                  file=sys.stderr)
            return 1
        publisher.publish(String(data=text))
        if not keep:
            if not publisher.wait_for_all_acked(Duration(seconds=wait_s)):
                print(f'vla-instruct: published {text!r} on {where}, but a subscriber did '
                      f'not acknowledge it within {wait_s:g} s', file=sys.stderr)
                return 1
            print(f'instruction {text!r} delivered on {where} to '
                  f'{publisher.get_subscription_count()} subscriber(s)')
            return 0
        print(f'instruction {text!r} published on {where} (latched); nodes that start later '
              'get it while this runs. Ctrl-C to stop.', flush=True)
        rclpy.spin(node)
        return 0
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(remove_ros_args(['vla-instruct', *argv])[1:])
    if not args.wait > 0:
        print(f'vla-instruct: --wait must be positive, got {args.wait}', file=sys.stderr)
        return 2
    return send(args.text, args.topic, args.wait, args.keep, ['vla-instruct', *argv])


if __name__ == '__main__':
    sys.exit(main())
