"""The debug image: the camera frame with the instruction and top-k choices drawn on it."""
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
