"""action_selector with backend: onnxruntime over real DDS: a missing export fails configure
naming the command; with the export the node decides as the torch selector does, and a
missing provider is a logged fallback visible in /diagnostics."""
import shutil

import pytest

pytest.importorskip('rclpy')
pytest.importorskip('onnxruntime')

from rclpy.parameter import Parameter  # noqa: E402

from support.ros import Harness, frame, make_text_checkpoint  # noqa: E402
from support.selector_client import Client  # noqa: E402
from vla_embedding_ros.model import onnx_export as ox  # noqa: E402
from vla_embedding_ros.ros.action_selector_node import ActionSelectorNode  # noqa: E402
from vla_embedding_ros.selection import ActionSelector  # noqa: E402


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    return make_text_checkpoint(tmp_path_factory.mktemp('ros_backend'))


def _node(h, ckpt, **params):
    overrides = [Parameter('model_path', value=ckpt), Parameter('device', value='cpu'),
                 Parameter('max_rate_hz', value=0.0), Parameter('backend', value='onnxruntime')]
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    return h.start(ActionSelectorNode(context=h.context, parameter_overrides=overrides))


def test_onnxruntime_backend_in_the_node(ckpt, capfd):
    shutil.rmtree(ox.default_export_dir(ckpt), ignore_errors=True)
    with Harness() as h:
        node = _node(h, ckpt)
        assert h.spin_until(lambda: node.last_error and node.state == 'unconfigured', 30.0)
        assert f'vla-export-onnx {ckpt}' in node.last_error
        h.spin_for(0.2)
        assert 'vla-export-onnx' in capfd.readouterr().err

    ox.export_onnx(ckpt, log=lambda *_: None)
    with Harness() as h:
        client = Client(h)
        node = _node(h, ckpt, onnx_providers='cuda,cpu', top_k=3)
        client.wait_connected(node)
        assert node.selector.backend_name == 'onnxruntime'
        _, scores = client.decide('push the blue ball left', seed=3)
        direct = ActionSelector.from_pretrained(ckpt, device='cpu', top_k=3).select(
            frame(3), 'push the blue ball left')
        assert scores['selected'] == direct.name == 'push_blue'
        assert scores['top_scores'] == pytest.approx(direct.top_scores, abs=1e-4)
        assert h.spin_until(lambda: any(
            {kv.key: kv.value for kv in d.status[0].values}.get('backend') == 'onnxruntime'
            for d in client.diags), 5.0)
        values = {kv.key: kv.value for kv in client.diags[-1].status[0].values}
        assert values['backend_providers'] == 'CPUExecutionProvider'
        assert 'CUDAExecutionProvider' in values['backend_fallback']
