"""Action selection: the action library, on-device preprocessing and the selector."""
from ..actions.library import Action, ActionLibrary, Twist, load_library
from ..model.zero_shot import ZeroShotCLIP, is_zero_shot_checkpoint
from .cache import LRUCache
from .preprocess import ImagePreprocessor
from .selector import ActionSelector, Selection, selection_to_json

__all__ = [
    'Action', 'ActionLibrary', 'ActionSelector', 'ImagePreprocessor', 'LRUCache', 'Selection',
    'Twist', 'ZeroShotCLIP', 'is_zero_shot_checkpoint', 'load_library', 'selection_to_json',
]
