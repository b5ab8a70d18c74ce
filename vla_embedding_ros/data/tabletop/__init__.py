"""The procedural tabletop benchmark, in one import.

Scenes and rendering live in ``scene``, the 80-action library in ``actions``, the instruction
grammar and held-out wordings in ``language``, split definitions in ``splits`` and the seeded
sample generator in ``generator``; this module re-exports their public API::

    from vla_embedding_ros.data.tabletop import TabletopGenerator, apply_action
    gen = TabletopGenerator(split='train', seed=0)
    sample = gen.sample()          # sample.image (96x96x3 RGB), sample.instruction, ...
    scene, success = apply_action(sample.scene, sample.action_name)   # success is True
"""
from .actions import (
    ACTION_INDEX,
    ACTION_NAMES,
    GRID,
    PARAMETER_NAMES,
    PRIMITIVES,
    action_index,
    action_name,
    action_params,
    build_action_library,
    cell_center,
    library_yaml,
    parse_action_name,
    write_action_library,
)
from .generator import Sample, TabletopGenerator, judge
from .language import (
    COLOR_WORDS,
    HELDOUT_TEMPLATES,
    REWORDED_TEMPLATES,
    SHAPE_WORDS,
    TRAIN_TEMPLATES,
    make_instruction,
)
from .scene import (
    COLORS,
    RGB,
    SHAPES,
    Goal,
    Scene,
    SceneObject,
    TabletopConfig,
    apply_action,
    camera_frame,
    draw_object,
    render,
)
from .splits import HELDOUT_PAIRS, SEEN_PAIRS, SPLIT_NAMES, SPLITS, get_split

__all__ = [
    'ACTION_INDEX', 'ACTION_NAMES', 'GRID', 'PARAMETER_NAMES', 'PRIMITIVES', 'action_index',
    'action_name', 'action_params', 'build_action_library', 'cell_center', 'library_yaml',
    'parse_action_name', 'write_action_library', 'Sample', 'TabletopGenerator', 'judge',
    'COLOR_WORDS', 'HELDOUT_TEMPLATES', 'REWORDED_TEMPLATES', 'SHAPE_WORDS', 'TRAIN_TEMPLATES',
    'make_instruction', 'COLORS', 'RGB',
    'SHAPES', 'Goal', 'Scene', 'SceneObject', 'TabletopConfig', 'apply_action', 'camera_frame',
    'draw_object',
    'render', 'HELDOUT_PAIRS', 'SEEN_PAIRS', 'SPLIT_NAMES', 'SPLITS', 'get_split',
]
