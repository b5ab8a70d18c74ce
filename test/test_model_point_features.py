"""Point features (``model.action.point_dim``): an action's score also reads what the image
shows where the action points. Settings refused by name, the cell an action lands on, a
target that moves learned where the global query alone does not, and the selector's path."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from support import models as fx
from vla_embedding_ros.model import VLAConfig, VLAModel
from vla_embedding_ros.selection import ActionSelector
from vla_embedding_ros.selection.sampling import SamplingConfig

SPACE = {'version': 1, 'parameter_names': ['pick', 'place', 'u', 'v'],
         'space': {'choice': {'name': 'primitive', 'options': ['pick', 'place']},
                   'continuous': [{'name': 'u', 'low': 0.0, 'high': 1.0},
                                  {'name': 'v', 'low': 0.0, 'high': 1.0}]}}
GRID = fx.IMAGE_SIZE // fx.PATCH_SIZE     # 32 px images, 8 px patches: a 4 x 4 grid
POINT_DIM = 8


def config(text_path, point_dim=POINT_DIM, **action) -> dict:
    cfg = fx.tiny_vla_config(text_path, param_dim=4).to_dict()
    cfg['action'].update(continuous_dims=[2, 3], fourier_features=16, fourier_scale=2.0,
                         continuous_low=[0, 0, 0, 0], continuous_high=[1, 1, 1, 1])
    if point_dim:
        cfg['action'].update(image_point=[2, 3], point_dim=point_dim)
    cfg['action'].update(action)
    return cfg


def test_half_a_setting_is_refused_by_name(text_path):
    with pytest.raises(ValueError, match='action.image_point'):
        VLAConfig.from_dict(config(text_path, image_point=[]))
    with pytest.raises(ValueError, match='action.image_point'):
        VLAConfig.from_dict(config(text_path, image_point=[2, 7]))
    with pytest.raises(ValueError, match='set both or neither'):
        VLAConfig.from_dict(config(text_path, point_dim=0, image_point=[2, 3]))
    late = config(text_path)
    late['fusion']['type'] = 'late'
    with pytest.raises(ValueError, match="fusion.type 'transformer'"):
        VLAConfig.from_dict(late)


def test_query_and_action_carry_a_vector_per_cell_and_an_action_lands_on_its_cell(text_path):
    model = VLAModel(config(text_path)).eval()
    width = 32 + GRID * GRID * POINT_DIM
    query = model.encode_query(torch.randn(2, 3, 32, 32), ['pick it', 'place it'])
    actions = model.encode_actions(torch.tensor([[1, 0, 0.9, 0.1], [0, 1, 0.1, 0.9]]))
    assert query.shape == (2, width) and actions.shape == (2, width)
    assert torch.allclose(query.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(actions.norm(dim=-1), torch.ones(2), atol=1e-5)
    cells = actions[:, 32:].reshape(2, GRID * GRID, POINT_DIM).norm(dim=-1)
    # u to the right, v down, cells row-major: (0.9, 0.1) is row 0 col 3, (0.1, 0.9) row 3 col 0
    assert cells.argmax(dim=1).tolist() == [3, 12]


def square_scene(rng, count):
    """Black 32 px images with one grey square anywhere; its centre is the pick point."""
    images = np.zeros((count, 3, 32, 32), np.float32)
    centres = rng.uniform(5, 27, size=(count, 2))
    for image, (x, y) in zip(images, centres, strict=True):
        image[:, int(y) - 4:int(y) + 4, int(x) - 4:int(x) + 4] = 1.0
    return torch.from_numpy(images), torch.from_numpy(centres / 32).float()


def train_to_find_the_square(model, steps=250, negatives=63, seed=0):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    words = ['pick up the square'] * 16
    text = model.encode_text(words)
    model.train()
    for _ in range(steps):
        images, points = square_scene(rng, 16)
        query = model.fuse(model.encode_images(images), text)
        uv = torch.cat([points.unsqueeze(1), torch.rand(16, negatives, 2)], dim=1)
        params = torch.cat([torch.tensor([1.0, 0.0]).expand(16, negatives + 1, 2), uv], dim=-1)
        actions = model.encode_actions(params.reshape(-1, 4)).reshape(16, negatives + 1, -1)
        logits = model.scale() * torch.einsum('be,bne->bn', query, actions)
        loss = F.cross_entropy(logits, torch.zeros(16, dtype=torch.long))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model


@torch.no_grad()
def hits(model, count=60, seed=99):
    images, points = square_scene(np.random.default_rng(seed), count)
    text = model.encode_text(['pick up the square'] * count)
    query = model.fuse(model.encode_images(images), text)
    grid = torch.stack(torch.meshgrid(torch.linspace(0, 1, 33), torch.linspace(0, 1, 33),
                                      indexing='xy'), dim=-1).reshape(-1, 2)
    actions = model.encode_actions(torch.cat([torch.tensor([[1.0, 0.0]]).expand(len(grid), 2),
                                              grid], dim=1))
    best = grid[(query @ actions.t()).argmax(dim=1)]
    return float(((best - points).norm(dim=1) < 4 / 32).float().mean())   # inside the square


def test_a_square_that_moves_is_found_with_point_features(text_path):
    torch.manual_seed(0)
    with_points = train_to_find_the_square(VLAModel(config(text_path)))
    torch.manual_seed(0)
    global_only = train_to_find_the_square(VLAModel(config(text_path, point_dim=0)))
    found, found_global = hits(with_points), hits(global_only)
    print(f'inside the square: point features {found:.2f}, global query only {found_global:.2f}')
    assert found >= 0.8, (found, found_global)
    assert found > found_global, (found, found_global)


def test_the_selector_samples_a_point_feature_model_and_onnx_export_refuses_it(text_path,
                                                                              tmp_path):
    from vla_embedding_ros.model.onnx_export import export_onnx
    model = VLAModel(config(text_path)).eval()
    model.save_pretrained(tmp_path / 'model')
    (tmp_path / 'model' / 'actions.yaml').write_text(yaml.safe_dump(SPACE))
    selector = ActionSelector.from_pretrained(tmp_path / 'model', device='cpu')
    assert selector.backend.plan is None          # the plan reads the CLS row alone
    image = np.zeros((32, 32, 3), np.uint8)
    chosen = selector.select_sampled(image, 'pick up the square',
                                     sampling=SamplingConfig(samples=64, iterations=2, seed=0),
                                     choice='pick')
    assert chosen.vector[0] == 1.0 and 0 <= chosen.vector[2] <= 1 and 0 <= chosen.vector[3] <= 1
    loaded = VLAModel.from_pretrained(tmp_path / 'model', device='cpu')
    assert loaded.config.action.point_dim == POINT_DIM
    with pytest.raises(ValueError, match='point_dim'):
        export_onnx(tmp_path / 'model', tmp_path / 'onnx')

