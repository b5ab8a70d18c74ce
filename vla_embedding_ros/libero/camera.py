"""Pinhole camera model of a rendered view: upright images, depth in metres, intrinsics and
the camera pose in the world, and the maps pixel -> world (with depth) and world -> pixel.

Pixel convention (OpenCV's): ``x`` to the right, ``y`` down, the centre of pixel column ``j``
at ``x = j + 0.5``. Normalised image points ``(u, v) = (x / width, y / height)`` lie in
[0, 1] x [0, 1], (0, 0) the top-left corner of the upright image. The camera frame is
OpenCV's too (x right, y down, z forward along the optical axis); depth is that z, in metres.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# MuJoCo cameras look along their -z with +y up; OpenCV's camera frame looks along +z, y down.
_MUJOCO_FROM_OPENCV = np.diag([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class Calibration:
    """Intrinsics ``K`` (3x3, pixels) and ``world_from_camera`` (4x4) of one image size."""
    width: int
    height: int
    K: np.ndarray
    world_from_camera: np.ndarray

    @classmethod
    def from_mujoco(cls, fovy_deg: float, cam_pos, cam_xmat, width: int, height: int):
        """A MuJoCo camera (vertical field of view, world position and orientation)."""
        f = 0.5 * height / np.tan(np.deg2rad(fovy_deg) / 2)
        K = np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])
        pose = np.eye(4)
        pose[:3, :3] = np.asarray(cam_xmat, float).reshape(3, 3) @ _MUJOCO_FROM_OPENCV
        pose[:3, 3] = cam_pos
        return cls(width, height, K, pose)

    def to_dict(self) -> dict:
        """JSON-serialisable form (lists)."""
        return {'width': self.width, 'height': self.height, 'K': self.K.tolist(),
                'world_from_camera': self.world_from_camera.tolist()}

    def pixel_to_world(self, x, y, depth) -> np.ndarray:
        """World points ``[..., 3]`` of pixel coordinates ``x, y`` at camera depth ``depth``."""
        x, y, depth = np.broadcast_arrays(*(np.asarray(a, float) for a in (x, y, depth)))
        rays = np.stack([(x - self.K[0, 2]) / self.K[0, 0], (y - self.K[1, 2]) / self.K[1, 1],
                         np.ones_like(x)], axis=-1)
        cam = rays * depth[..., None]
        return cam @ self.world_from_camera[:3, :3].T + self.world_from_camera[:3, 3]

    def world_to_pixel(self, points) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates ``(x, y)`` and camera depth of world points ``[..., 3]``."""
        points = np.asarray(points, float)
        rot, origin = self.world_from_camera[:3, :3], self.world_from_camera[:3, 3]
        cam = (points - origin) @ rot            # = R^T (p - t) for each row
        depth = cam[..., 2]
        x = self.K[0, 0] * cam[..., 0] / depth + self.K[0, 2]
        y = self.K[1, 1] * cam[..., 1] / depth + self.K[1, 2]
        return np.stack([x, y], axis=-1), depth

    def normalised_to_pixel(self, u, v) -> tuple[float, float]:
        """Normalised image point -> pixel coordinates."""
        return float(u) * self.width, float(v) * self.height

    def pixel_to_normalised(self, x, y) -> tuple[float, float]:
        """Pixel coordinates -> normalised image point."""
        return float(x) / self.width, float(y) / self.height


@dataclass(frozen=True)
class Frame:
    """One rendered view: ``rgb`` uint8 [H, W, 3] upright, ``depth`` float32 [H, W] metres."""
    camera: str
    rgb: np.ndarray
    depth: np.ndarray
    calibration: Calibration

    def depth_at(self, x: float, y: float) -> float:
        """Depth (metres) of the pixel containing pixel coordinates ``(x, y)``."""
        h, w = self.depth.shape
        if not (0 <= x < w and 0 <= y < h):
            raise ValueError(f'pixel ({x:.1f}, {y:.1f}) is outside the {w}x{h} image')
        return float(self.depth[int(np.floor(y)), int(np.floor(x))])

    def lift(self, x: float, y: float) -> np.ndarray:
        """World point seen at pixel coordinates ``(x, y)``."""
        return self.calibration.pixel_to_world(x, y, self.depth_at(x, y))

    def point_cloud(self) -> np.ndarray:
        """World points ``[H, W, 3]`` of every pixel (through its centre)."""
        h, w = self.depth.shape
        ys, xs = np.mgrid[0:h, 0:w] + 0.5
        return self.calibration.pixel_to_world(xs, ys, self.depth)


def camera_calibration(model, data, camera: str, width: int, height: int) -> Calibration:
    """``camera``'s calibration for a ``width`` x ``height`` image at MuJoCo state ``data``
    (no rendering needed)."""
    cam = model.camera(camera)
    return Calibration.from_mujoco(model.cam_fovy[cam.id], data.cam_xpos[cam.id],
                                   data.cam_xmat[cam.id], width, height)


class Renderer:
    """Renders named cameras of a MuJoCo model on demand (MuJoCo's own offscreen renderer).

    MuJoCo's renderer returns upright images (row 0 at the top), unlike robosuite's camera
    observations (bottom-up, OpenGL order), and its depth rendering is already the distance
    along the optical axis in metres.
    """

    def __init__(self, model, data, width: int, height: int):
        import mujoco
        if model.vis.global_.offwidth < width or model.vis.global_.offheight < height:
            model.vis.global_.offwidth = max(width, model.vis.global_.offwidth)
            model.vis.global_.offheight = max(height, model.vis.global_.offheight)
        self._model, self._data = model, data
        self._renderer = mujoco.Renderer(model, height, width)
        self.width, self.height = width, height

    def calibration(self, camera: str) -> Calibration:
        """The camera's calibration at this renderer's size, at the current simulator state."""
        return camera_calibration(self._model, self._data, camera, self.width, self.height)

    def render(self, camera: str, depth: bool = True) -> Frame:
        """RGB (and depth unless ``depth=False``, then zeros) of ``camera`` now."""
        r = self._renderer
        r.disable_depth_rendering()
        r.update_scene(self._data, camera=camera)
        rgb = r.render().copy()
        if depth:
            r.enable_depth_rendering()
            r.update_scene(self._data, camera=camera)
            metres = r.render().astype(np.float32)
            r.disable_depth_rendering()
        else:
            metres = np.zeros(rgb.shape[:2], np.float32)
        return Frame(camera, rgb, metres, self.calibration(camera))

    def close(self) -> None:
        """Free the GL context."""
        self._renderer.close()
