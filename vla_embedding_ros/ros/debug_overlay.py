"""The debug image: the camera frame with the instruction and top-k choices drawn on it
(sampled mode: also the score heatmap over the table and the sampled candidates)."""
from __future__ import annotations

import cv2
import numpy as np


def draw_overlay(image: np.ndarray, color: str, instruction: str, names: list[str],
                 probs: list[float], abstained: bool, reason: str = '') -> np.ndarray:
    """Return an RGB copy of ``image`` with the instruction and ranked choices written on it.

    Args:
        image: HxWx3 uint8 frame in ``color`` order ('rgb' or 'bgr').
        instruction: the instruction the decision used.
        names / probs: the top-k candidate names and probabilities, best first.
        abstained: whether the selector abstained (the header line says why).
    """
    canvas = np.ascontiguousarray(image[:, :, ::-1] if color == 'bgr' else image).copy()
    h = canvas.shape[0]
    scale = max(0.35, h / 960.0)
    line = max(12, int(28 * scale))
    lines = [f'"{instruction}"']
    lines.append(f'ABSTAIN: {reason}' if abstained else f'-> {names[0] if names else "?"}')
    lines += [f'{i + 1}. {n} {p:.2f}' for i, (n, p) in enumerate(zip(names, probs, strict=True))]
    for i, text in enumerate(lines):
        y = (i + 1) * line
        if y > h:
            break
        # A dark outline under the text keeps it readable on any background.
        cv2.putText(canvas, text, (4, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3,
                    cv2.LINE_AA)
        fg = (255, 80, 80) if (abstained and i == 1) else (255, 255, 255)
        cv2.putText(canvas, text, (4, y), cv2.FONT_HERSHEY_SIMPLEX, scale, fg, 1, cv2.LINE_AA)
    return canvas


def draw_sampled_overlay(image: np.ndarray, color: str, instruction: str, heatmap: np.ndarray,
                         initial: np.ndarray, final: np.ndarray, chosen: np.ndarray,
                         names: list[str], probs: list[float], abstained: bool,
                         reason: str = '', alpha: float = 0.45,
                         max_dots: int = 256) -> np.ndarray:
    """The sampled-mode debug image: ``heatmap`` (logits over the table, row 0 at the top)
    blended over the frame, the ``initial`` samples as small grey dots, the refined ``final``
    candidates as cyan dots, the ``chosen`` point as a red ring with a cross, then the text of
    :func:`draw_overlay` (instruction, chosen action, top-k).

    Points are ``[N, 2]`` unit coordinates (x, y in [0, 1] across the frame's width and
    height); at most ``max_dots`` of each set are drawn (evenly spaced), so 16k samples do not
    paint the frame over.
    """
    canvas = np.ascontiguousarray(image[:, :, ::-1] if color == 'bgr' else image).copy()
    h, w = canvas.shape[:2]
    heat = np.asarray(heatmap, np.float32)
    span = float(heat.max() - heat.min())
    norm = np.zeros_like(heat) if span <= 0 else (heat - heat.min()) / span
    cells = cv2.resize((norm * 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    colored = cv2.applyColorMap(cells, cv2.COLORMAP_JET)[:, :, ::-1]   # BGR -> RGB
    canvas = cv2.addWeighted(canvas, 1.0 - alpha, colored, alpha, 0.0)
    radius = max(1, round(min(h, w) / 160))

    def pixels(points: np.ndarray) -> np.ndarray:
        pts = np.asarray(points, np.float32).reshape(-1, 2)
        if len(pts) > max_dots:
            pts = pts[np.linspace(0, len(pts) - 1, max_dots).astype(int)]
        return np.stack([np.clip(pts[:, 0] * w, 0, w - 1), np.clip(pts[:, 1] * h, 0, h - 1)],
                        axis=1).astype(int) if len(pts) else np.zeros((0, 2), int)

    for x, y in pixels(initial):
        cv2.circle(canvas, (int(x), int(y)), radius, (160, 160, 160), -1, cv2.LINE_AA)
    for x, y in pixels(final):
        cv2.circle(canvas, (int(x), int(y)), radius, (0, 255, 255), -1, cv2.LINE_AA)
    for x, y in pixels(chosen)[:1]:
        size = max(6, round(min(h, w) / 30))
        cv2.circle(canvas, (int(x), int(y)), size, (255, 0, 0), 2, cv2.LINE_AA)
        cv2.drawMarker(canvas, (int(x), int(y)), (255, 0, 0), cv2.MARKER_CROSS, size * 2, 2)
    return draw_overlay(canvas, 'rgb', instruction, names, probs, abstained, reason)


def short_name(name: str) -> str:
    """A candidate name cut to fit a line of the overlay."""
    return name if len(name) < 40 else name[:37] + '...'


def decision_overlay(selector, frames: list[np.ndarray], color: str, decision,
                     heatmap_size: int, cameras: list[int] | None = None) -> np.ndarray:
    """The debug image of a decision (:class:`.selector_outputs.Decision`) on ``frames``
    (the first camera's frame drawn on).

    Sampled mode (``selection.refinement`` set) adds the score over the table for the chosen
    primitive (a heatmap of ``heatmap_size`` cells per side: a model evaluation, so it costs
    time), the first and last candidate sets and the choice; ``cameras`` as in
    ``ActionSelector.select`` (the present cameras' indices when one is missing).
    """
    selection, abstained, reason = decision.selection, decision.abstained, decision.reason
    instruction = decision.job.instruction
    names = [short_name(n) for n in (selection.top_names if selection else [])]
    probs = selection.top_probs if selection else []
    found = selection.refinement if selection is not None else None
    if found is None:
        return draw_overlay(frames[0], color, instruction or '', names, probs, abstained,
                            reason)
    from ..selection.heatmap import option_mask, score_map, unit_coordinates

    space = selector.library.space
    smap = score_map(selector, frames, instruction, selection.vector, heatmap_size, color,
                     cameras=cameras)
    # Only the candidates of the chosen primitive lie on this heatmap's plane.
    initial = found.initial[option_mask(space, found.initial, smap.option)]
    final = found.final[option_mask(space, found.final, smap.option)]
    return draw_sampled_overlay(
        frames[0], color, instruction or '', smap.logits,
        unit_coordinates(space, initial, smap.dims),
        unit_coordinates(space, final, smap.dims),
        unit_coordinates(space, selection.vector, smap.dims), names,
        selection.top_probs, abstained, reason)
