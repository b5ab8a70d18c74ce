"""Who computes the query of a decision: torch (:class:`TorchBackend`) or ONNX Runtime
(:class:`OnnxRuntimeBackend`, from a ``vla-export-onnx`` export).

Both split the work the same way (see :mod:`..model.deploy`): :meth:`prepare` once per
instruction (the result is cached by the selector), :meth:`query` per frame. Action embeddings
are computed by the torch model in both cases (once per library).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

BACKENDS = ('torch', 'onnxruntime')
TEXT_PRECISIONS = ('fp32', 'int8')
# Short names a user may give for ONNX Runtime's execution providers.
PROVIDER_ALIASES = {'cpu': 'CPUExecutionProvider', 'cuda': 'CUDAExecutionProvider',
                    'tensorrt': 'TensorrtExecutionProvider', 'trt': 'TensorrtExecutionProvider'}
_GPU_ORDER = ('TensorrtExecutionProvider', 'CUDAExecutionProvider')


def check_backend(backend: str, text_precision: str = 'fp32') -> None:
    if backend not in BACKENDS:
        raise ValueError(f'unknown backend {backend!r}; expected one of {list(BACKENDS)}')
    if text_precision not in TEXT_PRECISIONS:
        raise ValueError(f'unknown onnx text precision {text_precision!r}; expected one of '
                         f'{list(TEXT_PRECISIONS)}')


class TorchBackend:
    """The torch query path: :class:`QueryPlan` for a VLAModel, the model's own
    ``encode_text``/``fuse`` for anything else (the zero-shot CLIP scorer)."""

    name = 'torch'
    providers: list[str] = []
    fallback_reason = ''
    supports_missing_cameras = True   # query(..., cameras=[present camera indices])

    def __init__(self, model: Any, image_encoder):
        from ..model.deploy import QueryPlan

        self.model = model
        self.image_encoder = image_encoder
        self.plan = QueryPlan(model).eval() if _has_plan(model) else None

    @torch.inference_mode()
    def prepare(self, instruction: str) -> Any:
        text = self.model.encode_text([instruction])
        return self.plan.prepare(text) if self.plan is not None else text

    def query(self, pixels: torch.Tensor, prepared: Any, cameras=None) -> torch.Tensor:
        """``cameras``: the camera index of each frame when some of the model's cameras are
        missing (None = frames 0..C-1); scorers without a plan average the frames they get."""
        with self.image_encoder.autocast():
            image = self.image_encoder(pixels)
            if self.plan is not None:
                return self.plan.fuse(image, *prepared, cameras=cameras)
            return self.model.fuse(image, prepared, num_cameras=pixels.shape[0])


def _has_plan(model: Any) -> bool:
    from ..model.deploy import fusion_kind, reads_every_patch_row
    if not (hasattr(model, 'fusion') and hasattr(model, 'vision')):
        return False
    if reads_every_patch_row(model.fusion):
        return False    # the plan computes the last layer for the CLS row alone
    try:
        fusion_kind(model.fusion)
    except TypeError:
        return False
    return True


def resolve_providers(requested: str | list[str], device: torch.device,
                      available: list[str]) -> tuple[list[str], str]:
    """Execution providers to ask for, in order (CPU always last), and why any requested one
    is missing ('' when none is).

    ``requested``: 'auto' (TensorRT, CUDA when the model's device is CUDA and they are
    installed; CPU otherwise) or a comma-separated list / list of names or aliases
    (cpu, cuda, tensorrt).
    """
    if isinstance(requested, str):
        requested = [p.strip() for p in requested.split(',') if p.strip()] or ['auto']
    names = []
    if requested == ['auto']:
        if device.type == 'cuda':
            names = [p for p in _GPU_ORDER if p in available]
    else:
        for item in requested:
            name = PROVIDER_ALIASES.get(item.lower(), item)
            if name not in PROVIDER_ALIASES.values() and not name.endswith('ExecutionProvider'):
                raise ValueError(f'unknown ONNX Runtime provider {item!r}; use cpu, cuda, '
                                 'tensorrt or a full ...ExecutionProvider name')
            names.append(name)
    missing = [n for n in names if n not in available]
    chosen = [n for n in names if n in available and n != 'CPUExecutionProvider']
    chosen.append('CPUExecutionProvider')
    reason = ''
    if missing:
        reason = (f'ONNX Runtime provider(s) {missing} not installed here (available: '
                  f'{available}); running on {chosen}')
    return chosen, reason


class OnnxRuntimeBackend:
    """The query path from an ONNX export, run by ONNX Runtime.

    Args:
        model: the torch model the export was made from (used for its tokenizer; the selector
            uses it for action embeddings).
        export_dir: the ``vla-export-onnx`` folder (``query.onnx``, ``text.onnx``, manifest).
        checkpoint_dir: the checkpoint folder, to refuse an export of other weights (None
            skips that check).
        providers: see :func:`resolve_providers`.
        threads: intra-op threads per session (0 = ONNX Runtime's default, one per core).
        text_precision: 'fp32' (``text.onnx``) or 'int8' (``text_int8.onnx``).

    Raises:
        RuntimeError: onnxruntime is not installed.
        FileNotFoundError: no complete export in ``export_dir`` (the message says how to make
            one), or no int8 text graph when asked for.
        ValueError: the export belongs to other weights, or is of another format version.
    """

    name = 'onnxruntime'
    # query.onnx adds the camera segment embeddings by position (rows 0..C-1, see
    # model/onnx_export.py): it has no input saying which camera a frame came from.
    supports_missing_cameras = False

    def __init__(self, model: Any, export_dir: str | os.PathLike,
                 checkpoint_dir: str | os.PathLike | None = None,
                 providers: str | list[str] = 'auto', threads: int = 0,
                 text_precision: str = 'fp32'):
        from ..model import onnx_export as ox

        try:
            import onnxruntime as ort
        except ImportError as err:
            raise RuntimeError("backend 'onnxruntime' needs the onnxruntime package "
                               '(pip install onnxruntime==1.32.0; onnxruntime-gpu for CUDA/'
                               'TensorRT)') from err
        check_backend('onnxruntime', text_precision)
        if not _has_plan(model):
            raise ValueError(f"backend 'onnxruntime' runs VLAModel checkpoints; "
                             f'{type(model).__name__} has no ONNX export')
        export_dir = Path(export_dir)
        how = (f'make one with: vla-export-onnx {checkpoint_dir or "MODEL_DIR"}'
               + (f' --out {export_dir}' if checkpoint_dir is None or
                  export_dir != ox.default_export_dir(checkpoint_dir) else '')
               + (' --int8' if text_precision == 'int8' else ''))
        try:
            manifest = ox.read_manifest(export_dir)
        except FileNotFoundError as err:
            raise FileNotFoundError(f'{err}; {how}') from err
        if checkpoint_dir is not None:
            current = ox.fingerprint(checkpoint_dir)
            if current != manifest.get('checkpoint'):
                changed = sorted(k for k in set(current) | set(manifest.get('checkpoint', {}))
                                 if current.get(k) != manifest.get('checkpoint', {}).get(k))
                raise ValueError(f'the ONNX export in {export_dir} was made from other weights '
                                 f'({", ".join(changed)} changed since); {how}')
        text_file = ox.TEXT_INT8_FILE if text_precision == 'int8' else ox.TEXT_FILE
        if text_file not in manifest.get('files', {}):
            raise FileNotFoundError(f'{export_dir} has no {text_file}; {how}')
        self.model = model
        self.manifest = manifest
        self.kind = manifest['fusion']
        self.text_inputs = list(manifest['text_inputs'])
        self.text_precision = text_precision
        self.device = torch.device(model.device)
        self.providers, self.fallback_reason = resolve_providers(
            providers, self.device, ort.get_available_providers())
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.inter_op_num_threads = 1
        if threads > 0:
            opts.intra_op_num_threads = int(threads)
        self.query_session = ort.InferenceSession(str(export_dir / ox.QUERY_FILE), opts,
                                                  providers=self.providers)
        self.text_session = ort.InferenceSession(str(export_dir / text_file), opts,
                                                 providers=self.providers)
        used = self.query_session.get_providers()
        lost = [p for p in self.providers if p not in used]
        if lost:  # installed but failed to start (missing CUDA/TensorRT libraries...)
            self.fallback_reason = (f'ONNX Runtime could not start {lost}; running on '
                                    f'{used}')
        self.providers = used
        if self.fallback_reason:
            log.warning('%s', self.fallback_reason)
        self._query_names = [i.name for i in self.query_session.get_inputs()]

    def prepare(self, instruction: str) -> tuple:
        from ..model.deploy import compact_text

        batch = self.model.text.tokenizer(
            [instruction], padding='max_length' if self.model.text.pad_to_max else True,
            truncation=True, max_length=self.model.text.max_length, return_tensors='np',
            return_attention_mask=True)
        feed = {name: np.asarray(batch[name], dtype=np.int64) for name in self.text_inputs}
        return compact_text(self.kind, tuple(self.text_session.run(None, feed)))

    def query(self, pixels: torch.Tensor, prepared: tuple, cameras=None) -> torch.Tensor:
        if cameras is not None and list(cameras) != list(range(pixels.shape[0])):
            raise ValueError(f'backend onnxruntime cannot decide with cameras {list(cameras)} '
                             'only: its query graph numbers cameras by position; use backend '
                             'torch for decisions with a missing camera')
        feed = dict(zip(self._query_names[1:], prepared, strict=True))
        feed[self._query_names[0]] = pixels.detach().float().cpu().numpy()
        out = self.query_session.run(None, feed)[0]
        return torch.from_numpy(out).to(self.device)
