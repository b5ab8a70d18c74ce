"""Which recorded actions belong to one episode (the samples' ``episode`` field).

An episode starts when the instruction text changes (the same text published again, as a
latched or periodic instruction is, continues it) and, when the importer has an episode topic
(``vla-bag-to-dataset --episode-topic``, e.g. ``/libero_sim/episode_result``), after every
message on it. The second matters where episodes repeat an instruction: LIBERO runs each task
several times in a row, and without the results between the runs they would be one episode.

A sample's ``timestamp`` counts from its episode's start: the instruction that began it, or the
episode message that ended the one before, whichever came later.
"""
from __future__ import annotations

import numpy as np

from .bag_pairing import Pairing, Timeline


def instruction_runs(texts: list[str], instructions: Timeline) -> dict[int, tuple[int, int]]:
    """Per instruction id: (run, start ns) of the run of equal texts it belongs to."""
    runs, run, previous, begin = {}, -1, None, 0
    for t, i in zip(instructions.stamps.tolist(), instructions.ids.tolist(), strict=True):
        if texts[i] != previous:
            run, previous, begin = run + 1, texts[i], t
        runs[i] = (run, begin)
    return runs


def assign_episodes(texts: list[str], instructions: Timeline, ends: Timeline,
                    matched: list[Pairing], first: int) -> dict[int, tuple[int, int]]:
    """Per matched action id: (episode number, episode start ns). Episodes are numbered from
    ``first`` in time order, counting only those with a matched action (the ones written)."""
    runs = instruction_runs(texts, instructions)
    end_stamps = ends.stamps
    segments = {}
    for pairing in matched:
        run, begin = runs[pairing.instruction]
        # episode messages at or before the action: an action stamped with its episode's
        # result belongs to the next episode (a result follows its episode's last action)
        closed = int(np.searchsorted(end_stamps, pairing.stamp, side='right'))
        start = max(begin, int(end_stamps[closed - 1])) if closed else begin
        segments[pairing.action] = ((run, closed), start)
    # (run, closed) grows with time in both parts, so its order is the episodes' order
    order = {key: first + n for n, key in enumerate(sorted({k for k, _ in segments.values()}))}
    return {action: (order[key], start) for action, (key, start) in segments.items()}
