"""Choose an action for camera frame(s) and an instruction by scoring in the joint space.

The library is embedded once (and again on :meth:`ActionSelector.set_library`); instruction
features are kept in a bounded LRU cache, so a frame costs one image forward, one fusion and
one ``[1, E] x [E, N]`` product. The scorer is a :class:`VLAModel` or a
:class:`ZeroShotCLIP`; both expose ``image_size``, ``image_mean``/``image_std``, ``device``,
``encode_text``, ``encode_query``, ``encode_actions`` and ``score``.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..actions.library import ActionLibrary, load_library
from ..model.loading import (
    is_local_folder_name,
    load_scorer,
    model_library_path,
    uses_text_space,
)
from .accelerate import ImageEncoderRunner
from .backends import OnnxRuntimeBackend, TorchBackend, check_backend
from .cache import LRUCache
from .preprocess import ImagePreprocessor
from .sampling import Refinement, SamplingConfig, refine


class CandidateError(ValueError):
    """Candidate vectors the model cannot score. ``kind`` says what is wrong with them:
    ``unsupported`` (this model scores no vectors), ``shape``, ``nonfinite`` or ``range``
    (outside what the model was trained on); the node counts rejections by it."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class Selection:
    """The result of one selection.

    ``index``/``name``/``vector`` describe the best-scoring candidate even when the selector
    abstains (so diagnostics can show what it would have done); ``index`` is -1 and ``name``
    None when nothing was scored (empty instruction). ``name`` is None for candidates given as
    vectors, whose ``top_names`` read ``candidate_<i>``. ``top_probs`` is the softmax over the
    logits of the whole scored set, so the probabilities of all candidates sum to 1.
    """

    index: int
    name: str | None
    vector: np.ndarray
    confidence: float
    abstained: bool
    reason: str
    top_names: list[str] = field(default_factory=list)
    top_indices: list[int] = field(default_factory=list)
    top_scores: list[float] = field(default_factory=list)
    top_probs: list[float] = field(default_factory=list)
    refinement: Refinement | None = None   # sampled mode: what the optimisation saw


class ActionSelector:
    """Scores library actions (or N×D candidates) against frames and an instruction.

    ``top_k`` and ``min_confidence`` are plain attributes: a node may change them between
    calls and the next :meth:`select` uses the new values.

    Args:
        model: a :class:`VLAModel` or :class:`ZeroShotCLIP` (anything with the scorer API).
        library: the actions to choose from; may be None when every call gives candidates.
        top_k: how many ranked candidates a :class:`Selection` reports.
        min_confidence: abstain when the top probability is below this (0 never abstains).
        cache_size: how many instructions' text features to keep (LRU).
        compile_mode: ``none``, ``torch_compile`` or ``cuda_graph`` for the image encoder
            (see :mod:`.accelerate`; falls back to eager where unsupported).
        precision: ``fp32``, ``bf16`` or ``fp16`` autocast on CUDA (fp32 on the CPU).
        backend: ``torch`` or ``onnxruntime`` (the query path from a ``vla-export-onnx``
            export; see :mod:`.backends`).
        onnx_path: the export folder; default ``<checkpoint_dir>/onnx``.
        checkpoint_dir: the checkpoint the model was loaded from (``from_pretrained`` sets
            it): where the export is looked for and what it must have been made from.
        onnx_providers: ``auto`` or a list (cpu, cuda, tensorrt); missing ones fall back to
            the CPU provider with the reason in :attr:`backend_fallback_reason`.
        onnx_threads: ONNX Runtime intra-op threads (0 = its default).
        onnx_text: ``fp32`` or ``int8`` (the dynamically quantised text encoder).
    """

    def __init__(self, model: Any, library: ActionLibrary | None = None, top_k: int = 5,
                 min_confidence: float = 0.0, cache_size: int = 128,
                 compile_mode: str = 'none', precision: str = 'fp32',
                 backend: str = 'torch', onnx_path: str | os.PathLike | None = None,
                 checkpoint_dir: str | os.PathLike | None = None,
                 onnx_providers: str | list[str] = 'auto', onnx_threads: int = 0,
                 onnx_text: str = 'fp32'):
        check_backend(backend, onnx_text)
        self.model = model.eval()
        self.image_encoder = ImageEncoderRunner(model.encode_images, model.device,
                                                compile_mode, precision)
        if backend == 'onnxruntime':
            if onnx_path is None and checkpoint_dir is None:
                raise ValueError("backend 'onnxruntime' needs onnx_path (the vla-export-onnx "
                                 'folder) or checkpoint_dir')
            if onnx_path is None:
                onnx_path = os.path.join(os.fspath(checkpoint_dir), 'onnx')
            self.backend = OnnxRuntimeBackend(model, onnx_path, checkpoint_dir,
                                              onnx_providers, onnx_threads, onnx_text)
        else:
            self.backend = TorchBackend(model, self.image_encoder)
        self.top_k = top_k
        self.min_confidence = min_confidence
        self.text_cache = LRUCache(cache_size)
        self.preprocess = ImagePreprocessor(model.image_size, model.image_mean, model.image_std,
                                            model.device)
        self.param_dim = model.param_dim
        self._library: ActionLibrary | None = None
        self._library_emb: torch.Tensor | None = None
        if library is not None:
            self.set_library(library)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, model_path: str | os.PathLike,
                        library_path: str | os.PathLike | None = None,
                        device: str = 'auto', **kwargs: Any) -> 'ActionSelector':
        """Load a checkpoint and an action library and build a selector.

        A folder whose ``config.json`` has ``model_type`` clip/siglip (a raw Hugging Face
        checkpoint) gives the zero-shot scorer; anything else is loaded as a VLAModel.

        Args:
            model_path: checkpoint folder (or a CLIP/SigLIP hub name, loaded zero-shot).
            library_path: action library YAML; defaults to ``<model_path>/actions.yaml``.
            device: 'auto', 'cpu', 'cuda' or 'cuda:N'.
            **kwargs: passed to the constructor (top_k, min_confidence, cache_size,
                compile_mode, precision, backend, onnx_path, onnx_providers, ...).

        Raises:
            FileNotFoundError: when no library is given and the checkpoint has none.
        """
        model_path = os.fspath(model_path)
        if is_local_folder_name(model_path) and not os.path.isdir(model_path):
            raise FileNotFoundError(f'model directory {model_path} does not exist')
        library = load_library(model_library_path(model_path, library_path))
        model = load_scorer(model_path, device=device)
        if not uses_text_space(model_path):
            kwargs.setdefault('checkpoint_dir', model_path)
        return cls(model, library, **kwargs)

    # -- library ------------------------------------------------------------------------------
    @property
    def library(self) -> ActionLibrary | None:
        """The current action library."""
        return self._library

    @property
    def library_embeddings(self) -> torch.Tensor | None:
        """Unit action embeddings ``[N, E]`` of the library (computed once per library)."""
        return self._library_emb

    def set_library(self, library: ActionLibrary) -> None:
        """Replace the action library and embed it.

        Raises:
            ValueError: when the library's parameter layout does not fit the model, or its
                continuous space reaches beyond the bounds the model was trained on.
        """
        if self.param_dim is not None and library.param_dim != self.param_dim:
            raise ValueError(f'library has {library.param_dim} parameters per action '
                             f'({library.parameter_names}), the model expects {self.param_dim}')
        if library.space is not None:
            check_trained_bounds(self.model, library.space)
        if not len(library):
            self._library, self._library_emb = library, None
            return
        with torch.inference_mode():
            params = torch.from_numpy(np.array(library.params())).to(self.model.device)
            emb = self.model.encode_actions(params, library.texts())
        # Swap both together: a select() running in another thread sees old or new, not a mix.
        self._library, self._library_emb = library, emb

    # -- instruction cache ----------------------------------------------------------------------
    def text_features(self, instruction: str) -> Any:
        """The backend's prepared text for ``instruction`` (LRU-cached): everything of a
        decision that depends on the instruction alone."""
        return self.text_cache.get_or_compute(
            instruction, lambda: self.backend.prepare(instruction))

    @property
    def backend_name(self) -> str:
        """``torch`` or ``onnxruntime``."""
        return self.backend.name

    @property
    def backend_fallback_reason(self) -> str:
        """Why a requested ONNX Runtime provider is not in use ('' when all are)."""
        return self.backend.fallback_reason

    def cache_info(self) -> dict[str, int]:
        """Instruction cache counters: hits, misses, size, capacity."""
        return self.text_cache.info()

    # -- selection ----------------------------------------------------------------------------
    def check_candidates(self, candidates: Any) -> np.ndarray:
        """``candidates`` as a private float32 ``[N, param_dim]`` copy, checked for this
        model: the one check of candidate vectors (:meth:`select` and the node's candidates
        topic both use it).

        Raises:
            CandidateError: what is wrong with them, by kind.
        """
        if not self.model.supports_candidate_vectors:
            raise CandidateError('unsupported', f'{type(self.model).__name__} cannot score N×D '
                                 'candidate vectors (it embeds actions from descriptions); use '
                                 'a library or a trained VLA checkpoint')
        try:
            # A private copy: the caller may reuse its buffer while this result is in use.
            arr = np.array(candidates, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise CandidateError('shape', f'candidates must be an N×D array of numbers: '
                                 f'{exc}') from exc
        if arr.ndim != 2:
            raise CandidateError('shape', f'candidates must be a 2-D array N×D, got shape '
                                 f'{arr.shape}')
        if arr.shape[0] == 0:
            raise CandidateError('shape', 'candidates is empty: give at least one candidate '
                                 'vector')
        if self.param_dim is not None and arr.shape[1] != self.param_dim:
            raise CandidateError('shape', f'candidates have width {arr.shape[1]}, the model '
                                 f'expects param_dim={self.param_dim}')
        bad = np.argwhere(~np.isfinite(arr))
        if len(bad):
            row, col = bad[0]
            raise CandidateError('nonfinite', f'candidates contain non-finite values '
                                 f'({len(bad)}), first at row {row}, column {col}: '
                                 f'{arr[row, col]}')
        trained = self.model.trained_range()
        if trained is not None:
            low, high = trained
            outside = np.argwhere((arr < low - 1e-6) | (arr > high + 1e-6))
            if len(outside):
                row, col = outside[0]
                raise CandidateError('range', f'candidate {row} column {col} is '
                                     f'{arr[row, col]:g}, outside [{low[col]:g}, '
                                     f'{high[col]:g}], the range the model was trained on: '
                                     'its score there means nothing')
        return arr

    def _check_knobs(self, top_k: int) -> tuple[int, float]:
        if isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1:
            raise ValueError(f'top_k must be a positive integer, got {top_k!r}')
        min_conf = float(self.min_confidence)
        if not 0.0 <= min_conf <= 1.0:
            raise ValueError(f'min_confidence must be in [0, 1], got {min_conf}')
        return int(top_k), min_conf

    def warm_up(self, num_cameras: int = 1, instruction: str = 'warm up',
                sampling: SamplingConfig | None = None) -> float:
        """Run one decision of each kind the library offers on blank frames, so that lazy
        set-up (allocator, kernels, a torch.compile or CUDA graph capture, the action encoder
        on thousands of sampled candidates) happens now, not on the first real frame: a
        library decision when it has fixed actions, a sampled one (``sampling``, default
        :class:`SamplingConfig`) when it declares a space.

        Returns the seconds it took. The instruction's features stay in the LRU cache.

        Raises:
            ValueError: the library has a space this model cannot sample (a zero-shot scorer).
        """
        size = self.preprocess.size
        frames = [np.zeros((size[0], size[1], 3), np.uint8) for _ in range(num_cameras)]
        start = time.perf_counter()
        if self._library_emb is not None:
            self.select(frames, instruction)
        if self._library is not None and self._library.space is not None:
            self.select_sampled(frames, instruction, sampling)
        return time.perf_counter() - start

    def _query(self, images: np.ndarray | Sequence[np.ndarray], instruction: str, color: str,
               cameras: Sequence[int] | None) -> torch.Tensor | None:
        """The fused query ``[1, E]`` of the frames and instruction (inference mode), or None
        for an empty instruction: nothing to decide. The frames are checked either way."""
        if not isinstance(instruction, str):
            raise ValueError(f'instruction must be a string, got {type(instruction).__name__}')
        instruction = instruction.strip()
        with torch.inference_mode():
            pixels = self.preprocess(images, color)  # validates frames even when abstaining
            if not instruction:
                return None
            prepared = self.text_features(instruction)
            if cameras is None:
                return self.backend.query(pixels, prepared)
            if len(cameras) != pixels.shape[0]:
                raise ValueError(f'{pixels.shape[0]} frames but {len(cameras)} camera '
                                 f'indices {list(cameras)}')
            return self.backend.query(pixels, prepared, cameras=list(cameras))

    def select(self, images: np.ndarray | Sequence[np.ndarray], instruction: str,
               color: str = 'rgb', candidates: np.ndarray | None = None,
               top_k: int | None = None, cameras: Sequence[int] | None = None) -> Selection:
        """Choose the action for the frames and instruction.

        Args:
            images: one HxWx3 uint8 frame, or a list with one frame per camera (batched into
                one forward pass and fused into one query).
            instruction: the natural-language instruction; empty means abstain.
            color: 'rgb' or 'bgr' channel order of the frames.
            candidates: optional ``[N, param_dim]`` vectors scored instead of the library.
            top_k: override the ``top_k`` attribute for this call.
            cameras: the model's camera index of each frame, when the frames are not cameras
                0..C-1 in order: e.g. ``[0, 2]`` decides with camera 1 missing (its segment
                left out of the fusion, as camera dropout trained it). None = in order.

        Raises:
            ValueError: bad frames, bad candidates, bad knobs, or nothing to choose from.
        """
        k, min_conf = self._check_knobs(self.top_k if top_k is None else top_k)
        cand = None if candidates is None else self.check_candidates(candidates)
        library, library_emb = self._library, self._library_emb
        if cand is None and library is None:
            raise ValueError('no action library is set and no candidates were given')
        if cand is None and library_emb is None:
            raise ValueError('the library declares only a continuous space, no fixed actions: '
                             'use select_sampled (node: candidate_mode sampled)')
        query = self._query(images, instruction, color, cameras)
        if query is None:
            return _empty_instruction()
        with torch.inference_mode():
            if cand is None:
                actions = library_emb
            else:
                actions = self.model.encode_actions(
                    torch.from_numpy(cand).to(self.model.device), None)
            logits = self.model.score(query, actions)[0].float()
            top_indices, top_scores, top_probs = _ranked(logits, k)
        best = top_indices[0]
        if cand is None:
            every = library.names     # built per access: once here, not once per index
            names = [every[i] for i in top_indices]
            name, vector = every[best], library.params()[best].copy()
        else:
            names = [f'candidate_{i}' for i in top_indices]
            name, vector = None, cand[best].copy()
        confidence = top_probs[0]
        return Selection(index=best, name=name, vector=vector, confidence=confidence,
                         abstained=confidence < min_conf,
                         reason=_abstain_reason(confidence, min_conf), top_names=names,
                         top_indices=top_indices, top_scores=top_scores, top_probs=top_probs)

    def select_sampled(self, images: np.ndarray | Sequence[np.ndarray], instruction: str,
                       sampling: SamplingConfig | None = None, color: str = 'rgb',
                       top_k: int | None = None,
                       cameras: Sequence[int] | None = None,
                       choice: str | None = None) -> Selection:
        """Choose a continuous action of the library's space by derivative-free optimisation
        (:mod:`.sampling`): the frames and instruction are encoded once, then thousands of
        sampled candidates are embedded and scored. ``vector`` is the best candidate, ``name``
        its description (``pick(x=0.412, y=0.730)``); ``top_*`` rank the final candidate set
        (``top_probs`` the softmax over it) and ``refinement`` keeps what the search saw.
        ``cameras`` as in :meth:`select` (a missing camera left out of the fusion). ``choice``
        pins the space's discrete choice to one option (the robot knows the next primitive;
        the model chooses where): every candidate takes it.

        Raises:
            ValueError: no space in the library, an option the space lacks, bad settings, bad
                frames, non-finite scores.
        """
        sampling = sampling or SamplingConfig()
        sampling.check()
        k, min_conf = self._check_knobs(self.top_k if top_k is None else top_k)
        library = self._library
        if library is None or library.space is None:
            raise ValueError("sampled candidates need a library with a continuous 'space' "
                             '(see actions/space.py)')
        if not self.model.supports_candidate_vectors:
            raise ValueError(f'{type(self.model).__name__} cannot score sampled candidates')
        space = library.space.pinned_to(choice)
        query = self._query(images, instruction, color, cameras)
        if query is None:
            return _empty_instruction()
        with torch.inference_mode(sampling.gradient_steps == 0):
            query = query.clone()   # a normal tensor when gradient steps differentiate it

            def score(candidates: torch.Tensor) -> torch.Tensor:
                return self.model.score(query, self.model.encode_actions(candidates, None))[0]

            found = refine(score, space, sampling, self.model.device)
        final = torch.from_numpy(found.final_logits)
        top_indices, top_scores, top_probs = _ranked(final, k)
        confidence = float(torch.softmax(torch.cat(
            [torch.tensor([found.best_logit]), final]), dim=0)[0])
        return Selection(
            index=0, name=space.describe(found.best), vector=found.best,
            confidence=confidence, abstained=confidence < min_conf,
            reason=_abstain_reason(confidence, min_conf),
            top_names=[space.describe(found.final[i]) for i in top_indices],
            top_indices=top_indices, top_scores=top_scores, top_probs=top_probs,
            refinement=found)


def _empty_instruction() -> Selection:
    """An empty instruction says nothing: abstain without scoring."""
    return Selection(index=-1, name=None, vector=np.zeros(0, np.float32), confidence=0.0,
                     abstained=True, reason='empty instruction')


def _ranked(logits: torch.Tensor, k: int) -> tuple[list[int], list[float], list[float]]:
    """The ``k`` best of ``logits`` ``[N]``: indices, logits and probabilities (the softmax
    over all N, so every candidate's probability counts)."""
    probs = torch.softmax(logits, dim=-1)
    top_p, top_i = torch.topk(probs, min(k, logits.shape[0]))
    return top_i.cpu().tolist(), logits[top_i].cpu().tolist(), top_p.cpu().tolist()


def _abstain_reason(confidence: float, min_confidence: float) -> str:
    return (f'confidence {confidence:.3f} below min_confidence {min_confidence:.3f}'
            if confidence < min_confidence else '')

def check_trained_bounds(model: Any, space) -> None:
    """ValueError when ``space`` reaches beyond the continuous bounds the model was trained
    on (``action.continuous_low/high`` in its config; older models carry none)."""
    trained = model.trained_range()
    if trained is None:
        return
    low, high = trained
    start = len(space.options)
    for i, dim in enumerate(space.dims):
        j = start + i
        if j >= len(low):
            break
        tol = 1e-6 * max(1.0, abs(high[j] - low[j]))
        if dim.low < low[j] - tol or dim.high > high[j] + tol:
            raise ValueError(f'space dimension {dim.name!r} spans [{dim.low:g}, {dim.high:g}], '
                             f'the model was trained on [{low[j]:g}, {high[j]:g}]: its scores '
                             'outside that range mean nothing; narrow the bounds or retrain')


def selection_to_json(selection: Selection, **extra: Any) -> str:
    """Serialise a Selection (plus extra fields such as stamp/latency) for a scores topic."""
    data = {'index': selection.index, 'name': selection.name,
            'vector': [float(v) for v in selection.vector],
            'confidence': selection.confidence, 'abstained': selection.abstained,
            'reason': selection.reason, 'top_names': selection.top_names,
            'top_indices': selection.top_indices, 'top_scores': selection.top_scores,
            'top_probs': selection.top_probs}
    data.update(extra)
    return json.dumps(data)
