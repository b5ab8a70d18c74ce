"""The action_selector's inputs, checked before they reach a decision. ROS-free: messages are
read by their fields (``sensor_msgs/Image`` or ``CompressedImage``, ``std_msgs`` arrays).

Bad input never stops the node (each kind is counted under ``rejected`` in /diagnostics and
logged at most once per ``LOG_PERIOD_S`` per kind):

- images: unsupported encoding, zero size, ``step``/``data`` disagreeing with the header are
  rejected in the callback in O(1), so a bad frame never displaces a good one in the slot;
  frames over ``max_image_pixels`` likewise, compressed ones by the size their JPEG/PNG header
  declares (read without decoding); compressed frames that do not decode are rejected by the
  worker.
- instruction: empty or whitespace-only clears it (the node abstains: it was told nothing);
  longer than ``max_instruction_chars`` is cut to that length (the tokenizer keeps far fewer
  tokens, and the scores JSON echoes the instruction on every decision). Any Unicode is fine.
- candidates: rows of the wrong width, non-finite values, or anything else the selector
  cannot score (:meth:`ActionSelector.check_candidates`) are rejected and the previous
  candidates stay in force; an empty message means "back to the library", as documented.
- action_choice: an option the library's space does not have, or a pin in a mode that
  cannot honour it (candidate_mode library), is rejected and the previous pin stays; an
  empty message frees the choice again.
- an exception inside inference is counted under ``errors['inference']`` and the next
  frame is processed as usual.
"""
from __future__ import annotations

import numpy as np

from ..selection.selector import CandidateError
from .image_conversion import (
    ImageError,
    check_image_header,
    compressed_size,
    compressed_to_numpy,
    image_to_numpy,
)


def _is_compressed(msg) -> bool:
    return hasattr(msg, 'format') and not hasattr(msg, 'encoding')


def check_frame(msg, max_pixels: int) -> None:
    """O(1) checks of a frame's header (no pixel read; a compressed frame's declared size).

    Raises:
        ImageError: by kind (image_encoding, image_empty, image_layout, image_decode,
            image_oversized).
    """
    if _is_compressed(msg):
        # Its header only (tens of microseconds): a small file declaring a huge image
        # is refused here, before a decode could cost seconds and gigabytes.
        width, height = compressed_size(msg)
    else:
        check_image_header(msg)
        width, height = int(msg.width), int(msg.height)
    if max_pixels and width * height > max_pixels:
        raise ImageError('image_oversized', f'{width}x{height} = {width * height} pixels > '
                                            f'max_image_pixels {max_pixels}')


def frames_of(msgs: list, max_pixels: int) -> tuple[list[np.ndarray], str]:
    """The frames of ``msgs`` (one per camera) in one channel order, and that order.

    Raises:
        ValueError: a frame that does not convert (an ImageError carries its kind).
    """
    decoded = [compressed_to_numpy(m, max_pixels) if _is_compressed(m) else image_to_numpy(m)
               for m in msgs]
    color = decoded[0][1]
    # One call takes one channel order: flip the odd cameras out (a view, no copy).
    return [f if c == color else f[:, :, ::-1] for f, c in decoded], color


def clean_instruction(text: str, max_chars: int) -> tuple[str | None, list[tuple[str, str]]]:
    """The instruction to decide on (None: cleared, the node abstains) and the rejections to
    count, as (kind, message)."""
    text = text.strip()
    rejected = []
    if not text:
        rejected.append(('instruction_empty', 'empty or whitespace-only instruction: '
                                              'abstaining until a real one arrives'))
    if len(text) > max_chars:
        rejected.append(('instruction_truncated', f'{len(text)} characters cut to '
                                                  f'max_instruction_chars {max_chars}'))
        text = text[:max_chars]
    return text or None, rejected


def candidate_rows(data: np.ndarray, dims: list[int], selector) -> np.ndarray:
    """A non-empty candidates message's values as the N x D rows ``selector`` will score.
    ``dims``: the sizes of its ``layout.dim`` (``[N, D]``; without them rows of the model's
    ``param_dim``).

    Raises:
        CandidateError: by kind (shape, nonfinite, range, unsupported).
    """
    width = int(dims[1]) if len(dims) >= 2 else (selector.param_dim or 0)
    if not width or data.size % width:
        raise CandidateError('shape', f'{data.size} values do not split into rows of {width} '
                                      '(set layout.dim = [N, D])')
    return selector.check_candidates(data.reshape(-1, width))


class ChoiceError(ValueError):
    """An action_choice the node cannot honour; ``kind`` names it for the counters."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def pinned_choice(text: str, space, candidate_mode: str) -> str | None:
    """The option an ``action_choice`` message pins (None: the model chooses again).

    Raises:
        ChoiceError: ``unsupported`` (not sampled, or a library without a space) or
            ``unknown`` (not one of the space's options).
    """
    option = text.strip() or None
    if option is None:
        return None
    if candidate_mode != 'sampled' or space is None or not space.options:
        raise ChoiceError('unsupported', f'action_choice {option!r} needs candidate_mode '
                          'sampled and a library whose space has a choice')
    if option not in space.options:
        raise ChoiceError('unknown', f'action_choice {option!r} is not one of '
                          f'{list(space.options)}')
    return option
