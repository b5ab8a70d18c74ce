"""Shared test set-up: isolate DDS traffic and make ament_index find the venv."""
import os
import sys

# A distinct ROS_DOMAIN_ID is the only thing that isolates concurrent runs on one machine;
# `make test` picks one per run, this covers a bare `pytest`.
os.environ.setdefault('ROS_DOMAIN_ID', str(20 + os.getpid() % 80))
os.environ.setdefault('AMENT_PREFIX_PATH', sys.prefix)
os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
# Nothing in the suite may reach a model hub.
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')


import pytest  # noqa: E402


@pytest.fixture(scope='module')
def text_path(tmp_path_factory):
    """A tiny BERT saved with save_pretrained (the training tests' frozen text encoder)."""
    from model_fixtures import make_tiny_bert
    return make_tiny_bert(tmp_path_factory.mktemp('bert'))


@pytest.fixture
def repo_cwd(monkeypatch, request):
    """Run in the repository root, where the training configs' relative paths resolve."""
    monkeypatch.chdir(request.config.rootpath)
