"""Export a checkpoint's query path to ONNX: ``vla-export-onnx MODEL_DIR [--out DIR] [--int8]``.

Two graphs, the two halves of :class:`.deploy.QueryPlan`:

* ``text.onnx``: tokenizer outputs (``input_ids`` ... ``[1, L]``) -> the prepared text (the
  text encoder, its pooling and the fusion's per-instruction terms); run once per instruction.
* ``query.onnx``: ``pixels [C, 3, S, S]`` + the prepared text -> the unit query ``[1, E]``
  (image encoder + fusion); run per frame.
* ``text_int8.onnx`` with ``--int8``: ``text.onnx`` with dynamic int8 quantisation of its
  matrix products (ONNX Runtime's ``quantize_dynamic``); the accuracy it costs is in the README.

Action embeddings stay with torch (computed once per library). ``manifest.json`` records the
checkpoint's file hashes, so a runtime refuses an export of other weights. The export is
checked before it is kept: ONNX Runtime must reproduce the torch plan on two instructions of
different lengths and two camera counts. Everything is written to a staging folder next to
the target and renamed into place, so a failed or interrupted export leaves nothing half
written. ONNX files are protobuf data: loading one executes no code.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..files import publish_directory, read_text_bounded
from .deploy import QueryPlan, compact_text

FORMAT = 'vla_embedding_ros.onnx'
FORMAT_VERSION = 1
MANIFEST = 'manifest.json'
QUERY_FILE = 'query.onnx'
TEXT_FILE = 'text.onnx'
TEXT_INT8_FILE = 'text_int8.onnx'
DEFAULT_SUBDIR = 'onnx'
OPSET = 17
# Largest |difference| of query components between ONNX Runtime and torch the export accepts.
VERIFY_ATOL = 1e-4
_SAMPLE_TEXTS = ('pick up the red cube', 'push the small blue ball two cells to the left now')


def checkpoint_files(directory: str | os.PathLike) -> list[Path]:
    """The files whose contents define the model: config.json and every safetensors file
    (``model.safetensors`` and trainable encoders' folders), the export folder excluded."""
    directory = Path(directory)
    files = [directory / 'config.json']
    for path in sorted(directory.rglob('*.safetensors')):
        if DEFAULT_SUBDIR not in path.relative_to(directory).parts[:-1]:
            files.append(path)
    return files


def fingerprint(directory: str | os.PathLike) -> dict[str, str]:
    """``relative path -> sha256`` of :func:`checkpoint_files`."""
    directory = Path(directory)
    out = {}
    for path in checkpoint_files(directory):
        digest = hashlib.sha256()
        with open(path, 'rb') as handle:
            for block in iter(lambda: handle.read(1 << 20), b''):
                digest.update(block)
        out[path.relative_to(directory).as_posix()] = digest.hexdigest()
    return out


def default_export_dir(model_dir: str | os.PathLike) -> Path:
    return Path(model_dir) / DEFAULT_SUBDIR


class _TextGraph(nn.Module):
    """Tokenizer outputs -> prepared text (a tuple of tensors)."""

    def __init__(self, model: nn.Module, plan: QueryPlan, names: list[str]):
        super().__init__()
        self.text, self.plan, self.names = model.text, plan, list(names)
        self.model_names = set(model.text.model_inputs({n: None for n in names}))

    def forward(self, *ids: torch.Tensor):
        inputs = dict(zip(self.names, ids, strict=True))
        features = self.text.encode_tokens(
            {k: v for k, v in inputs.items() if k in self.model_names},
            inputs['attention_mask'])
        return self.plan.prepare_text(features.tokens, features.mask, features.pooled)


def text_input_names(model: nn.Module) -> list[str]:
    """What ``text.onnx`` takes, in order: the text model's tokenizer inputs, and always the
    attention mask (pooling and fusion read it even where the model does not take it)."""
    batch = model.text.tokenize(['a'])
    names = set(model.text.model_inputs(batch)) | {'attention_mask'}
    first = [n for n in ('input_ids', 'attention_mask', 'token_type_ids') if n in names]
    return first + sorted(names - set(first))


def prepared_names(kind: str) -> list[str]:
    return ['text_rows', 'text_qkv', 'text_keep'] if kind == 'transformer' else ['text_proj']


def export_onnx(model_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                int8: bool = False, overwrite: bool = True, log=print) -> Path:
    """Export ``model_dir`` (a VLAModel checkpoint) to ``out_dir`` (default ``model_dir/onnx``).

    Returns the export folder. Raises ``RuntimeError`` when onnxruntime is not installed (it
    checks the export) or when the exported graphs do not reproduce torch; ``FileExistsError``
    when ``out_dir`` exists and ``overwrite`` is False.
    """
    from .vla_model import VLAModel

    _require_onnxruntime()
    model_dir = Path(model_dir)
    out_dir = Path(out_dir) if out_dir is not None else default_export_dir(model_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f'{out_dir} exists; pass --overwrite to replace it')
    model = VLAModel.from_pretrained(model_dir, device='cpu').eval()
    plan = QueryPlan(model).eval()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f'.{out_dir.name}-', dir=out_dir.parent))
    try:
        names = text_input_names(model)
        kind = plan.kind
        with torch.no_grad():
            tok = model.text.tokenize([_SAMPLE_TEXTS[0]])
            ids = tuple(tok[n] for n in names)
            _export(_TextGraph(model, plan, names).eval(), ids, staging / TEXT_FILE, names,
                    prepared_names(kind), {n: {1: 'tokens'} for n in names} | (
                        {'text_rows': {0: 'rows'}, 'text_qkv': {0: 'rows'},
                         'text_keep': {0: 'rows'}} if kind == 'transformer' else {}))
            size = model.image_size
            pixels = torch.zeros(1, 3, size, size)
            prepared = plan.prepare(model.encode_text([_SAMPLE_TEXTS[0]]))
            in_names = ['pixels'] + prepared_names(kind)[:len(prepared)]
            axes = {'pixels': {0: 'cameras'}}
            if kind == 'transformer':
                axes |= {'text_rows': {0: 'rows'}, 'text_qkv': {0: 'rows'}}
            _export(plan, (pixels, *prepared), staging / QUERY_FILE, in_names, ['query'], axes)
        files = [QUERY_FILE, TEXT_FILE]
        if int8:
            _quantize(staging / TEXT_FILE, staging / TEXT_INT8_FILE)
            files.append(TEXT_INT8_FILE)
        error = verify(model, plan, staging, names, kind)
        if error > VERIFY_ATOL:
            raise RuntimeError(f'the exported graphs differ from torch by {error:.2e} '
                               f'(> {VERIFY_ATOL:g}); not keeping them')
        manifest = {
            'format': FORMAT, 'format_version': FORMAT_VERSION, 'opset': OPSET,
            'fusion': kind, 'image_size': model.image_size,
            'text_inputs': names, 'prepared_text': prepared_names(kind),
            'files': {f: _sha256(staging / f) for f in files},
            'checkpoint': fingerprint(model_dir),
            'verified_max_abs_diff': float(error),
            'torch': torch.__version__, 'onnxruntime': _ort_version(),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + '\n')
        # The old folder is moved aside, not deleted first: a crash never leaves none.
        publish_directory(staging, out_dir, overwrite=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f'exported {", ".join(files)} to {out_dir} (ONNX Runtime vs torch: max |diff| '
        f'{error:.1e})')
    return out_dir


def _export(module, args, path, input_names, output_names, dynamic_axes) -> None:
    with warnings.catch_warnings():
        # The TorchScript exporter (no onnxscript dependency) warns that it is deprecated, and
        # tracing warns about Python values it records as constants (shapes it was given).
        warnings.simplefilter('ignore')
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=OPSET,
                          input_names=list(input_names), output_names=list(output_names),
                          dynamic_axes=dynamic_axes, do_constant_folding=True)
    module.eval()   # the exporter restores the wrapper's training flag, which was eval


def _quantize(src: Path, dst: Path) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)   # it advises shape pre-processing on the root logger
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)


def verify(model, plan: QueryPlan, folder: Path, names: list[str], kind: str) -> float:
    """Largest |query difference| between ONNX Runtime (fp32 graphs) and the torch plan."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    text = ort.InferenceSession(str(folder / TEXT_FILE), opts,
                                providers=['CPUExecutionProvider'])
    query = ort.InferenceSession(str(folder / QUERY_FILE), opts,
                                 providers=['CPUExecutionProvider'])
    rng = np.random.default_rng(0)
    worst = 0.0
    size = model.image_size
    for cams, sentence in ((1, _SAMPLE_TEXTS[1]), (min(2, _max_cameras(model)),
                                                    _SAMPLE_TEXTS[0])):
        pixels = torch.from_numpy(rng.standard_normal((cams, 3, size, size), np.float32))
        with torch.inference_mode():
            feats = model.encode_text([sentence])
            ref = plan(pixels, *plan.prepare(feats)).numpy()
        tok = model.text.tokenize([sentence])
        prepared = text.run(None, {n: tok[n].numpy() for n in names})
        prepared = compact_text(kind, tuple(prepared))
        feed = {'pixels': pixels.numpy()}
        feed |= dict(zip([i.name for i in query.get_inputs()][1:], prepared, strict=True))
        out = query.run(None, feed)[0]
        worst = max(worst, float(np.abs(out - ref).max()))
    return worst


def _max_cameras(model) -> int:
    cfg = getattr(model.fusion, 'cfg', None)
    return int(getattr(cfg, 'max_cameras', 2))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ort_version() -> str:
    import onnxruntime as ort
    return ort.__version__


def _require_onnxruntime() -> None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise RuntimeError('ONNX export needs onnxruntime (it checks the export): '
                           'pip install onnxruntime==1.32.0 onnx==1.23.2') from err


def read_manifest(folder: str | os.PathLike) -> dict:
    """The export's manifest.json, checked for format; ``FileNotFoundError`` when absent."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f'{path} does not exist: no complete ONNX export in {folder}')
    try:
        data = json.loads(read_text_bounded(path, 1 << 20))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f'{path}: not a readable manifest ({err})') from err
    if not isinstance(data, dict) or data.get('format') != FORMAT:
        raise ValueError(f'{path}: not a {FORMAT} manifest')
    if data.get('format_version') != FORMAT_VERSION:
        raise ValueError(f'{path}: format_version {data.get("format_version")!r}, this '
                         f'version reads {FORMAT_VERSION}; export again')
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='vla-export-onnx',
        description='Export a checkpoint\'s query path (image encoder + fusion, text encoder) '
                    'to ONNX for the selector\'s backend: onnxruntime.')
    parser.add_argument('model_dir', help='checkpoint folder (config.json + model.safetensors)')
    parser.add_argument('--out', default=None,
                        help='export folder (default: MODEL_DIR/onnx, where the node looks)')
    parser.add_argument('--int8', action='store_true',
                        help='also write text_int8.onnx (dynamic int8 text encoder)')
    parser.add_argument('--no-overwrite', action='store_true',
                        help='refuse to replace an existing export folder')
    args = parser.parse_args(argv)
    if not (Path(args.model_dir) / 'config.json').is_file():
        print(f'vla-export-onnx: {args.model_dir} has no config.json (not a checkpoint folder)',
              file=sys.stderr)
        return 2
    try:
        export_onnx(args.model_dir, args.out, int8=args.int8, overwrite=not args.no_overwrite)
    except (FileExistsError, RuntimeError, ValueError, TypeError) as err:
        print(f'vla-export-onnx: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
