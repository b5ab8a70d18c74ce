"""What one action_selector decision publishes, as plain data: the action's name, its vector,
its twist and the ``~/scores`` JSON payload. ROS-free; the node only wraps these in messages.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

from .decision_queue import Job
from .selector_setup import camera_topics


@dataclass
class Decision:
    """The outcome of one job. ``selection`` is None when the node abstained before scoring
    (no instruction, a missing camera with missing_camera: abstain); ``reason`` says why it
    abstained ('' when it did not)."""

    job: Job
    selection: object | None      # a selection.selector.Selection
    reason: str
    latency_ms: float
    inference_ms: float = 0.0

    @property
    def abstained(self) -> bool:
        return self.selection is None or self.selection.abstained


def action_name(selection) -> str:
    """The library action's name, ``candidate_<i>`` for a candidate given as a vector."""
    return selection.name if selection.name is not None else f'candidate_{selection.index}'


def vector_values(selection) -> list[float]:
    return [float(v) for v in selection.vector]


def action_twist(decision: Decision, library) -> tuple[tuple, tuple] | None:
    """(linear, angular) of the chosen action's twist, or None when it has none: candidates
    from the topic are bare vectors; a sampled action takes the space's twist mapping, a
    library action its entry's twist."""
    selection = decision.selection
    if decision.abstained or decision.job.candidates is not None:
        return None
    if selection.refinement is not None:
        space = library.space
        return space.twist_of(selection.vector) if space.twist else None
    twist = library[selection.index].twist if library else None
    return None if twist is None else (twist.linear, twist.angular)


def scores_payload(decision: Decision, stamp: tuple[int, int], frame_id: str, library,
                   settings: dict) -> dict:
    """The ``~/scores`` JSON of a decision on the frame stamped ``stamp`` (sec, nanosec)."""
    job, selection, abstained = decision.job, decision.selection, decision.abstained
    scores = {
        'instruction': job.instruction, 'abstained': abstained, 'reason': decision.reason,
        'selected': None if abstained else action_name(selection),
        'confidence': selection.confidence if selection else None,
        'vector': vector_values(selection) if selection else [],
        'parameter_names': list(library.parameter_names) if library else [],
        'top_names': selection.top_names if selection else [],
        'top_scores': selection.top_scores if selection else [],
        'top_probs': selection.top_probs if selection else [],
        'stamp': {'sec': int(stamp[0]), 'nanosec': int(stamp[1])},
        'frame_id': frame_id,
        # the frames this decision fused, and the camera topics it was missing (a missing
        # camera is fused only without: missing_camera decide; abstain names it in reason)
        'cameras': len(job.msgs) - len(job.missing), 'missing_cameras': list(job.missing),
        'candidates': 'topic' if job.candidates is not None else 'library',
        'candidate_mode': settings['candidate_mode'],
        'latency_ms': decision.latency_ms, 'inference_ms': decision.inference_ms,
    }
    found = selection.refinement if selection is not None else None
    if found is not None:
        # sampled: top_* rank the final candidate set; what the search did, in numbers
        scores['candidates'] = 'sampled'
        scores['choice'] = job.choice     # pinned by action_choice (None: the model chose)
        scores['evaluations'] = found.evaluations
        scores['sampling'] = {
            'samples': int(found.initial.shape[0]),
            'iterations': settings['sample_iterations'],
            'noise': settings['sample_noise'], 'seed': settings['sample_seed'],
            'gradient_steps': settings['gradient_steps'],
            'best_logit': found.best_logit, 'history': list(found.history)}
    return scores


def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux /proc); NaN elsewhere. For soak runs."""
    try:
        with open('/proc/self/statm') as handle:
            pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return float('nan')
    return pages * os.sysconf('SC_PAGE_SIZE') / 2**20


def diagnostics_values(selector, settings: dict, device, sample_count: int,
                       debug_image_ms) -> dict:
    """The node's own values in /diagnostics beside the counters: what runs the model (as
    it runs, after any fallback; the settings while no model is loaded) and what it costs."""
    runner = selector.image_encoder if selector is not None else None
    return {'mode': settings['mode'], 'device': str(device),
            'precision': runner.precision if runner else settings['precision'],
            'compile': runner.mode if runner else settings['compile'],
            'compile_fallback': runner.fallback_reason if runner else '',
            'backend': selector.backend_name if selector is not None else settings['backend'],
            'backend_providers': ', '.join(getattr(selector.backend, 'providers', [])
                                           if selector is not None else []),
            'backend_fallback': (selector.backend_fallback_reason if selector is not None
                                 else ''),
            'cameras': ', '.join(camera_topics(settings)),
            'candidate_mode': settings['candidate_mode'], 'sample_count': sample_count,
            'debug_image_ms': (float(np.median(debug_image_ms)) if debug_image_ms
                               else float('nan')),
            'rss_mb': rss_mb(), 'threads': threading.active_count()}
