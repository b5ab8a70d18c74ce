"""What the action_selector's settings mean for the selector, and configure as one function.

ROS-free: the node hands its settings dict (parameter name -> value) to :func:`configure`
and turns a :class:`ConfigureError` into its one configure-failure path; the refusals are
also what the node answers to a parameter change it cannot take.
"""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Callable

from ..package_share import package_file
from ..selection.sampling import SamplingConfig

AUTO_SAMPLES = {'cpu': 1024, 'cuda': 16384}   # sample_count 0, by device type


class ConfigureError(Exception):
    """Why configure failed, in one line naming the path or the setting."""


@dataclass
class Configured:
    selector: object        # selection.ActionSelector, warmed up
    device: object          # torch.device
    where: str              # 'model <path>[, library <path>]'


def default_model_path() -> str:
    """The shipped model: ``share/vla_embedding_ros/models/tabletop`` if installed there,
    else ``models/tabletop`` of the source tree (editable installs, ``make demo``)."""
    return os.path.dirname(package_file('models', 'tabletop', 'config.json'))


def sample_count_for(value: int, device_type: str) -> int:
    """The effective sample count: ``value``, or with 0 the default for the device type."""
    return int(value) or AUTO_SAMPLES.get(device_type, AUTO_SAMPLES['cpu'])


def camera_topics(settings: dict) -> list[str]:
    """The camera topics to subscribe (``<topic>/compressed`` with image_transport compressed)."""
    suffix = '/compressed' if settings['image_transport'] == 'compressed' else ''
    return [t.rstrip('/') + suffix for t in settings['image_topics']]


def selector_options(settings: dict) -> dict:
    """The ActionSelector keyword arguments the settings ask for."""
    return {'top_k': settings['top_k'], 'min_confidence': settings['min_confidence'],
            'precision': settings['precision'], 'compile_mode': settings['compile'],
            'backend': settings['backend'], 'onnx_path': settings['onnx_path'] or None,
            'checkpoint_dir': settings['model_path'] or default_model_path(),
            'onnx_providers': settings['onnx_providers'],
            'onnx_threads': settings['torch_threads'], 'onnx_text': settings['onnx_text']}


def sampling_config(settings: dict, device_type: str) -> SamplingConfig:
    """The sampled-mode settings as a SamplingConfig (sample_count 0 resolved by device)."""
    return SamplingConfig(samples=sample_count_for(settings['sample_count'], device_type),
                          iterations=settings['sample_iterations'],
                          noise=settings['sample_noise'], seed=settings['sample_seed'],
                          gradient_steps=settings['gradient_steps'])


def sampled_refusal(candidate_mode: str, library) -> str:
    """Why candidate_mode cannot work with this library ('' when it can)."""
    if candidate_mode == 'sampled' and (library is None or library.space is None):
        return ("candidate_mode: sampled needs an action library with a continuous "
                "'space:' (e.g. config/tabletop_continuous_actions.yaml; set "
                "library_path), this one has only fixed actions; or use candidate_mode: "
                'library')
    if candidate_mode == 'library' and library is not None and not len(library):
        return ("candidate_mode: library needs fixed actions, this library declares only "
                "a continuous 'space:'; use candidate_mode: sampled")
    return ''


def missing_camera_refusal(missing_camera: str, backend: str, cameras: int) -> str:
    """Why missing_camera cannot work with this backend ('' when it can): the ONNX query
    graph numbers cameras by position, with no input saying which camera is missing."""
    if missing_camera == 'decide' and backend == 'onnxruntime' and cameras > 1:
        return ('missing_camera: decide needs backend torch: the ONNX query graph '
                '(vla-export-onnx) adds camera embeddings by position and cannot be told '
                'which camera is missing; use backend: torch, or missing_camera: abstain')
    return ''


def warm_up(selector, settings: dict, device) -> float:
    """One decision of each kind the library offers on blank frames (the sampled one too, so
    switching candidate_mode later does not pay for it on a real frame); its seconds."""
    return selector.warm_up(len(settings['image_topics']),
                            sampling=sampling_config(settings, device.type))


def warm_up_report(selector, seconds: float) -> tuple[list[str], str]:
    """The warnings for any fast path that fell back (with its reason), and the line saying
    what the warm-up took and what runs the model."""
    runner = selector.image_encoder
    warnings = []
    if selector.backend_fallback_reason:
        warnings.append(f'backend onnxruntime: {selector.backend_fallback_reason}')
    if runner.fallback_reason:
        warnings.append(f'compile {runner.requested_mode!r} unavailable, running eager: '
                        f'{runner.fallback_reason}')
    return warnings, (f'warm-up decision took {seconds * 1e3:.0f} ms (backend '
                      f'{selector.backend_name}, image encoder: {runner.mode}, '
                      f'precision {runner.precision})')


def reactivate(model, library, settings: dict, device):
    """The selector again after a deactivate: the kept model back on ``device``, warmed up.
    Returns (selector, warm-up seconds)."""
    from ..selection import ActionSelector

    selector = ActionSelector(model.to(device), library, **selector_options(settings))
    return selector, warm_up(selector, settings, device)


def release_device(selector, device):
    """The selector's model moved off a CUDA ``device`` with the GPU memory given back (the
    selector, its library embeddings and caches are the caller's to drop); the model."""
    if device is None or device.type != 'cuda':
        return selector.model
    model = selector.model.to('cpu')
    del selector
    # Only the CUDA caching allocator needs the cycles collected before it can give memory
    # back; on the CPU a full collection just costs ~0.2 s per deactivate.
    gc.collect()
    import torch
    torch.cuda.empty_cache()
    return model


def configure(settings: dict, on_warm_up: Callable[[object, float], None]) -> Configured:
    """Load and warm up the selector the settings ask for; ``on_warm_up(selector, seconds)``
    right after the warm-up (before the settings are checked against the library).

    Raises:
        ConfigureError: a refused combination of settings, or a load failure (the model or
            library path and the exception in its message).
    """
    from ..model.device import resolve_device
    from ..selection import ActionSelector

    model_path = settings['model_path'] or default_model_path()
    library_path = settings['library_path'] or None
    where = f'model {model_path}' + (f', library {library_path}' if library_path else '')
    refusal = missing_camera_refusal(settings['missing_camera'], settings['backend'],
                                     len(settings['image_topics']))
    if refusal:
        raise ConfigureError(refusal)
    try:
        device = resolve_device(settings['device'])
        if settings['torch_threads'] > 0:
            import torch
            torch.set_num_threads(settings['torch_threads'])
        selector = ActionSelector.from_pretrained(model_path, library_path, device=str(device),
                                                  **selector_options(settings))
        on_warm_up(selector, warm_up(selector, settings, device))
    except Exception as exc:  # any load failure leaves the node unconfigured
        raise ConfigureError(f'cannot load {where}: {type(exc).__name__}: {exc}') from exc
    refusal = sampled_refusal(settings['candidate_mode'], selector.library)
    if not refusal:
        try:
            sampling_config(settings, device.type).check()
        except ValueError as exc:
            refusal = f'sampled mode: {exc}'
    if refusal:
        raise ConfigureError(f'{where}: {refusal}')
    return Configured(selector, device, where)
