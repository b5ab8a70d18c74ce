"""Each loss against the formula written out with Python loops in float64."""
import math

import pytest
import torch
import torch.nn.functional as F

from vla_embedding_ros.model.losses import (
    hardest_negatives,
    library_contrastive_loss,
    nt_xent,
    symmetric_infonce,
    triplet_loss,
)

SCALE = 3.0  # exp(log 3): small enough that every term matters


def unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def dot(u, v):
    return sum(float(a) * float(b) for a, b in zip(u, v, strict=True))


def log_sum_exp(values):
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


def ref_infonce_terms(q, a, labels, scale):
    """Per-sample 0.5 * (query row i term + action column i term), positives = same label."""
    n = len(q)
    logits = [[scale * dot(q[i], a[j]) for j in range(n)] for i in range(n)]
    same = [[(i == j) if labels is None else labels[i] == labels[j] for j in range(n)]
            for i in range(n)]
    terms = []
    for i in range(n):
        row_lse = log_sum_exp(logits[i])
        pos = [j for j in range(n) if same[i][j]]
        row = -sum(logits[i][j] - row_lse for j in pos) / len(pos)
        col_values = [logits[k][i] for k in range(n)]
        col_lse = log_sum_exp(col_values)
        pos = [k for k in range(n) if same[k][i]]
        col = -sum(logits[k][i] - col_lse for k in pos) / len(pos)
        terms.append(0.5 * (row + col))
    return terms


def test_plain_infonce_matches_formula():
    q, a = unit(6, 8, seed=1), unit(6, 8, seed=2)
    got = symmetric_infonce(q, a, None, math.log(SCALE))
    want = sum(ref_infonce_terms(q, a, None, SCALE)) / 6
    assert got.dtype == torch.float64
    assert float(got) == pytest.approx(want, rel=1e-10)


def test_multi_positive_infonce_matches_formula():
    q, a = unit(7, 8, seed=3), unit(7, 8, seed=4)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3])
    got = symmetric_infonce(q, a, labels, math.log(SCALE))
    want = sum(ref_infonce_terms(q, a, labels.tolist(), SCALE)) / 7
    assert float(got) == pytest.approx(want, rel=1e-10)


def test_multi_positive_differs_from_plain_exactly_where_actions_repeat():
    q, a = unit(6, 8, seed=5), unit(6, 8, seed=6)
    labels = torch.tensor([4, 7, 4, 1, 9, 7])   # rows 0, 2 share action 4; rows 1, 5 share 7
    plain = symmetric_infonce(q, a, None, math.log(SCALE), reduction='none')
    multi = symmetric_infonce(q, a, labels, math.log(SCALE), reduction='none')
    repeated = torch.tensor([True, True, True, False, False, True])
    assert torch.allclose(plain[~repeated], multi[~repeated], rtol=0, atol=1e-12)
    assert ((plain[repeated] - multi[repeated]).abs() > 1e-6).all()
    # Unique labels are the plain case, row by row.
    distinct = symmetric_infonce(q, a, torch.arange(6), math.log(SCALE), reduction='none')
    assert torch.allclose(plain, distinct, rtol=0, atol=1e-12)


def ref_library_loss(q, lib, targets, scale, multi):
    b, n = len(q), len(lib)
    logits = [[scale * dot(q[i], lib[j]) for j in range(n)] for i in range(b)]
    to_lib = sum(-(logits[i][targets[i]] - log_sum_exp(logits[i])) for i in range(b)) / b
    if multi:
        present = sorted(set(targets))
        terms = []
        for k in present:
            column = [logits[i][k] for i in range(b)]
            lse = log_sum_exp(column)
            pos = [i for i in range(b) if targets[i] == k]
            terms.append(-sum(logits[i][k] - lse for i in pos) / len(pos))
        to_query = sum(terms) / len(terms)
    else:
        to_query = sum(-(logits[i][targets[i]] - log_sum_exp([logits[m][targets[i]]
                                                              for m in range(b)]))
                       for i in range(b)) / b
    return 0.5 * (to_lib + to_query)


@pytest.mark.parametrize('multi', [True, False])
def test_library_loss_matches_formula(multi):
    q, lib = unit(6, 8, seed=10), unit(9, 8, seed=11)
    targets = [2, 5, 2, 0, 5, 2]
    got = library_contrastive_loss(q, lib, torch.tensor(targets), math.log(SCALE),
                                   multi_positive=multi)
    want = ref_library_loss(q, lib, targets, SCALE, multi)
    assert float(got) == pytest.approx(want, rel=1e-10)


def test_library_loss_forms_agree_when_every_action_is_unique():
    q, lib = unit(4, 8, seed=12), unit(9, 8, seed=13)
    targets = torch.tensor([3, 1, 8, 0])
    multi = library_contrastive_loss(q, lib, targets, math.log(SCALE), multi_positive=True)
    plain = library_contrastive_loss(q, lib, targets, math.log(SCALE), multi_positive=False)
    assert float(multi) == pytest.approx(float(plain), rel=1e-12)


def test_logit_scale_is_clamped_and_learnable():
    q, lib = unit(4, 8, seed=14), unit(5, 8, seed=15)
    targets = torch.tensor([0, 1, 2, 2])
    at_max = library_contrastive_loss(q, lib, targets, math.log(100.0))
    beyond = library_contrastive_loss(q, lib, targets, math.log(1000.0))
    assert float(at_max) == pytest.approx(float(beyond), rel=1e-12)
    param = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    library_contrastive_loss(q.float(), lib.float(), targets, param).backward()
    assert param.grad is not None and float(param.grad) != 0.0


def test_nt_xent_matches_formula():
    z1, z2 = unit(4, 6, seed=16), unit(4, 6, seed=17)
    t = 0.3
    z = [*z1, *z2]
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        partner = i + n if i < n else i - n
        others = [dot(z[i], z[k]) / t for k in range(2 * n) if k != i]
        total += -(dot(z[i], z[partner]) / t - log_sum_exp(others))
    assert float(nt_xent(z1, z2, t)) == pytest.approx(total / (2 * n), rel=1e-10)


def test_triplet_matches_formula():
    g = torch.Generator().manual_seed(18)
    a, p, n = (torch.randn(5, 6, generator=g, dtype=torch.float64) for _ in range(3))
    margin = 0.3

    def cos_dist(u, v):
        return 1 - dot(u, v) / math.sqrt(dot(u, u) * dot(v, v))

    want = sum(max(0.0, cos_dist(a[i], p[i]) - cos_dist(a[i], n[i]) + margin)
               for i in range(5)) / 5
    assert float(triplet_loss(a, p, n, margin)) == pytest.approx(want, rel=1e-10)
    # A satisfied margin gives zero loss.
    assert float(triplet_loss(a, a, -a, margin)) == 0.0


def test_nt_xent_with_labels_leaves_same_label_views_out_of_the_negatives():
    z1, z2 = unit(4, 6, seed=19), unit(4, 6, seed=20)
    labels = torch.tensor([0, 1, 0, 2])
    t = 0.5
    z = [*z1, *z2]
    n = len(z1)
    lab = [int(v) for v in labels] * 2
    total = 0.0
    for i in range(2 * n):
        partner = i + n if i < n else i - n
        others = [dot(z[i], z[k]) / t for k in range(2 * n)
                  if k != i and (k == partner or lab[k] != lab[i])]
        total += -(dot(z[i], z[partner]) / t - log_sum_exp(others))
    got = float(nt_xent(z1, z2, t, labels))
    assert got == pytest.approx(total / (2 * n), rel=1e-10)
    assert got != pytest.approx(float(nt_xent(z1, z2, t)))   # the mask changed something
    # Unique labels: the same as no labels.
    assert float(nt_xent(z1, z2, t, torch.arange(4))) == pytest.approx(float(nt_xent(z1, z2, t)))


def test_hardest_negatives_come_from_the_batch_and_never_the_target():
    library = unit(6, 5, seed=21)
    query = library[[0, 0, 3]] + 0.05 * unit(3, 5, seed=22)
    targets = torch.tensor([0, 0, 3])
    neg = hardest_negatives(query, library, targets)
    # Batch actions are {0, 3}: samples of action 0 get action 3 and the other way round.
    assert torch.equal(neg, library[[3, 3, 0]])
    # A batch of one action falls back to the hardest other library action.
    neg = hardest_negatives(query[:2], library, targets[:2])
    sims = F.normalize(query[:2], dim=-1) @ library.t()
    sims[:, 0] = -2
    assert torch.equal(neg, library[sims.argmax(dim=1)])
