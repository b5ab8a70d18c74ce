"""ament_python package definition; also a plain pip-installable Python package."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'vla_embedding_ros'


def share(subdir, pattern='*'):
    """Install repo files under share/<package>/<subdir> where ros2 launch/run look."""
    return (f'share/{PACKAGE}/{subdir}', [p for p in glob(f'{subdir}/{pattern}') if '.' in p])


setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*', 'bench']),
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        share('launch', '*.launch.py'),
        share('config', '*.yaml'),
        share('config', '*.xml'),
        share('models/tabletop'),
        share('models/tabletop_continuous'),
        share('models/libero'),
        (f'lib/{PACKAGE}', ['scripts/action_selector', 'scripts/tabletop_sim',
                            'scripts/episode_recorder', 'scripts/instruct',
                            'scripts/libero_sim']),
    ],
    install_requires=['setuptools'],
    extras_require={'test': ['pytest', 'pytest-timeout']},
    zip_safe=True,
    maintainer='vla_embedding_ros maintainers',
    maintainer_email='maintainers@vla-embedding-ros.dev',
    description='Joint vision-language-action embeddings for ROS 2 action selection.',
    license='Apache-2.0',
    python_requires='>=3.10',
    entry_points={
        # Only prefixed names: a pip install puts these on PATH, where generic names (train,
        # demo, ...) would shadow other tools. The ROS executables `ros2 run` and the launch
        # files use (action_selector, tabletop_sim, episode_recorder) are the scripts/ files,
        # installed under lib/vla_embedding_ros/ by data_files: off PATH.
        'console_scripts': [
            f'vla-train = {PACKAGE}.training.train:main',
            f'vla-eval = {PACKAGE}.training.evaluate:main',
            f'vla-make-dataset = {PACKAGE}.data.make_dataset:main',
            f'vla-bag-to-dataset = {PACKAGE}.data.recordings.bag_to_dataset:main',
            f'vla-record-tabletop-bag = {PACKAGE}.data.recordings.bag_record:main',
            f'vla-demo = {PACKAGE}.ros.demo:main',
            f'vla-action-selector = {PACKAGE}.ros.action_selector_node:main',
            f'vla-tabletop-sim = {PACKAGE}.ros.tabletop_sim_node:main',
            f'vla-libero-sim = {PACKAGE}.ros.libero_sim_node:main',
            f'vla-libero-dataset = {PACKAGE}.libero.make_dataset:main',
            f'vla-episode-recorder = {PACKAGE}.ros.episode_recorder_node:main',
            f'vla-instruct = {PACKAGE}.ros.instruct:main',
            f'vla-dds-profile = {PACKAGE}.ros.dds_transport:main',
            f'vla-export-onnx = {PACKAGE}.model.onnx_export:main',
        ],
    },
)
