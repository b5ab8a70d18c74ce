"""How far the frozen text encoder alone understands a synonym (no training involved).

A word that training never says is understood only as far as the text encoder already puts
it near the word it means. This measures that prior with the encoder's pooled embedding,
for the training synonyms and for the reworded split's held-out ones:

- word: is a synonym's nearest canonical name (of the 6 colours or 4 shapes) the right one?
- sentence: is "pick up the <synonym> <shape>" (or "<colour> <synonym>") nearest to the
  right one of the 24 canonical sentences "pick up the <colour> <shape>"?
"""
from __future__ import annotations

import torch

from ..data.tabletop import COLORS, SHAPES
from ..data.tabletop.language import (
    COLOR_WORDS,
    REWORDED_COLOR_WORDS,
    REWORDED_SHAPE_WORDS,
    SHAPE_WORDS,
)

FRAME = 'pick up the {c} {s}'


@torch.inference_mode()
def _embed(encode_text, texts: list[str]) -> torch.Tensor:
    pooled = encode_text(texts).pooled.float()
    return torch.nn.functional.normalize(pooled, dim=-1)


def _nearest_is_right(encode_text, queries: list[str], truth: list[int],
                      references: list[str]) -> float:
    sims = _embed(encode_text, queries) @ _embed(encode_text, references).T
    return float((sims.argmax(dim=1).cpu() == torch.tensor(truth)).float().mean())


def _synonyms(table: dict) -> list[tuple[str, str]]:
    """(word, canonical name) for every synonym of a table, the canonical names left out."""
    return [(w, name) for name, words in table.items() for w in words if w != name]


def text_prior(encode_text) -> dict[str, dict[str, float]]:
    """Nearest-neighbour accuracy of the encoder's prior, per word set and test.

    ``encode_text``: a callable list[str] -> TextFeatures (e.g. ``VLAModel.encode_text``).
    """
    pairs = [(c, s) for c in COLORS for s in SHAPES]
    canonical = [FRAME.format(c=c, s=s) for c, s in pairs]
    report = {}
    for label, colors, shapes in (('training synonyms', COLOR_WORDS, SHAPE_WORDS),
                                  ('held-out (reworded) synonyms', REWORDED_COLOR_WORDS,
                                   REWORDED_SHAPE_WORDS)):
        color_syn = _synonyms(colors)
        shape_syn = _synonyms(shapes)
        row = {
            'colour word': _nearest_is_right(encode_text, [w for w, _ in color_syn],
                                             [COLORS.index(c) for _, c in color_syn],
                                             list(COLORS)),
            'shape word': _nearest_is_right(encode_text, [w for w, _ in shape_syn],
                                            [SHAPES.index(s) for _, s in shape_syn],
                                            list(SHAPES)),
        }
        # Every synonym with every name of the other attribute, e.g. "pick up the navy ring".
        colour_sentences = [(FRAME.format(c=word, s=s), pairs.index((c, s)))
                            for word, c in color_syn for s in SHAPES]
        shape_sentences = [(FRAME.format(c=c, s=word), pairs.index((c, s)))
                           for word, s in shape_syn for c in COLORS]
        for name, sentences in (('colour sentence', colour_sentences),
                                ('shape sentence', shape_sentences)):
            queries, truth = zip(*sentences, strict=True)
            row[name] = _nearest_is_right(encode_text, list(queries), list(truth), canonical)
        row['words'] = len(color_syn) + len(shape_syn)
        report[label] = row
    return report


def format_prior(report: dict) -> str:
    tests = ('colour word', 'shape word', 'colour sentence', 'shape sentence')
    lines = ['\n== the frozen text encoder alone: nearest canonical name is right ==',
             f'{"":32s}' + ''.join(f'{t:>17s}' for t in tests),
             '-' * (32 + 17 * len(tests))]
    for label, row in report.items():
        lines.append(f'{label:32s}' + ''.join(f'{100 * row[t]:16.1f}%' for t in tests))
    return '\n'.join(lines)
