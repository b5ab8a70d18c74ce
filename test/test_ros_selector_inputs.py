"""The action_selector's input checks without a node: frame headers and pixel limits (raw and
compressed), frames of several cameras in one channel order, instruction cleaning, and
candidate messages cut into rows for the selector's own check, action_choice pins."""
import numpy as np
import pytest

pytest.importorskip('sensor_msgs')

from vla_embedding_ros.actions.space import ActionSpace  # noqa: E402
from vla_embedding_ros.ros.image_conversion import (  # noqa: E402
    ImageError,
    numpy_to_compressed,
    numpy_to_image,
)
from vla_embedding_ros.ros.selector_inputs import (  # noqa: E402
    ChoiceError,
    candidate_rows,
    check_frame,
    clean_instruction,
    frames_of,
    pinned_choice,
)
from vla_embedding_ros.selection.selector import CandidateError  # noqa: E402


def image(h=6, w=8, value=0):
    return np.full((h, w, 3), value, np.uint8)


def test_frames_over_the_pixel_limit_are_refused_from_the_header():
    raw, packed = numpy_to_image(image()), numpy_to_compressed(image(), fmt='png')
    for msg in (raw, packed):
        check_frame(msg, 48)                 # 6 x 8 = 48: at the limit is fine
        check_frame(msg, 0)                  # 0: no limit
        with pytest.raises(ImageError, match='8x6 = 48 pixels > max_image_pixels 47') as info:
            check_frame(msg, 47)
        assert info.value.kind == 'image_oversized'
    raw.step = 3                             # the header disagrees with the data
    with pytest.raises(ImageError) as info:
        check_frame(raw, 0)
    assert info.value.kind == 'image_layout'
    packed.data = b'not an image'
    with pytest.raises(ImageError) as info:
        check_frame(packed, 0)
    assert info.value.kind == 'image_decode'


def test_frames_of_several_cameras_share_the_first_ones_channel_order():
    rgb = image(value=0)
    rgb[..., 0] = 200                        # red in rgb order
    frames, color = frames_of([numpy_to_compressed(rgb, fmt='png'), numpy_to_image(rgb)], 0)
    assert color == 'bgr'                    # the first camera's (decoded PNG) order
    assert frames[0][0, 0].tolist() == [0, 0, 200] == frames[1][0, 0].tolist()
    frames, color = frames_of([numpy_to_image(rgb)], 0)
    assert color == 'rgb' and frames[0][0, 0].tolist() == [200, 0, 0]


def test_instructions_are_stripped_cut_and_cleared_when_empty():
    assert clean_instruction('  pick it  ', 100) == ('pick it', [])
    text, rejected = clean_instruction('pick up the cube', 4)
    assert text == 'pick' and [k for k, _ in rejected] == ['instruction_truncated']
    assert '16 characters cut to max_instruction_chars 4' in rejected[0][1]
    text, rejected = clean_instruction(' \t\n', 100)
    assert text is None and [k for k, _ in rejected] == ['instruction_empty']
    assert clean_instruction('拾起红色的立方体 🤖', 100)[0] == '拾起红色的立方体 🤖'


class Checker:
    """Stands in for the selector: records what it was asked to check."""

    def __init__(self, param_dim, refuse=None):
        self.param_dim, self.refuse, self.seen = param_dim, refuse, []

    def check_candidates(self, rows):
        self.seen.append(rows.shape)
        if self.refuse:
            raise CandidateError(self.refuse, 'refused')
        return rows


def test_candidate_messages_become_rows_the_selector_then_checks():
    values = np.arange(6, dtype=np.float32)
    selector = Checker(param_dim=3)
    assert candidate_rows(values, [3, 2], selector).shape == (3, 2)   # layout.dim [N, D]
    assert candidate_rows(values, [], selector).shape == (2, 3)       # rows of param_dim
    assert selector.seen == [(3, 2), (2, 3)]
    for dims, checker in (([6, 4], selector), ([], Checker(param_dim=None)),
                          ([], Checker(param_dim=4))):
        with pytest.raises(CandidateError, match='do not split into rows') as info:
            candidate_rows(values, dims, checker)
        assert info.value.kind == 'shape'
    with pytest.raises(CandidateError) as info:
        candidate_rows(values, [2, 3], Checker(3, refuse='nonfinite'))
    assert info.value.kind == 'nonfinite'


def test_a_choice_pin_names_an_option_of_the_space_in_sampled_mode():
    space = ActionSpace.from_dict({'choice': {'name': 'primitive', 'options': ['pick', 'place']},
                                   'continuous': [{'name': 'u', 'low': 0.0, 'high': 1.0}]})
    assert pinned_choice(' place ', space, 'sampled') == 'place'
    assert pinned_choice('  ', space, 'sampled') is None        # empty: the model chooses
    for text, space_, mode, kind in (('jump', space, 'sampled', 'unknown'),
                                     ('pick', space, 'library', 'unsupported'),
                                     ('pick', None, 'sampled', 'unsupported')):
        with pytest.raises(ChoiceError, match=repr(text)) as info:
            pinned_choice(text, space_, mode)
        assert info.value.kind == kind
