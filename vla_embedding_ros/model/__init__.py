"""Pure-PyTorch joint vision-language-action embedding model (no ROS imports).

``transformers`` is imported only when a model is built, so importing this package is cheap.
"""
from .config import ActionConfig, ConvConfig, FusionConfig, TextConfig, VisionConfig, VLAConfig
from .device import resolve_device
from .encoders import (
    ActionEncoder,
    TextEncoder,
    TextFeatures,
    VisionEncoder,
    VisionFeatures,
    resolve_model_path,
)
from .fusion import GatedFusion, LateFusion, TransformerFusion, build_fusion
from .losses import library_contrastive_loss, nt_xent, symmetric_infonce, triplet_loss
from .vla_model import VLAModel

__all__ = [
    'ActionConfig', 'ActionEncoder', 'ConvConfig', 'FusionConfig', 'GatedFusion', 'LateFusion',
    'TextConfig', 'TextEncoder', 'TextFeatures', 'TransformerFusion', 'VLAConfig', 'VLAModel',
    'VisionConfig', 'VisionEncoder', 'VisionFeatures', 'build_fusion',
    'library_contrastive_loss', 'nt_xent', 'resolve_device', 'resolve_model_path',
    'symmetric_infonce', 'triplet_loss',
]
