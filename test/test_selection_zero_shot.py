"""Zero-shot CLIP/SigLIP scoring on tiny checkpoints built here and loaded by path."""
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    AutoModel,
    AutoTokenizer,
    CLIPConfig,
    CLIPModel,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipModel,
)
from transformers.utils import logging as hf_logging

from support.models import make_tiny_clip
from vla_embedding_ros.selection import (
    Action,
    ActionLibrary,
    ActionSelector,
    ZeroShotCLIP,
    is_zero_shot_checkpoint,
)

hf_logging.disable_progress_bar()

DESCRIPTIONS = ['pick up the red cube', 'push the blue ball left', 'push the green ring right',
                'move forward', 'stop and wait']
NAMES = ['pick_red', 'push_blue_left', 'push_green_right', 'forward', 'wait']
MAX_LEN = 16
SIZE = 32


def _tokenizer():
    """A word-level fast tokenizer (BOS ... EOS) over the test vocabulary."""
    vocab = {'[PAD]': 0, '[UNK]': 1, '[BOS]': 2, '[EOS]': 3}
    for word in sorted({w for d in DESCRIPTIONS for w in d.split()}):
        vocab[word] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token='[UNK]'))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single='[BOS] $A [EOS]', special_tokens=[('[BOS]', 2), ('[EOS]', 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token='[BOS]', eos_token='[EOS]',
                                   pad_token='[PAD]', unk_token='[UNK]'), len(vocab)


def _towers(vocab_size):
    text = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=MAX_LEN)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, image_size=SIZE, patch_size=8)
    return text, vision


def _save_clip(path, blind=False):
    tokenizer, vocab_size = _tokenizer()
    text, vision = _towers(vocab_size)
    # CLIP pools the hidden state at the first EOS token; the config must know its id.
    text.update(bos_token_id=2, eos_token_id=3, pad_token_id=0)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=64))
    if blind:
        # An image tower whose projection carries nothing: every image is neutral.
        with torch.no_grad():
            model.visual_projection.weight.zero_()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _save_siglip(path):
    tokenizer, vocab_size = _tokenizer()
    text, vision = _towers(vocab_size)
    torch.manual_seed(0)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
    with torch.no_grad():
        model.logit_bias.fill_(-3.0)  # non-zero, so a forgotten bias would show
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope='module')
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp('zero_shot')
    return {'clip': _save_clip(root / 'clip'), 'blind': _save_clip(root / 'blind', blind=True),
            'siglip': _save_siglip(root / 'siglip')}


@pytest.fixture(scope='module')
def library():
    actions = [Action(n, d, np.array([i, 0.5], np.float32))
               for i, (n, d) in enumerate(zip(NAMES, DESCRIPTIONS, strict=True))]
    return ActionLibrary(actions, ['id', 'speed'])


def _frame(seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)


def _pixels(frame, mean, std):
    """Normalised pixels computed independently of the package (same size: no resize)."""
    x = (frame.astype(np.float64) / 255.0 - np.array(mean)) / np.array(std)
    return torch.from_numpy(x.transpose(2, 0, 1)[None].astype(np.float32))


def test_detects_raw_checkpoints(ckpts, tmp_path):
    assert is_zero_shot_checkpoint(ckpts['clip']) and is_zero_shot_checkpoint(ckpts['siglip'])
    (tmp_path / 'config.json').write_text(json.dumps({'embed_dim': 256, 'vision': {}}))
    assert not is_zero_shot_checkpoint(tmp_path)
    assert not is_zero_shot_checkpoint(tmp_path / 'missing')


def test_normalisation_defaults_and_preprocessor_config(ckpts, tmp_path):
    clip = ZeroShotCLIP.from_pretrained(ckpts['clip'], device='cpu')
    assert clip.image_size == SIZE and clip.device.type == 'cpu'
    assert clip.image_mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    siglip = ZeroShotCLIP.from_pretrained(ckpts['siglip'], device='cpu')
    assert siglip.image_mean == (0.5, 0.5, 0.5) and siglip.image_std == (0.5, 0.5, 0.5)
    custom = _save_clip(tmp_path / 'custom')
    (custom / 'preprocessor_config.json').write_text(
        json.dumps({'image_mean': [0.1, 0.2, 0.3], 'image_std': [0.4, 0.5, 0.6]}))
    loaded = ZeroShotCLIP.from_pretrained(custom, device='cpu')
    assert loaded.image_mean == (0.1, 0.2, 0.3) and loaded.image_std == (0.4, 0.5, 0.6)


def test_instruction_equal_to_a_description_wins_with_a_neutral_image(ckpts, library):
    selector = ActionSelector(ZeroShotCLIP.from_pretrained(ckpts['blind'], device='cpu'),
                              library, top_k=3)
    for k, description in enumerate(DESCRIPTIONS):
        result = selector.select(_frame(k), description)
        assert result.index == k and result.name == NAMES[k], (description, result.top_names)
        # The winner's logit is the full logit scale: query == its description's embedding.
        assert result.top_scores[0] == pytest.approx(float(selector.model.scale()), rel=1e-4)


def test_scores_equal_direct_computation_from_hf_features(ckpts, library):
    selector = ActionSelector(ZeroShotCLIP.from_pretrained(ckpts['clip'], device='cpu'),
                              library, top_k=5)
    frames = [_frame(1), _frame(2)]
    instruction = 'push the blue ball left'
    result = selector.select(frames, instruction)

    # Independent computation with the checkpoint's own classes and methods.
    model = CLIPModel.from_pretrained(ckpts['clip']).eval()
    tok = AutoTokenizer.from_pretrained(ckpts['clip'])
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    px = torch.cat([_pixels(f, mean, std) for f in frames])
    with torch.no_grad():
        image = model.get_image_features(pixel_values=px)
        image = image if isinstance(image, torch.Tensor) else image.pooler_output
        texts = tok([instruction] + DESCRIPTIONS, padding=True, return_tensors='pt')
        text = model.get_text_features(**texts)
        text = text if isinstance(text, torch.Tensor) else text.pooler_output
        image = F.normalize(F.normalize(image, dim=-1).mean(0, keepdim=True), dim=-1)
        text = F.normalize(text, dim=-1)
        query = F.normalize(image + text[:1], dim=-1)
        logits = (model.logit_scale.exp() * query @ text[1:].T)[0]
    order = torch.argsort(logits, descending=True)
    assert result.top_indices == order.tolist()
    np.testing.assert_allclose(result.top_scores, logits[order].numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(result.top_probs, torch.softmax(logits, 0)[order].numpy(),
                               rtol=1e-4, atol=1e-5)
    assert sum(result.top_probs) == pytest.approx(1.0, abs=1e-5)
    # The image matters: one camera gives a different query than two.
    single = selector.select(frames[:1], instruction)
    assert not np.allclose(single.top_scores, result.top_scores)


def test_siglip_scores_match_the_checkpoint_forward(ckpts):
    scorer = ZeroShotCLIP.from_pretrained(ckpts['siglip'], device='cpu')
    model = AutoModel.from_pretrained(ckpts['siglip']).eval()
    assert isinstance(model, SiglipModel)
    tok = AutoTokenizer.from_pretrained(ckpts['siglip'])
    px = torch.cat([_pixels(_frame(s), (0.5,) * 3, (0.5,) * 3) for s in (3, 4)])
    with torch.no_grad():
        # SigLIP is run on text padded to max_length, as it was trained.
        ids = tok(DESCRIPTIONS, padding='max_length', max_length=MAX_LEN, return_tensors='pt')
        expected = model(input_ids=ids['input_ids'], pixel_values=px).logits_per_image
        got = scorer.score(scorer.encode_images(px), scorer.encode_text(DESCRIPTIONS))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_siglip_selector_from_pretrained_with_library_file(ckpts, library, tmp_path):
    lib_path = tmp_path / 'lib.yaml'
    library.to_yaml(lib_path)
    selector = ActionSelector.from_pretrained(ckpts['siglip'], lib_path, device='cpu', top_k=2)
    assert isinstance(selector.model, ZeroShotCLIP) and selector.model.model_type == 'siglip'
    result = selector.select(_frame(5), 'move forward')
    assert len(result.top_names) == 2 and result.top_names[0] == result.name
    assert 0.0 < result.confidence <= 1.0


def test_candidate_vectors_are_rejected_zero_shot(ckpts, library):
    selector = ActionSelector(ZeroShotCLIP.from_pretrained(ckpts['clip'], device='cpu'), library)
    with pytest.raises(ValueError, match='cannot score N×D candidate vectors'):
        selector.select(_frame(), 'move forward', candidates=np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match='candidate vectors are not supported'):
        selector.model.encode_actions(torch.zeros(3, 2))


def test_library_defaults_to_actions_yaml_in_the_checkpoint(ckpts, library, tmp_path):
    ckpt = tmp_path / 'ckpt'
    shutil.copytree(ckpts['clip'], ckpt)
    with pytest.raises(FileNotFoundError, match='actions.yaml'):
        ActionSelector.from_pretrained(ckpt, device='cpu')
    library.to_yaml(ckpt / 'actions.yaml')
    selector = ActionSelector.from_pretrained(ckpt, device='cpu')
    assert selector.library.names == NAMES


def test_rejects_other_model_types():
    from transformers import BertConfig, BertModel
    model = BertModel(BertConfig(vocab_size=8, hidden_size=8, num_hidden_layers=1,
                                 num_attention_heads=1, intermediate_size=8))
    with pytest.raises(ValueError, match="got model_type 'bert'"):
        ZeroShotCLIP(model, None)


def test_clip_with_a_real_clip_bpe_tokenizer(tmp_path, library):
    # The shared fixture's CLIPTokenizerFast (trained BPE, <|endoftext|> as EOS and pad).
    path = make_tiny_clip(tmp_path / 'clip_bpe')
    scorer = ZeroShotCLIP.from_pretrained(path, device='cpu')
    model = CLIPModel.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    px = _pixels(_frame(7), scorer.image_mean, scorer.image_std)
    with torch.no_grad():
        ids = tok(DESCRIPTIONS, padding=True, return_tensors='pt')
        expected = model(pixel_values=px, **ids).logits_per_image
        got = scorer.score(scorer.encode_images(px), scorer.encode_text(DESCRIPTIONS))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    result = ActionSelector(scorer, library, top_k=2).select(_frame(7), 'stop and wait')
    assert result.name in NAMES and len(result.top_names) == 2
