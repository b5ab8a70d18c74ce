"""Bags the importer tests write with rosbags: topic names, frames that say which frame they
are, and a bag of Twist actions."""
import numpy as np

from vla_embedding_ros.data.recordings.bag_record import BagWriter

CAM_A = '/cam_a/image_raw'
CAM_B = '/cam_b/image_raw/compressed'
INSTR = '/instruction'
ACTION = '/action_selector/selected_action'


def frame(value: int, h: int = 12, w: int = 16) -> np.ndarray:
    """An image that says which frame it is: pixel (0, 0) = value, a colour gradient elsewhere
    so channel order mistakes show."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = value
    img[..., 1] = np.arange(w, dtype=np.uint8)[None] * 10
    img[..., 2] = 200 - np.arange(h, dtype=np.uint8)[:, None] * 5
    return img


def twist_bag(path, stamped: bool = False):
    """One camera, Twist actions from two groups (forward / turn left), one bad action."""
    rng = np.random.default_rng(0)
    truth = []
    with BagWriter(path) as bag:
        bag.write_string(INSTR, 'drive to the door', 0.5)
        for k in range(12):
            t = 1.0 + 0.2 * k
            bag.write_image(CAM_A, frame(k), t)
            forward = k % 2 == 0
            lin = [0.5, 0, 0] if forward else [0, 0, 0]
            ang = [0, 0, 0] if forward else [0, 0, 1.0]
            lin, ang = np.add(lin, rng.normal(0, 0.01, 3)), np.add(ang, rng.normal(0, 0.01, 3))
            if stamped:  # header stamp on the frame's clock, received 0.5 s later
                bag.write_twist_stamped(ACTION, lin, ang, stamp=t + 0.05, receive=t + 0.5)
            else:
                bag.write_twist(ACTION, lin, ang, t + 0.05)
            truth.append((np.concatenate([lin, ang]).astype(np.float32), forward))
    return truth
