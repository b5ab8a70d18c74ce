"""vla-bag-to-dataset: turn rosbag2 recordings (MCAP or sqlite3) into a training dataset.

The dataset is this package's JSONL format (default) or a LeRobotDataset v3.0 folder
(``--format lerobot``: parquet tables and one AV1 video per camera, readable by LeRobot and
trainable here with ``data.source: lerobot``).

Each action message becomes one sample: the newest frame of every camera at or before it
(at most --tolerance seconds older) and the instruction in force then. Actions that cannot be
paired are counted per reason in the printed summary and in DIR/summary.json.

Examples::

    # a recording of the package's own topics (the defaults)
    vla-bag-to-dataset recordings/run1 --out data/run1 --library config/tabletop_actions.yaml

    # the same recording as a LeRobotDataset v3 (AV1 videos; --lerobot-images parquet: PNGs)
    vla-bag-to-dataset recordings/run1 --out data/run1_lerobot --format lerobot

    # two cameras, Twist actions named by 16 k-means clusters, receive times
    vla-bag-to-dataset bag1 bag2.mcap --out data/teleop \\
        --image-topic /front/image_raw --image-topic /wrist/image_raw/compressed \\
        --instruction-topic /instruction --action-topic /cmd_vel --cluster 16 --stamp receive

    # the LIBERO simulator over topics: its runs of one task share their instruction, so the
    # episode results split them into episodes
    vla-bag-to-dataset recordings/libero --out data/libero_run \
        --action-topic /action_selector/action_vector --episode-topic /libero_sim/episode_result
"""
from __future__ import annotations

import argparse
import sys

from .bag_import import convert_bags, format_summary
from .bag_scan import FORMATS, LEROBOT_IMAGES, STAMP_MODES, ImportConfig

DEFAULT_IMAGE_TOPIC = '/camera/image_raw'


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'expected WIDTHxHEIGHT like 160x120, got {text!r}') from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f'size must be positive, got {text!r}')
    return width, height


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog='vla-bag-to-dataset', description=__doc__.split('\n\n')[0],
        epilog='Stamps: with --stamp header, images (and TwistStamped) use their header stamp; '
               'String, Float32MultiArray and Twist have no header and always use the bag '
               'receive time, as does a header stamp of zero.')
    parser.add_argument('bags', nargs='+', help='rosbag2 directories or .mcap/.db3 files')
    parser.add_argument('--out', required=True, help='dataset directory to create')
    parser.add_argument('--image-topic', action='append', dest='image_topics', default=None,
                        help='Image or CompressedImage topic; repeat for several cameras, '
                             f'in camera order (default: {DEFAULT_IMAGE_TOPIC})')
    parser.add_argument('--instruction-topic', default='/instruction',
                        help='std_msgs/String instruction topic (default: %(default)s)')
    parser.add_argument('--action-topic', default='/action_selector/selected_action',
                        help='String (names), Float32MultiArray (vectors) or Twist '
                             '(default: %(default)s)')
    parser.add_argument('--episode-topic', metavar='TOPIC',
                        help='every message on TOPIC (any type, e.g. a simulator\'s '
                             '/libero_sim/episode_result) ends an episode; without it an '
                             'episode ends only when the instruction text changes')
    parser.add_argument('--tolerance', type=float, default=0.1,
                        help='seconds a frame may be older than the action it is paired with '
                             '(default: %(default)s)')
    parser.add_argument('--stamp', choices=STAMP_MODES, default='header',
                        help='header stamps where messages have them, or bag receive times '
                             '(default: %(default)s)')
    parser.add_argument('--library', help='action library YAML for String action names '
                        '(default: built from the names seen)')
    parser.add_argument('--cluster', type=int, default=0, metavar='K',
                        help='vector/Twist actions: also name each by the nearest of K k-means '
                             'centres, stored as the library (0: keep raw vectors only)')
    parser.add_argument('--param-names', help='comma-separated names of the vector components '
                        '(default: Twist components, else p0, p1, ...)')
    parser.add_argument('--resize', type=_size, metavar='WxH',
                        help='resize every image (needed when cameras differ in size)')
    parser.add_argument('--split', help="value of every sample's 'split' field")
    parser.add_argument('--seed', type=int, default=0, help='k-means seed')
    parser.add_argument('--format', choices=FORMATS, default='jsonl',
                        help='jsonl: index.jsonl + PNGs; lerobot: LeRobotDataset v3.0 '
                             '(default: %(default)s)')
    parser.add_argument('--fps', type=float,
                        help='lerobot: the fps of the export (default: the median spacing of '
                             'the first samples, rounded; 30 when unknown): timestamp is '
                             'frame_index / fps, the recorded times stay in source_timestamp')
    parser.add_argument('--lerobot-images', choices=LEROBOT_IMAGES, default='video',
                        help='lerobot: AV1 MP4 per camera (lossy, small) or PNGs inside the '
                             'parquet (lossless) (default: %(default)s)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --out')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser


def main(argv: list[str] | None = None) -> int:
    """Convert the bags and print the summary.

    Returns 0; 1 when no sample could be paired (nothing written); 2 on a usage or input error
    (missing topic, unsupported type, existing --out, ...), with the reason on stderr.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    cfg = ImportConfig(
        image_topics=args.image_topics or [DEFAULT_IMAGE_TOPIC],
        instruction_topic=args.instruction_topic, action_topic=args.action_topic,
        episode_topic=args.episode_topic,
        tolerance=args.tolerance, stamp=args.stamp, library=args.library,
        cluster=args.cluster,
        parameter_names=[p.strip() for p in args.param_names.split(',')]
        if args.param_names else None,
        resize=args.resize, split=args.split, seed=args.seed, format=args.format,
        fps=args.fps, lerobot_images=args.lerobot_images)
    try:
        cfg.validate()
        summary = convert_bags(args.bags, args.out, cfg, overwrite=args.overwrite,
                               progress=not args.quiet)
    except (ValueError, OSError) as e:  # BagError, a missing topic, an existing --out, ...
        print(f'vla-bag-to-dataset: error: {e}', file=sys.stderr)
        return 2
    print(format_summary(summary))
    if summary['written'] == 0:
        print('vla-bag-to-dataset: no sample could be paired; nothing written', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
