"""Write a procedural tabletop dataset to disk in the JSONL format of ``data.dataset``.

Example::

    vla-make-dataset --out data/tabletop_val --split val --num 2000 --seed 0 --image-size 96
"""
from __future__ import annotations

import argparse
import os

from tqdm import tqdm

from .dataset import DatasetWriter
from .tabletop import TabletopGenerator, action_params, build_action_library
from .tabletop.scene import TabletopConfig
from .tabletop.splits import SPLIT_NAMES


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog='vla-make-dataset', description=__doc__.splitlines()[0])
    parser.add_argument('--out', required=True, help='dataset directory to create')
    parser.add_argument('--split', default='train', choices=SPLIT_NAMES)
    parser.add_argument('--num', type=int, default=1000, help='number of samples')
    parser.add_argument('--seed', type=int, default=0, help='non-negative random seed')
    parser.add_argument('--image-size', type=int, default=96, help='image side in pixels')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --out')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser


def main(argv: list[str] | None = None) -> int:
    """Generate ``--num`` samples of ``--split`` into ``--out`` (atomically); return 0."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.num < 1 or args.seed < 0:
        parser.error('--num must be positive and --seed non-negative')
    if os.path.exists(args.out) and not args.overwrite:
        parser.error(f'{args.out} exists; pass --overwrite to replace it')
    try:
        config = TabletopConfig(image_size=args.image_size)
    except ValueError as e:
        parser.error(str(e))
    generator = TabletopGenerator(config, args.split, args.seed)
    with DatasetWriter(args.out, build_action_library(), overwrite=args.overwrite) as writer:
        for i, sample in enumerate(tqdm(generator.samples(args.num), total=args.num,
                                        desc=f'{args.split} -> {args.out}', unit='sample',
                                        disable=args.quiet)):
            # Tabletop samples are independent: one episode each.
            writer.add(sample.image, sample.instruction, action=sample.action_name,
                       action_vector=action_params(sample.primitive, *sample.target.cell),
                       episode=i, timestamp=0.0, split=args.split)
    if not args.quiet:
        print(f'wrote {args.num} {args.split} samples to {args.out}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
