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
    ],
    install_requires=['setuptools'],
    extras_require={'test': ['pytest']},
    zip_safe=True,
    maintainer='vla_embedding_ros maintainers',
    maintainer_email='maintainers@vla-embedding-ros.dev',
    description='Joint vision-language-action embeddings for ROS 2 action selection.',
    license='Apache-2.0',
    python_requires='>=3.10',
    entry_points={
        'console_scripts': [
            f'action_selector = {PACKAGE}.ros.action_selector_node:main',
            f'tabletop_sim = {PACKAGE}.ros.tabletop_sim_node:main',
            f'train = {PACKAGE}.training.train:main',
            f'evaluate = {PACKAGE}.training.evaluate:main',
            f'make_dataset = {PACKAGE}.data.make_dataset:main',
            f'demo = {PACKAGE}.ros.demo:main',
            f'episode_recorder = {PACKAGE}.ros.episode_recorder_node:main',
            f'bag_to_dataset = {PACKAGE}.data.recordings.bag_to_dataset:main',
            f'vla-bag-to-dataset = {PACKAGE}.data.recordings.bag_to_dataset:main',
            f'vla-record-tabletop-bag = {PACKAGE}.data.recordings.bag_record:main',
            f'vla-train = {PACKAGE}.training.train:main',
            f'vla-eval = {PACKAGE}.training.evaluate:main',
            f'vla-make-dataset = {PACKAGE}.data.make_dataset:main',
        ],
    },
)
