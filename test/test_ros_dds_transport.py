"""The Fast DDS profile the demo, its launch file and the latency bench give their processes.

Whether frames really arrive through it is shown over DDS by the closed-loop demo test and
bench/node_latency.py; here: the file is one Fast DDS can use, and a user's choice wins.
"""
import xml.etree.ElementTree as ET
from pathlib import Path

from vla_embedding_ros.ros.dds_transport import (
    BUILTIN_VAR,
    PROFILES_VAR,
    describe,
    large_frames_profile,
    with_large_frame_transport,
)

NS = {'dds': 'http://www.eprosima.com'}
FRAME_640x480_RGB8 = 640 * 480 * 3


def test_profile_is_the_source_tree_copy_and_parses():
    path = Path(large_frames_profile())
    assert path == Path(__file__).resolve().parents[1] / 'config' / 'fastdds_large_frames.xml'
    root = ET.parse(path).getroot()
    participant = root.find('dds:profiles/dds:participant', NS)
    assert participant.get('is_default_profile') == 'true'
    assert participant.findtext('dds:rtps/dds:useBuiltinTransports', namespaces=NS) == 'false'
    used = [t.text for t in participant.findall('dds:rtps/dds:userTransports/dds:transport_id',
                                                NS)]
    descriptors = {d.findtext('dds:transport_id', namespaces=NS): d
                   for d in root.findall('dds:profiles/dds:transport_descriptors/'
                                         'dds:transport_descriptor', NS)}
    assert set(used) == set(descriptors)
    kinds = {descriptors[t].findtext('dds:type', namespaces=NS) for t in used}
    assert kinds == {'SHM', 'UDPv4'}   # UDP: discovery, and peers on other computers
    shm = next(d for d in descriptors.values() if d.findtext('dds:type', namespaces=NS) == 'SHM')
    assert int(shm.findtext('dds:segment_size', namespaces=NS)) >= 8 * FRAME_640x480_RGB8


def test_profile_is_added_only_when_the_user_chose_no_transports():
    env = with_large_frame_transport({'ROS_DOMAIN_ID': '7'})
    assert env == {'ROS_DOMAIN_ID': '7', PROFILES_VAR: large_frames_profile()}
    assert describe(env) == f'{PROFILES_VAR}={large_frames_profile()}'
    for users in ({PROFILES_VAR: '/robot/fastdds.xml'}, {BUILTIN_VAR: 'LARGE_DATA'}):
        assert with_large_frame_transport(dict(users)) == users
    assert describe({BUILTIN_VAR: 'LARGE_DATA'}) == f'{BUILTIN_VAR}=LARGE_DATA'
    assert describe({}) == f'{BUILTIN_VAR}=DEFAULT'
