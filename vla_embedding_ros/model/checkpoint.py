"""Save and load a VLAModel directory: ``config.json`` + ``model.safetensors`` (+ encoder dirs).

Frozen pretrained encoders are referenced by name or path in the config, not copied: a
checkpoint of the default model is a few MB, not the size of MiniLM. An encoder marked
trainable has changed, so it is saved with its own ``save_pretrained`` (plus tokenizer or
preprocessor config) into ``vision_encoder/`` or ``text_encoder/`` and the config points at
that *relative* name, so the directory can be moved or copied elsewhere.

Every file is written to a temporary name in the same directory and renamed into place
(``config.json`` last), so a crash never leaves a half-written file under the final name.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..files import make_shareable, publish_directory, read_text_bounded
from .config import VLAConfig, dotted_leaves

CONFIG_NAME = 'config.json'
WEIGHTS_NAME = 'model.safetensors'
ENCODER_DIRS = {'vision': 'vision_encoder', 'text': 'text_encoder'}
FORMAT = 'vla_embedding_ros'
FORMAT_VERSION = 1
# Submodules holding pretrained HF weights: never in model.safetensors (see module docstring).
_HF_PREFIXES = ('vision.model.', 'text.model.')


def saved_state(model) -> dict[str, torch.Tensor]:
    """The tensors that go into ``model.safetensors`` (everything but the HF towers)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(_HF_PREFIXES)}


def save(model, directory) -> Path:
    """Write ``model`` (a VLAModel) to ``directory``, creating it if needed."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    if model.vision.pretrained and model.vision.trainable:
        extra = Path(model.vision.source_path) / 'preprocessor_config.json'
        _save_encoder(model.vision.model, directory / ENCODER_DIRS['vision'],
                      extra_files=[extra] if extra.is_file() else [])
        config['vision']['name_or_path'] = ENCODER_DIRS['vision']
    if model.text.trainable:
        _save_encoder(model.text.model, directory / ENCODER_DIRS['text'],
                      tokenizer=model.text.tokenizer)
        config['text']['name_or_path'] = ENCODER_DIRS['text']
    tensors = {k: v.detach().to('cpu').contiguous() for k, v in saved_state(model).items()}
    _atomic_write(directory / WEIGHTS_NAME,
                  lambda tmp: save_file(tensors, tmp, metadata={'format': 'pt'}))
    document = {'format': FORMAT, 'format_version': FORMAT_VERSION, **config}
    _atomic_write(directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(
        json.dumps(document, indent=2) + '\n', encoding='utf-8'))
    return directory


def load_config(directory) -> VLAConfig:
    """Read ``config.json`` with encoder paths resolved against ``directory``.

    Raises:
        FileNotFoundError: the directory or its config.json is missing.
        ValueError: unreadable JSON, an unknown option or a bad value (naming file and field).
    """
    directory = Path(directory)
    file = directory / CONFIG_NAME
    if not directory.is_dir():
        raise FileNotFoundError(f'model directory {directory} does not exist')
    if not file.is_file():
        raise FileNotFoundError(f'{file} is missing: not a vla_embedding_ros model directory')
    try:
        data = json.loads(read_text_bounded(file))
    except (OSError, ValueError) as err:
        raise ValueError(f'{file}: cannot read JSON ({err})') from err
    if not isinstance(data, dict):
        raise ValueError(f'{file}: expected a JSON object')
    if data.get('model_type') in ('clip', 'siglip'):
        kind = data['model_type']
        raise ValueError(f'{directory} is a {kind} checkpoint (Hugging Face), not a VLAModel '
                         'folder: the selector, the node and vla-eval load it as it is, and '
                         f'vla-train fine-tunes it with model.init: {kind} and '
                         f'model.name_or_path: {directory}')
    version = data.pop('format_version', FORMAT_VERSION)
    data.pop('format', None)
    if version != FORMAT_VERSION:
        raise ValueError(f'{file}: format_version {version} is not supported '
                         f'(this package reads {FORMAT_VERSION})')
    try:
        config = VLAConfig.from_dict(data)
    except ValueError as err:
        raise ValueError(f'{file}: {err}') from err
    for part in ('vision', 'text'):
        sub = getattr(config, part)
        name = sub.name_or_path
        if not name or os.path.isabs(name):
            continue
        local = directory / name
        if local.is_dir():
            sub.name_or_path = str(local)
        elif sub.trainable and name == ENCODER_DIRS[part]:
            raise FileNotFoundError(f'{file}: {part}.name_or_path points at {name}/ but '
                                    f'{local} is missing (a trainable encoder is saved there)')
    return config


def check_weights_header(skeleton, directory) -> None:
    """Compare ``model.safetensors``' header with the model its ``config.json`` describes,
    reading no tensor data: ``skeleton`` is that model built on the meta device (no memory).
    A config that disagrees with its weights (``embed_dim: 60000`` next to 256-wide tensors)
    is reported by field name before a real model is built, instead of after gigabytes.

    Raises:
        FileNotFoundError: the weights file is missing.
        ValueError: unreadable header, missing / unexpected tensor, or a shape mismatch naming
            the config field that disagrees.
    """
    from safetensors import safe_open

    file = Path(directory) / WEIGHTS_NAME
    if not file.is_file():
        raise FileNotFoundError(f'{file} is missing')
    try:
        with safe_open(str(file), framework='pt') as weights:
            shapes = {k: tuple(weights.get_slice(k).get_shape()) for k in weights.keys()}
    except Exception as err:  # safetensors raises its own error type for corrupt headers
        raise ValueError(f'{file}: cannot read safetensors ({err})') from err
    _compare(file, shapes, saved_state(skeleton), skeleton.config)


def load_weights(model, directory) -> None:
    """Load ``model.safetensors`` into ``model``, checking every key and shape first.

    Raises:
        FileNotFoundError: the weights file is missing.
        ValueError: unreadable file, missing / unexpected tensor, or shape mismatch (each naming
            the file and the tensor key).
    """
    from safetensors.torch import load_file

    file = Path(directory) / WEIGHTS_NAME
    if not file.is_file():
        raise FileNotFoundError(f'{file} is missing')
    try:
        state = load_file(str(file), device='cpu')
    except Exception as err:  # safetensors raises its own error type for corrupt files
        raise ValueError(f'{file}: cannot read safetensors ({err})') from err
    _compare(file, {k: tuple(v.shape) for k, v in state.items()}, saved_state(model),
             model.config)
    model.load_state_dict(state, strict=False)


def _compare(file: Path, shapes: dict, expected: dict, config) -> None:
    """Raise ValueError on the first key or shape of ``shapes`` (the file's) that disagrees
    with ``expected`` (the tensors of the model built from ``config``)."""
    missing = sorted(set(expected) - set(shapes))
    if missing:
        raise ValueError(f'{file}: missing tensor {missing[0]!r} ({len(missing)} missing); '
                         f'does {CONFIG_NAME} match these weights?')
    unexpected = sorted(set(shapes) - set(expected))
    if unexpected:
        raise ValueError(f'{file}: unexpected tensor {unexpected[0]!r} '
                         f'({len(unexpected)} unexpected); does {CONFIG_NAME} match?')
    for key, shape in shapes.items():
        implied = tuple(expected[key].shape)
        if shape != implied:
            raise ValueError(f'{file}: tensor {key!r} has shape {list(shape)}, the model built '
                             f'from {CONFIG_NAME} expects {list(implied)}'
                             f'{_culprit(shape, implied, config)}')


def _culprit(found: tuple, implied: tuple, config) -> str:
    """'; config.json says embed_dim = 60000 where the weights have 256' when one config
    field holds the size that disagrees ('' when none or several could)."""
    if len(found) != len(implied):
        return ''
    fields = {name: value for name, value in dotted_leaves(config.to_dict(), True).items()
              if isinstance(value, int) and not isinstance(value, bool)}
    for have, want in zip(found, implied, strict=True):
        if have != want:
            names = [name for name, value in fields.items() if value == want]
            if len(names) == 1:
                return f'; {CONFIG_NAME} says {names[0]} = {want} where the weights have {have}'
            if names:
                return (f'; one of {", ".join(names)} (each {want}) in {CONFIG_NAME} disagrees '
                        f'with the weights ({have})')
    return ''


def _save_encoder(module, target: Path, tokenizer=None, extra_files=()) -> None:
    if not hasattr(module, 'save_pretrained'):
        raise TypeError(f'{type(module).__name__} has no save_pretrained; a trainable encoder '
                        'must be a Hugging Face PreTrainedModel')
    staging = Path(tempfile.mkdtemp(prefix=f'.{target.name}-', dir=target.parent))
    try:
        module.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        for extra in extra_files:
            shutil.copyfile(extra, staging / Path(extra).name)
        # The old folder is moved aside, not deleted first: a crash never leaves none.
        publish_directory(staging, target, overwrite=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}-', suffix='.tmp', dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        make_shareable(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
