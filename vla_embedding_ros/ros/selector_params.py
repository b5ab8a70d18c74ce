"""The action_selector node's parameters: declarations (with descriptors) and validation.

Kept apart from the node so the table of parameters reads in one place and the validation
rules can be unit-tested without spinning anything. ``config/action_selector.yaml`` lists
every parameter declared here with its default.
"""
from __future__ import annotations

import re
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor

from ..selection.accelerate import COMPILE_MODES, PRECISIONS
from ..selection.backends import BACKENDS
from ..selection.backends import TEXT_PRECISIONS as ONNX_TEXT
from ..selection.sampling import MAX_SAMPLES
from .descriptors import float_range, int_range
from .selector_setup import (
    AUTO_SAMPLES,
    default_model_path,
    missing_camera_refusal,
    sample_count_for,  # noqa: F401  (part of this module's API)
    sampled_refusal,
)

MODES = ('continuous', 'on_instruction')
TRANSPORTS = ('raw', 'compressed')
MISSING_CAMERA = ('abstain', 'decide')
CANDIDATE_MODES = ('library', 'sampled')
_PROVIDER_RE = re.compile(r'^\s*(auto|[A-Za-z]+(\s*,\s*[A-Za-z]+)*)\s*$')
_DEVICE_RE = re.compile(r'^(auto|cpu|cuda(:\d+)?)$')
HELP = ("Picks a robot's next action from camera frame(s) and a natural-language instruction "
        '(a lifecycle node): subscribes image (remap it to your camera), instruction and '
        'candidates; publishes ~/selected_action, ~/action_vector, ~/scores, /diagnostics. '
        'With autostart it configures and activates itself; a failed configure ends the '
        'program (exit 1, the reason on stderr) unless exit_on_configure_failure is false.')
HELP_EXAMPLE = '''vla-action-selector --ros-args -r image:=/camera/image_raw -p device:=cpu
vla-action-selector --ros-args --params-file config/action_selector.yaml'''
# Parameters that change what configure loads: settable only while unconfigured.
LOAD_PARAMS = ('model_path', 'library_path', 'device', 'precision', 'compile', 'torch_threads',
               'backend', 'onnx_path', 'onnx_providers', 'onnx_text')
# Parameters that change which topics exist: settable only while not active.
TOPIC_PARAMS = ('image_topics', 'image_transport')


def parameter_table() -> dict[str, tuple[Any, ParameterDescriptor]]:
    """name -> (default, descriptor) for every parameter of the node."""
    unconfigured = 'changes only while unconfigured (cleanup first); used by the next configure'
    inactive = 'changes only while not active; used by the next activate'
    return {
        'model_path': (default_model_path(), ParameterDescriptor(
            description="checkpoint folder (config.json + model.safetensors) or a CLIP/SigLIP "
                        "checkpoint; '' or default: the shipped tabletop model",
            additional_constraints=unconfigured)),
        'library_path': ('', ParameterDescriptor(
            description="action library YAML; '' = <model_path>/actions.yaml",
            additional_constraints=unconfigured)),
        'device': ('auto', ParameterDescriptor(
            description='auto | cpu | cuda | cuda:N (auto = cuda when available)',
            additional_constraints=unconfigured)),
        'precision': ('fp32', ParameterDescriptor(
            description='fp32 | bf16 | fp16: autocast precision of inference on CUDA; the CPU '
                        'always runs fp32', additional_constraints=unconfigured)),
        'compile': ('none', ParameterDescriptor(
            description='none | torch_compile | cuda_graph: fast path for the fixed-shape image '
                        'encoder, prepared at configure by a warm-up frame; falls back to '
                        'eager with a logged reason where unsupported (cuda_graph needs CUDA)',
            additional_constraints=unconfigured)),
        'torch_threads': (0, int_range(
            'CPU threads torch may use (process-wide), and ONNX Runtime per session with '
            'backend onnxruntime; 0 = their default (one per core). On a computer shared with '
            'drivers and planners, 1 often gives the steadiest latency',
            0, 1024, additional_constraints=unconfigured)),
        'backend': ('torch', ParameterDescriptor(
            description='torch | onnxruntime: who runs the query path (image encoder + '
                        'fusion per frame, text encoder per instruction). onnxruntime runs '
                        'the export of vla-export-onnx MODEL_PATH; a missing or stale export '
                        'fails configure naming the command', additional_constraints=unconfigured)),
        'onnx_path': ('', ParameterDescriptor(
            description="the vla-export-onnx folder; '' = <model_path>/onnx",
            additional_constraints=unconfigured)),
        'onnx_providers': ('auto', ParameterDescriptor(
            description='auto | comma-separated cpu, cuda, tensorrt (ONNX Runtime execution '
                        'providers in order; auto = TensorRT, CUDA on a CUDA device when '
                        'installed, else CPU). Missing ones fall back to CPU with the reason '
                        'in the log and /diagnostics', additional_constraints=unconfigured)),
        'onnx_text': ('fp32', ParameterDescriptor(
            description='fp32 | int8: the text encoder graph (int8 = dynamic quantisation, '
                        'exported with vla-export-onnx --int8)',
            additional_constraints=unconfigured)),
        'image_topics': (['image'], ParameterDescriptor(
            description='camera topics (relative names, remappable); one decision fuses the '
                        'newest frame of each; the first one triggers decisions and its '
                        'stamp goes on the outputs', additional_constraints=inactive)),
        'missing_camera': ('abstain', ParameterDescriptor(
            description='abstain | decide: what a decision does when a camera other than the '
                        'first has no frame yet or none newer than camera_timeout_s. abstain '
                        'says which camera in the reason; decide fuses the cameras it has '
                        '(a model trained with camera dropout knows how) and names the missing '
                        'ones in ~/scores and /diagnostics. The first camera triggers decisions: '
                        'while it is silent there are none. decide needs backend torch')),
        'camera_timeout_s': (1.0, float_range(
            'a camera whose newest frame arrived longer ago than this counts as missing '
            '(node receive time, monotonic); 0 = only a camera that never sent a frame is '
            'missing, an old frame is reused', 0.0, 3600.0)),
        'image_transport': ('raw', ParameterDescriptor(
            description="raw (sensor_msgs/Image on <topic>) or compressed "
                        "(sensor_msgs/CompressedImage on <topic>/compressed)",
            additional_constraints=inactive)),
        'mode': ('continuous', ParameterDescriptor(
            description='continuous: decide on every new frame (rate-limited); on_instruction: '
                        'one decision per received instruction, on the first frame stamped '
                        'after it arrived')),
        'max_rate_hz': (10.0, float_range('most decisions per second; 0 = every new frame',
                                     0.0, 1000.0)),
        'max_image_age_s': (1.0, float_range('skip frames whose stamp is older than this against '
                                         'the node clock (sim time aware); 0 = no check',
                                         0.0, 3600.0)),
        'min_confidence': (0.0, float_range('abstain when the top softmax probability is below '
                                       'this', 0.0, 1.0)),
        'top_k': (5, int_range('ranked candidates reported in scores and the debug image', 1,
                          10000)),
        'candidate_mode': ('library', ParameterDescriptor(
            description='library | sampled: score the library\'s fixed actions, or choose a '
                        'continuous action of the library\'s space (its YAML \'space:\') by '
                        'derivative-free optimisation: sample_count uniform samples, '
                        'sample_iterations rounds of softmax resampling + shrinking Gaussian '
                        'noise; sampled without a space fails configure (and is refused as a '
                        'change). Candidates from the candidates topic win over both')),
        'sample_count': (0, int_range(
            f'sampled mode: candidates per round; 0 = auto ({AUTO_SAMPLES["cpu"]} on the CPU, '
            f'{AUTO_SAMPLES["cuda"]} on CUDA); at most {MAX_SAMPLES} (the memory bound)',
            0, MAX_SAMPLES)),
        'sample_iterations': (3, int_range('sampled mode: resampling rounds after the uniform '
                                      'samples (IBC: 3); 0 = best of the uniform samples',
                                      0, 100)),
        'sample_noise': (0.33, float_range('sampled mode: initial noise std as a fraction of each '
                                      'dimension\'s range, halved every round', 0.0, 1.0)),
        'sample_seed': (0, int_range('sampled mode: seed of every decision\'s generator (the same '
                                'frames and instruction give the same action)', 0,
                                2**31 - 1)),
        'gradient_steps': (0, int_range('sampled mode: gradient-ascent steps on the best '
                                        'candidates after the last round (0 = none)', 0,
                                        1000)),
        'debug_heatmap_size': (32, int_range(
            'sampled mode: ~/debug_image shows the score over a grid of this many cells per '
            'side for the chosen primitive (built only while someone subscribes)', 2, 256)),
        'publish_cmd_vel': (False, ParameterDescriptor(
            description='also publish cmd_vel (geometry_msgs/Twist) for actions whose library '
                        'entry has a twist (sampled mode: from the space\'s twist mapping)')),
        'max_image_pixels': (40_000_000, int_range(
            'drop (and count as image_oversized) frames with more pixels than this; the '
            'default admits 8K UHD (33.2 MP); 0 = no limit', 0, 2_000_000_000)),
        'max_instruction_chars': (1000, int_range(
            'longer instructions are cut to this many characters (counted as '
            'instruction_truncated); the tokenizer keeps far fewer tokens anyway', 1,
            10_000_000)),
        'autostart': (True, ParameterDescriptor(
            description='configure and activate right after start-up', read_only=True)),
        'exit_on_configure_failure': (True, ParameterDescriptor(
            description='run as a program (vla-action-selector, python -m, ros2 run) with '
                        'autostart: a failed configure ends the process with the reason, exit '
                        'status 1; false: stay unconfigured and wait for ros2 lifecycle (what '
                        'action_selector.launch.py sets). Nodes created in-process never exit',
            read_only=True)),
        'diagnostics_period_s': (1.0, float_range('seconds between /diagnostics messages', 0.05,
                                             3600.0, additional_constraints=inactive)),
    }


def declare_all(node) -> dict[str, Any]:
    """Declare every parameter on ``node``; return name -> current value."""
    values = {}
    for name, (default, descriptor) in parameter_table().items():
        values[name] = node.declare_parameter(name, default, descriptor).value
    return values


def check_value(name: str, value: Any) -> str:
    """Why ``value`` is not acceptable for parameter ``name`` ('' when it is)."""
    if name in ('max_rate_hz', 'max_image_age_s', 'camera_timeout_s') and value < 0:
        return f'{name} must be >= 0, got {value}'
    if name == 'diagnostics_period_s' and value <= 0:
        return f'{name} must be > 0, got {value}'
    if name == 'min_confidence' and not 0.0 <= value <= 1.0:
        return f'min_confidence must be in [0, 1], got {value}'
    if name == 'max_image_pixels' and value < 0:
        return f'max_image_pixels must be >= 0, got {value}'
    if name == 'max_instruction_chars' and value < 1:
        return f'max_instruction_chars must be >= 1, got {value}'
    if name == 'top_k' and value < 1:
        return f'top_k must be >= 1, got {value}'
    if name == 'mode' and value not in MODES:
        return f'unknown mode {value!r}; expected one of {list(MODES)}'
    if name == 'precision' and value not in PRECISIONS:
        return f'unknown precision {value!r}; expected one of {list(PRECISIONS)}'
    if name == 'compile' and value not in COMPILE_MODES:
        return f'unknown compile mode {value!r}; expected one of {list(COMPILE_MODES)}'
    if name == 'backend' and value not in BACKENDS:
        return f'unknown backend {value!r}; expected one of {list(BACKENDS)}'
    if name == 'missing_camera' and value not in MISSING_CAMERA:
        return f'unknown missing_camera {value!r}; expected one of {list(MISSING_CAMERA)}'
    if name == 'candidate_mode' and value not in CANDIDATE_MODES:
        return f'unknown candidate_mode {value!r}; expected one of {list(CANDIDATE_MODES)}'
    if name == 'sample_count' and not 0 <= value <= MAX_SAMPLES:
        return (f'sample_count must be in [0, {MAX_SAMPLES}] (0 = auto; the upper bound keeps '
                f'one round\'s candidates in memory), got {value}')
    if name == 'sample_iterations' and not 0 <= value <= 100:
        return f'sample_iterations must be in [0, 100], got {value}'
    if name == 'sample_noise' and not 0.0 <= value <= 1.0:
        return f'sample_noise must be in [0, 1] (fraction of the range), got {value}'
    if name in ('sample_seed', 'gradient_steps') and value < 0:
        return f'{name} must be >= 0, got {value}'
    if name == 'debug_heatmap_size' and not 2 <= value <= 256:
        return f'debug_heatmap_size must be in [2, 256], got {value}'
    if name == 'onnx_text' and value not in ONNX_TEXT:
        return f'unknown onnx_text {value!r}; expected one of {list(ONNX_TEXT)}'
    if name == 'onnx_providers' and not _PROVIDER_RE.match(value):
        return f"onnx_providers must be auto or a comma-separated list, got {value!r}"
    if name == 'torch_threads' and value < 0:
        return f'torch_threads must be >= 0, got {value}'
    if name == 'image_transport' and value not in TRANSPORTS:
        return f'unknown image_transport {value!r}; expected one of {list(TRANSPORTS)}'
    if name == 'device' and not _DEVICE_RE.match(value):
        return f"device must be auto, cpu, cuda or cuda:N, got {value!r}"
    if name == 'image_topics':
        if not value or any(not t for t in value):
            return 'image_topics must be a non-empty list of non-empty topic names'
        if len(set(value)) != len(value):
            return f'image_topics has duplicates: {list(value)}'
    return ''


def check_change(name: str, value: Any, state: str) -> str:
    """Like :func:`check_value`, also refusing changes the lifecycle state cannot take now."""
    if name in LOAD_PARAMS and state not in ('unconfigured', 'finalized'):
        return (f'{name} can only change while unconfigured (now {state}): deactivate and '
                'cleanup, set it, then configure')
    if name in TOPIC_PARAMS + ('diagnostics_period_s',) and state == 'active':
        return f'{name} can only change while not active: deactivate, set it, then activate'
    return check_value(name, value)


def change_refusal(name: str, value: Any, state: str, backend: str | None, library,
                   cameras: int) -> str:
    """Why a live change is refused ('' when it is taken): :func:`check_change`, then what
    the loaded selector allows (``backend``, ``library``: None before configure)."""
    reason = check_change(name, value, state)
    if not reason and name == 'missing_camera' and backend is not None:
        reason = missing_camera_refusal(value, backend, cameras)
    if not reason and name == 'candidate_mode' and library is not None:
        reason = sampled_refusal(value, library)
    return reason

