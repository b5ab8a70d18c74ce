"""Image-encoder throughput against batch size: the shipped model and a ViT-B/32-sized tower.

    python bench/encoder_throughput.py                       # CPU, batch 1..64
    python bench/encoder_throughput.py --device cuda --precision bf16
    python bench/encoder_throughput.py --quick               # batch 1 and 4, a tiny ViT

Rows: the shipped default model's conv-stem vision encoder (64 px in, 4x4 patch tokens), and
a CLIP ViT-B/32-sized vision tower built from ``CLIPVisionConfig()`` (224 px, 12 layers, width
768; random weights, which time exactly like trained ones) — the tower a team would start
from for zero-shot selection. Each batch size reports ms per batch and images/s; on CUDA
``--precision bf16|fp16`` runs under autocast, as the node's ``precision`` parameter does.
The node decides on one frame per camera set, so batch 1 is its latency; larger batches
show what several cameras or offline evaluation gain. One more row, at batch 1 only, times the
shipped model's whole query (vision encoder + fusion with the instruction's text features,
which the selector computes once per instruction and caches): the per-frame model cost.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchlib import machine_line, median, pick_device, print_table, time_call, write_json

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--batches', default='1,2,4,8,16,32,64', help='comma-separated batch sizes')
    p.add_argument('--model', default=str(REPO / 'models' / 'tabletop'),
                   help='VLA checkpoint whose vision encoder is timed (default: shipped)')
    p.add_argument('--device', default='cpu', help='cpu | cuda | auto')
    p.add_argument('--precision', default='fp32', choices=('fp32', 'bf16', 'fp16'),
                   help='autocast on CUDA (the CPU runs fp32)')
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0 = default)')
    p.add_argument('--min-seconds', type=float, default=1.0,
                   help='time each batch size for at least this long')
    p.add_argument('--quick', action='store_true',
                   help='batch 1 and 4, a 2-layer ViT instead of ViT-B/32')
    p.add_argument('--json', help='also write the rows here (JSON)')
    return p.parse_args(argv)


def vit_b32(quick: bool):
    """A CLIP vision tower with ViT-B/32's shape (random weights); tiny under --quick."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    if quick:
        config = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                  num_attention_heads=2, image_size=224, patch_size=32)
        name = 'tiny ViT (2 layers, width 64, 224 px)'
    else:
        config = CLIPVisionConfig()   # ViT-B/32: 224 px, patch 32, 12 layers, width 768
        name = 'CLIP ViT-B/32 vision tower (224 px)'
    return name, CLIPVisionModel(config).eval(), config.image_size


def encoders(args, device: torch.device, batches: list[int]):
    """(name, forward(pixels), input size, batch sizes) for each encoder in the table."""
    from vla_embedding_ros.model.vla_model import VLAModel

    vla = VLAModel.from_pretrained(args.model, device=str(device)).eval()
    size = vla.image_size if isinstance(vla.image_size, int) else vla.image_size[0]
    model = Path(args.model).name
    yield f'shipped model vision ({model}, {size} px)', vla.encode_images, size, batches
    text = vla.encode_text(['put the red cube in the blue bowl'])  # cached by the selector
    yield (f'shipped model query ({model}: vision + fusion, cached text)',
           lambda px: vla.encode_query(px, text, num_cameras=1), size, [1])
    name, vit, vit_size = vit_b32(args.quick)
    vit = vit.to(device)
    yield name, lambda px: vit(pixel_values=px).pooler_output, vit_size, batches


def autocast(device: torch.device, precision: str):
    if device.type == 'cuda' and precision != 'fp32':
        dtype = torch.bfloat16 if precision == 'bf16' else torch.float16
        return torch.autocast('cuda', dtype=dtype)
    return torch.autocast('cpu', enabled=False)


def run(args, device: torch.device) -> list[dict]:
    batches = [1, 4] if args.quick else [int(b) for b in args.batches.split(',')]
    min_seconds = 0.1 if args.quick else args.min_seconds
    rows = []
    with torch.inference_mode(), autocast(device, args.precision):
        for name, forward, size, sizes in encoders(args, device, batches):
            for batch in sizes:
                pixels = torch.randn(batch, 3, size, size, device=device)
                times = time_call(lambda px=pixels, f=forward: f(px), device, warmup=2,
                                  repeat=3, min_seconds=min_seconds)
                ms = median(times) * 1e3
                rows.append({'encoder': name, 'batch': batch, 'ms_per_batch': ms,
                             'images_per_s': batch / (ms / 1e3)})
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    precision = args.precision if device.type == 'cuda' else 'fp32'
    rows = run(args, device)
    print(machine_line(device))
    notes = [] if precision == args.precision else [
        f'--precision {args.precision} asked for; autocast is CUDA-only, so this ran fp32.']
    stand_in = ' (--quick: a 2-layer tiny ViT stands in for ViT-B/32)' if args.quick else ''
    print_table(f'Image-encoder throughput on {device} ({precision}){stand_in}',
                ['encoder', 'batch', 'ms / batch', 'images/s'],
                [[r['encoder'], r['batch'], r['ms_per_batch'], r['images_per_s']]
                 for r in rows], notes)
    if args.json:
        write_json(args.json, {'machine': machine_line(device), 'precision': precision,
                               'rows': rows})
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
