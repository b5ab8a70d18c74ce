"""Optional fast paths for the image encoder: autocast precision, torch.compile, CUDA graphs.

After preprocessing, the frames of one camera set always have the same shape ``[C, 3, S, S]``,
so the image encoder is the part of a decision that compiles well (the instruction side is
cached per instruction, and its token count changes with the text). Each fast path is asked
for by name and falls back to plain eager execution, with the reason kept in
:attr:`ImageEncoderRunner.fallback_reason`, where this machine cannot run it: a node should
keep working on a laptop without a GPU or a compiler.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger(__name__)

COMPILE_MODES = ('none', 'torch_compile', 'cuda_graph')
PRECISIONS = ('fp32', 'bf16', 'fp16')
_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


def check_options(compile_mode: str, precision: str) -> None:
    """ValueError naming the bad option and the valid ones."""
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f'unknown compile mode {compile_mode!r}; expected one of '
                         f'{list(COMPILE_MODES)}')
    if precision not in PRECISIONS:
        raise ValueError(f'unknown precision {precision!r}; expected one of {list(PRECISIONS)}')


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for inference on CUDA; fp32 (a no-op context) anywhere else.

    CPU autocast is left out on purpose: without AMX/AVX-512-BF16 it is slower than fp32 on
    the CPUs this package meets (measured here on AMD EPYC), and the small default model is
    bound by framework overhead, not arithmetic.
    """
    if precision == 'fp32' or device.type != 'cuda':
        return contextlib.nullcontext()
    return torch.autocast('cuda', dtype=_DTYPES[precision])


def effective_precision(device: torch.device, precision: str) -> str:
    """What :func:`autocast` will really run: ``precision`` on CUDA, else fp32."""
    return precision if device.type == 'cuda' else 'fp32'


class ImageEncoderRunner:
    """Calls ``encode_images(pixels)`` eagerly, compiled, or by replaying a captured CUDA graph.

    Args:
        encode_images: the model's image encoder (``pixels [C, 3, S, S] -> features``).
        device: the model's device.
        mode: ``none``, ``torch_compile`` or ``cuda_graph``.
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast, CUDA only).

    ``mode`` is what runs now: it becomes ``none`` after a fallback, and ``fallback_reason``
    says why. A captured CUDA graph returns the same output tensors on every replay, so the
    features are valid until the next call (the selector consumes them at once).
    """

    def __init__(self, encode_images: Callable[[torch.Tensor], Any], device: torch.device,
                 mode: str = 'none', precision: str = 'fp32'):
        check_options(mode, precision)
        self.eager = encode_images
        self.device = torch.device(device)
        self.requested_mode = mode
        self.precision = effective_precision(self.device, precision)
        self.mode = mode
        self.fallback_reason = ''
        self._compiled: Callable | None = None
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, Any]] = {}
        if mode == 'cuda_graph' and self.device.type != 'cuda':
            self._fall_back(f'cuda_graph needs a CUDA device, the model is on {self.device}')
        elif mode == 'torch_compile':
            # dynamic=False: one specialised graph per camera count, no shape guards per call.
            self._compiled = torch.compile(encode_images, dynamic=False)

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.precision)

    def __call__(self, pixels: torch.Tensor) -> Any:
        if self.mode == 'torch_compile':
            try:
                return self._compiled(pixels)
            except Exception as exc:  # no compiler, unsupported op, backend bug...
                self._fall_back(f'torch.compile failed: {type(exc).__name__}: {exc}')
        elif self.mode == 'cuda_graph':
            try:
                return self._replay(pixels)
            except Exception as exc:
                self._fall_back(f'CUDA graph capture failed: {type(exc).__name__}: {exc}')
        return self.eager(pixels)

    def _fall_back(self, reason: str) -> None:
        reason = reason.splitlines()[0][:300]
        log.warning('image encoder fast path %r unavailable, running eager: %s',
                    self.requested_mode, reason)
        self.mode, self.fallback_reason = 'none', reason
        self._compiled, self._graphs = None, {}

    def _replay(self, pixels: torch.Tensor) -> Any:
        key = (tuple(pixels.shape), pixels.dtype)
        if key not in self._graphs:
            self._graphs[key] = self._capture(pixels)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(pixels, non_blocking=True)
        graph.replay()
        return static_out

    def _capture(self, pixels: torch.Tensor) -> tuple:
        static_in = pixels.clone()
        # Warm up on a side stream first, as torch.cuda.graphs asks: lazy initialisation
        # (cuBLAS handles, autotuning) must not happen inside the capture.
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self.eager(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.eager(static_in)
        log.info('captured a CUDA graph of the image encoder for input %s',
                 tuple(pixels.shape))
        return graph, static_in, static_out
