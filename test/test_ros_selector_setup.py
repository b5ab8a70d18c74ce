"""What the action_selector's settings mean for the selector, without a node: refusals, the
sampling settings, the selector options, and configure's one failure path (a refused
combination before any load, a load failure naming the path, a refusal after the warm-up)."""
from pathlib import Path

import pytest

pytest.importorskip('rcl_interfaces')

from vla_embedding_ros.actions.library import ActionLibrary  # noqa: E402
from vla_embedding_ros.ros import selector_setup as setup  # noqa: E402
from vla_embedding_ros.ros.selector_params import parameter_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONTINUOUS_LIBRARY = str(ROOT / 'config' / 'tabletop_continuous_actions.yaml')


def settings(**changes):
    values = {name: default for name, (default, _) in parameter_table().items()}
    values.update(device='cpu', **changes)
    return values


def test_refusals_name_the_setting_and_the_way_out():
    fixed = ActionLibrary.from_dict({'version': 1, 'parameter_names': ['a'],
                                     'actions': [{'name': 'x', 'params': [1]}]})
    assert 'needs an action library with a continuous' in setup.sampled_refusal('sampled', fixed)
    assert setup.sampled_refusal('sampled', None) != ''
    assert setup.sampled_refusal('library', fixed) == ''
    decide = setup.missing_camera_refusal('decide', 'onnxruntime', 2)
    assert 'needs backend torch' in decide and 'missing_camera: abstain' in decide
    assert setup.missing_camera_refusal('decide', 'onnxruntime', 1) == ''   # nothing to miss
    assert setup.missing_camera_refusal('decide', 'torch', 2) == ''
    assert setup.missing_camera_refusal('abstain', 'onnxruntime', 2) == ''


def test_settings_become_sampling_settings_and_selector_options():
    values = settings(sample_count=0, sample_iterations=2, sample_noise=0.5, sample_seed=9,
                      gradient_steps=4, onnx_path='', model_path='', top_k=3,
                      image_topics=['cam/', 'other'], image_transport='compressed')
    config = setup.sampling_config(values, 'cuda')
    assert (config.samples, config.iterations, config.noise, config.seed,
            config.gradient_steps) == (16384, 2, 0.5, 9, 4)
    assert setup.sampling_config(values, 'cpu').samples == 1024
    assert setup.sampling_config(dict(values, sample_count=5), 'cuda').samples == 5
    options = setup.selector_options(values)
    assert options['onnx_path'] is None and options['top_k'] == 3
    assert options['checkpoint_dir'] == setup.default_model_path()
    assert setup.camera_topics(values) == ['cam/compressed', 'other/compressed']


def test_configure_refuses_before_loading_and_names_what_failed_to_load(tmp_path):
    warmed = []
    refused = settings(model_path=str(tmp_path / 'absent'), backend='onnxruntime',
                       missing_camera='decide', image_topics=['a', 'b'])
    with pytest.raises(setup.ConfigureError, match='^missing_camera: decide needs backend'):
        setup.configure(refused, lambda *a: warmed.append(a))
    with pytest.raises(setup.ConfigureError) as info:
        setup.configure(settings(model_path=str(tmp_path / 'absent')),
                        lambda *a: warmed.append(a))
    assert str(info.value).startswith(f'cannot load model {tmp_path / "absent"}: ')
    assert warmed == []


def test_configure_warms_up_then_refuses_a_mode_the_library_cannot_serve():
    warmed = []
    with pytest.raises(setup.ConfigureError) as info:
        setup.configure(settings(candidate_mode='sampled'), lambda *a: warmed.append(a))
    assert f'model {setup.default_model_path()}: candidate_mode: sampled needs' in \
        str(info.value)
    assert len(warmed) == 1 and warmed[0][1] > 0   # the warm-up ran and was reported first
    done = setup.configure(settings(candidate_mode='sampled', library_path=CONTINUOUS_LIBRARY,
                                    sample_count=32, sample_iterations=1),
                           lambda *a: warmed.append(a))
    assert done.where.endswith(f'library {CONTINUOUS_LIBRARY}') and done.device.type == 'cpu'
    # Both kinds of decision were warmed up (the library's and the sampled search): the
    # second found the warm-up instruction cached.
    info = done.selector.cache_info()
    assert (info['misses'], info['hits']) == (1, 1) and len(warmed) == 2
    warnings, summary = setup.warm_up_report(done.selector, 0.25)
    assert warnings == [] and summary.startswith('warm-up decision took 250 ms (backend torch')
    model = setup.release_device(done.selector, done.device)
    assert model is done.selector.model      # on the CPU there is nothing to move
