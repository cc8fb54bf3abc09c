"""Synthetic 3-D scenes with exact depth, panoptic labels and colours, ray cast with numpy.

The world is metric (metres) and right-handed with +y up. Every scene has two "stuff" surfaces, the
floor (the plane y = 0) and a back wall (the plane z = `Scene.wall_z`), and a few "things" standing
in front of the wall: spheres, boxes (axis-aligned or turned about the vertical axis) and upright
cylinders with caps. Each thing has instance id k + 1, k its index in `Scene.things`.

Camera: a pinhole at `Camera.position` looking at `Camera.look_at`, with square pixels and the same
field of view `Camera.fov_deg` across the image's height and width (the images are square). Its axes
are forward = normalize(look_at - position), right = normalize(forward x up_world) and
up = right x forward, so there is no roll. Pixel (i, j) (row i from the top, column j from the left)
of an S x S image looks along forward + u right + v up with u = (2 (j + 0.5) / S - 1) tan(fov / 2)
and v = (1 - 2 (i + 0.5) / S) tan(fov / 2).

Outputs of `render`, for an S x S image (`render_scene` adds ``scene``, the `Scene` it rendered):

* ``image``: uint8 (S, S, 3), linear RGB = albedo * (ambient + (1 - ambient) * max(0, n . l) * lit),
  with l the direction towards a directional light and lit 0 where another surface casts a hard
  shadow (`Scene.shadows`), else 1. Rounded to the nearest integer of 255 times that.
* ``depth``: float32 (S, S), the z-depth in metres: the distance of the visible point from the camera
  measured along the optical axis (forward), not the length of the ray. inf where a ray hits nothing.
* ``semantic``: int32 (S, S), class ids from `CLASS_NAMES`: 0 floor, 1 wall, 2 sphere, 3 box,
  4 cylinder, and `VOID` (-1) where a ray hits nothing.
* ``instance``: int32 (S, S), k + 1 on thing k, 0 on stuff and void.

`random_scene` keeps the camera above the floor, in front of the wall and tilted so little that every
ray points towards the wall, so each pixel of a random scene sees the floor, the wall or a thing
(never `VOID`). All rays of one primitive are intersected at once; the nearest hit wins.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import numpy as np

Vec3 = tuple[float, float, float]

FLOOR, WALL, SPHERE, BOX, CYLINDER = range(5)
CLASS_NAMES = ("floor", "wall", "sphere", "box", "cylinder")
STUFF_CLASSES = (FLOOR, WALL)
THING_CLASSES = (SPHERE, BOX, CYLINDER)
VOID = -1

T_MIN = 1e-6  # Hits at ray parameters up to this are ignored (behind or at the ray's origin).
SHADOW_OFFSET = 1e-4  # Shadow rays start this far (m) off the surface, along its normal.


@dataclasses.dataclass(frozen=True)
class Camera:
  """A pinhole camera at `position` (m) looking at `look_at` (m); `fov_deg` spans the image side."""

  position: Vec3 = (0.0, 1.5, 0.0)
  look_at: Vec3 = (0.0, 0.5, 5.0)
  fov_deg: float = 60.0


@dataclasses.dataclass(frozen=True)
class Sphere:
  """A sphere of `radius` (m) around `center` (m); `colour` is its RGB albedo in [0, 1]."""

  center: Vec3
  radius: float
  colour: Vec3
  semantic: ClassVar[int] = SPHERE


@dataclasses.dataclass(frozen=True)
class Box:
  """A box around `center` with half side lengths `half_size` (m) along its own x, y, z axes.

  The box is turned by `yaw` radians about the vertical axis through `center` (counter-clockwise seen
  from above, i.e. its local +x axis points along (cos yaw, 0, -sin yaw)); yaw 0 is axis-aligned.
  """

  center: Vec3
  half_size: Vec3
  yaw: float
  colour: Vec3
  semantic: ClassVar[int] = BOX


@dataclasses.dataclass(frozen=True)
class Cylinder:
  """An upright (axis along y) closed cylinder of `radius` and `height` (m) centred on `center`."""

  center: Vec3
  radius: float
  height: float
  colour: Vec3
  semantic: ClassVar[int] = CYLINDER


Thing = Sphere | Box | Cylinder


@dataclasses.dataclass(frozen=True)
class Plane:
  """The infinite plane through `point` with normal `normal` (used for the floor and the wall)."""

  point: Vec3
  normal: Vec3


@dataclasses.dataclass(frozen=True)
class Scene:
  """A camera, the floor (y = 0), the back wall (z = `wall_z`), things and a directional light.

  `light` points from the scene towards the light (any length); `ambient` in [0, 1] is the share of
  light that reaches every point. Thing k (0-based) has instance id k + 1.
  """

  camera: Camera
  things: tuple[Thing, ...]
  floor_colour: Vec3 = (0.6, 0.55, 0.5)
  wall_colour: Vec3 = (0.8, 0.8, 0.8)
  wall_z: float = 8.0
  light: Vec3 = (0.3, 1.0, -0.6)
  ambient: float = 0.3
  shadows: bool = True


def camera_rays(camera: Camera, size: int) -> tuple[np.ndarray, np.ndarray]:
  """The origin (3,) and directions (size * size, 3), row-major from the top-left pixel, of the rays.

  Each direction has component exactly 1 along the optical axis, so a hit at ray parameter t lies at
  z-depth t.
  """
  position = np.asarray(camera.position, np.float64)
  forward = _normalize(np.asarray(camera.look_at, np.float64) - position)
  right = _normalize(np.cross(forward, [0.0, 1.0, 0.0]))
  up = np.cross(right, forward)
  half = math.tan(math.radians(camera.fov_deg) / 2)
  steps = (np.arange(size) + 0.5) / size * 2 - 1
  v, u = np.meshgrid(-steps * half, steps * half, indexing="ij")
  directions = forward + u[..., None] * right + v[..., None] * up
  return position, directions.reshape(-1, 3)


def intersect_plane(
  origins: np.ndarray, directions: np.ndarray, plane: Plane
) -> tuple[np.ndarray, np.ndarray]:
  """The first hits of rays from origins (N, 3) or (3,) along directions (N, 3) with a plane.

  Returns the ray parameters t (N,) of the hits (inf where none) and the surface normals (N, 3) there,
  of either orientation (`render` turns them towards the camera).
  """
  normal = np.asarray(plane.normal, np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    t = ((np.asarray(plane.point) - origins) @ normal) / (directions @ normal)
  return _positive(t), np.broadcast_to(normal, directions.shape)


def intersect_sphere(
  origins: np.ndarray, directions: np.ndarray, sphere: Sphere
) -> tuple[np.ndarray, np.ndarray]:
  """Like `intersect_plane`, for a sphere: the nearer root of |o + t d - c|^2 = r^2 that is positive."""
  offsets = origins - np.asarray(sphere.center)
  a = np.einsum("nk,nk->n", directions, directions)
  b = np.sum(offsets * directions, axis=-1)
  c = np.sum(offsets * offsets, axis=-1) - sphere.radius**2
  discriminant = b * b - a * c
  root = np.sqrt(np.maximum(discriminant, 0.0))
  t, _ = _nearest(np.where(discriminant < 0, np.inf, np.stack([(-b - root) / a, (-b + root) / a])))
  normals = (offsets + _finite(t)[:, None] * directions) / sphere.radius
  return t, normals


def intersect_box(origins: np.ndarray, directions: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
  """Like `intersect_plane`, for a box, by the slab method in the box's own frame."""
  rotation = _yaw_rotation(box.yaw)  # Box frame to world: world = rotation @ local.
  local_origins = (origins - np.asarray(box.center)) @ rotation
  local_directions = directions @ rotation
  half = np.asarray(box.half_size)
  with np.errstate(divide="ignore", invalid="ignore"):
    t1 = (-half - local_origins) / local_directions
    t2 = (half - local_origins) / local_directions
  t_low, t_high = np.minimum(t1, t2), np.maximum(t1, t2)
  t_near, t_far = t_low.max(axis=-1), t_high.min(axis=-1)
  entering = t_near > T_MIN
  t = np.where((t_near <= t_far) & (t_far > T_MIN), np.where(entering, t_near, t_far), np.inf)
  axis = np.where(entering, t_low.argmax(axis=-1), t_high.argmin(axis=-1))
  return t, np.eye(3)[axis] @ rotation.T


def intersect_cylinder(
  origins: np.ndarray, directions: np.ndarray, cylinder: Cylinder
) -> tuple[np.ndarray, np.ndarray]:
  """Like `intersect_plane`, for a cylinder: its side (a quadratic in x and z) and its two caps."""
  o = np.broadcast_to(origins - np.asarray(cylinder.center), directions.shape)
  d = directions
  half_height = cylinder.height / 2
  a = d[:, 0] ** 2 + d[:, 2] ** 2
  b = o[:, 0] * d[:, 0] + o[:, 2] * d[:, 2]
  c = o[:, 0] ** 2 + o[:, 2] ** 2 - cylinder.radius**2
  discriminant = b * b - a * c
  root = np.sqrt(np.maximum(discriminant, 0.0))
  with np.errstate(divide="ignore", invalid="ignore"):
    sides = np.stack([(-b - root) / a, (-b + root) / a])
    sides[:, discriminant < 0] = np.inf
    sides[np.abs(o[:, 1] + sides * d[:, 1]) > half_height] = np.inf
    caps = np.stack([(half_height - o[:, 1]) / d[:, 1], (-half_height - o[:, 1]) / d[:, 1]])
    cap_x, cap_z = o[:, 0] + caps * d[:, 0], o[:, 2] + caps * d[:, 2]
    caps[~(cap_x**2 + cap_z**2 <= cylinder.radius**2)] = np.inf
  t, which = _nearest(np.concatenate([sides, caps]))
  points = o + _finite(t)[:, None] * d
  side_normals = points * [1.0, 0.0, 1.0] / cylinder.radius
  return t, np.where((which < 2)[:, None], side_normals, [0.0, 1.0, 0.0])


def render(scene: Scene, size: int = 64) -> dict[str, np.ndarray]:
  """Ray casts `scene` into an image `size` x `size`: image, depth, semantic and instance (see above)."""
  surfaces = _surfaces(scene)
  origin, directions = camera_rays(scene.camera, size)
  t, index, normals = _trace(surfaces, origin, directions)
  hit = index >= 0
  normals = np.where((np.sum(normals * directions, axis=-1) > 0)[:, None], -normals, normals)
  light = _normalize(np.asarray(scene.light, np.float64))
  lambert = np.maximum(normals @ light, 0.0) * hit
  if scene.shadows:
    lit = lambert > 0
    points = origin + t[lit, None] * directions[lit] + SHADOW_OFFSET * normals[lit]
    blocked, _, _ = _trace(surfaces, points, np.broadcast_to(light, points.shape))
    lambert[lit] *= np.isinf(blocked)
  # Index -1 (no hit) picks the last entry: black, VOID and instance 0.
  colours = np.asarray([colour for _, _, _, colour in surfaces] + [(0.0, 0.0, 0.0)])
  shade = scene.ambient + (1 - scene.ambient) * lambert
  image = np.round(255 * colours[index] * shade[:, None])
  semantic = np.asarray([label for _, label, _, _ in surfaces] + [VOID], np.int32)[index]
  instance = np.asarray([label for _, _, label, _ in surfaces] + [0], np.int32)[index]
  return {
    "image": image.astype(np.uint8).reshape(size, size, 3),
    "depth": t.astype(np.float32).reshape(size, size),
    "semantic": semantic.reshape(size, size),
    "instance": instance.reshape(size, size),
  }


def random_scene(seed: int) -> Scene:
  """A random scene, a pure function of `seed`: 2 to 6 things on the floor, random colours and light.

  The camera stands 1.2-2 m high near x = 0, z = 0, looking 10-25 degrees down towards the wall
  7-10 m away, with a 60 degree field of view. Things are placed at z in [2.5, wall_z - 0.3] without
  overlapping footprints; one that finds no free place in 50 tries is left out, so a scene has at least
  one thing. Things may occlude each other or lie partly outside the view.
  """
  rng = np.random.default_rng(seed)
  height, pitch = float(rng.uniform(1.2, 2.0)), math.radians(rng.uniform(10.0, 25.0))
  camera = Camera(
    position=(float(rng.uniform(-0.3, 0.3)), height, 0.0),
    look_at=(float(rng.uniform(-0.5, 0.5)), height - 5.0 * math.tan(pitch), 5.0),
  )
  wall_z = float(rng.uniform(7.0, 10.0))
  light = tuple(float(c) for c in rng.uniform([-1.0, 1.0, -1.0], [1.0, 2.0, -0.2]))
  ambient, floor_colour, wall_colour = float(rng.uniform(0.2, 0.4)), _colour(rng), _colour(rng)
  things: list[Thing] = []
  footprints: list[tuple[float, float, float]] = []  # (x, z, radius) of the things placed so far.
  for _ in range(rng.integers(2, 7)):
    thing, footprint = _random_thing(rng)
    for _ in range(50):
      z = float(rng.uniform(2.5, wall_z - 0.3 - footprint))
      x = float(rng.uniform(-0.45, 0.45)) * z
      if all(math.hypot(x - x2, z - z2) > footprint + r2 + 0.05 for x2, z2, r2 in footprints):
        footprints.append((x, z, footprint))
        things.append(dataclasses.replace(thing, center=(x, thing.center[1], z)))
        break
  return Scene(camera, tuple(things), floor_colour, wall_colour, wall_z, light, ambient)


def render_scene(seed: int, size: int = 64) -> dict[str, Any]:
  """`render(random_scene(seed), size)`, plus the scene itself under ``"scene"``."""
  scene = random_scene(seed)
  return {**render(scene, size), "scene": scene}


def _surfaces(scene: Scene) -> list[tuple[Plane | Thing, int, int, Vec3]]:
  """(shape, semantic class, instance id, colour) of the floor, the wall and each thing."""
  stuff = [
    (Plane((0.0, 0.0, 0.0), (0.0, 1.0, 0.0)), FLOOR, 0, scene.floor_colour),
    (Plane((0.0, 0.0, scene.wall_z), (0.0, 0.0, -1.0)), WALL, 0, scene.wall_colour),
  ]
  return stuff + [(thing, thing.semantic, k + 1, thing.colour) for k, thing in enumerate(scene.things)]


_INTERSECT = {
  Plane: intersect_plane,
  Sphere: intersect_sphere,
  Box: intersect_box,
  Cylinder: intersect_cylinder,
}


def _trace(
  surfaces: list, origins: np.ndarray, directions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Nearest hits of rays (N, 3): t (N,) (inf for none), surface index (N,) (-1 for none), normals (N, 3)."""
  t = np.full(len(directions), np.inf)
  index = np.full(len(directions), -1)
  normals = np.zeros(directions.shape)
  for k, (shape, _, _, _) in enumerate(surfaces):
    t_k, normals_k = _INTERSECT[type(shape)](origins, directions, shape)
    closer = t_k < t
    t[closer], index[closer], normals[closer] = t_k[closer], k, normals_k[closer]
  return t, index, normals


def _nearest(candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The smallest of candidate ray parameters (K, N) above T_MIN (inf for none) and its row (N,)."""
  candidates = np.where(candidates > T_MIN, candidates, np.inf)  # Also maps nan to inf.
  which = candidates.argmin(axis=0)
  return np.take_along_axis(candidates, which[None], axis=0)[0], which


def _positive(t: np.ndarray) -> np.ndarray:
  return np.where(t > T_MIN, t, np.inf)


def _finite(t: np.ndarray) -> np.ndarray:
  return np.where(np.isfinite(t), t, 0.0)


def _normalize(v: np.ndarray) -> np.ndarray:
  return v / np.linalg.norm(v)


def _yaw_rotation(yaw: float) -> np.ndarray:
  """The rotation (3, 3) by `yaw` radians about +y (counter-clockwise seen from above)."""
  c, s = math.cos(yaw), math.sin(yaw)
  return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _random_thing(rng: np.random.Generator) -> tuple[Thing, float]:
  """A random thing resting on the floor at x = z = 0, and the radius of its footprint (m)."""
  thing_class, colour = rng.choice(THING_CLASSES), _colour(rng)
  if thing_class == SPHERE:
    radius = float(rng.uniform(0.3, 0.7))
    return Sphere((0.0, radius, 0.0), radius, colour), radius
  if thing_class == BOX:
    hx, hy, hz = (float(h) for h in rng.uniform(0.2, 0.6, size=3))
    yaw = float(rng.uniform(0.0, math.pi / 2)) if rng.random() < 0.5 else 0.0
    return Box((0.0, hy, 0.0), (hx, hy, hz), yaw, colour), math.hypot(hx, hz)
  radius, height = float(rng.uniform(0.2, 0.5)), float(rng.uniform(0.4, 1.6))
  return Cylinder((0.0, height / 2, 0.0), radius, height, colour), radius


def _colour(rng: np.random.Generator) -> Vec3:
  return tuple(float(c) for c in rng.uniform(0.1, 1.0, size=3))
