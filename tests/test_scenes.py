"""The scene renderer against closed-form ray geometry and shading, and the synthetic_scenes TFDS builder."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow_datasets as tfds

from fsq.data import builders, scenes, scenes_builder
from fsq.data.scenes import BOX, CYLINDER, FLOOR, SPHERE, VOID, WALL, Box, Camera, Cylinder, Scene, Sphere

tfds.disable_progress_bar()

RED, GREEN, BLUE = (0.9, 0.1, 0.1), (0.1, 0.9, 0.1), (0.1, 0.1, 0.9)
# Looking straight along +z from 1 m above the floor: with an odd size the centre pixel's ray is the axis.
LEVEL = Camera(position=(0.0, 1.0, 0.0), look_at=(0.0, 1.0, 1.0), fov_deg=60.0)


def centre(output: dict, key: str):
  array = output[key]
  return array[array.shape[0] // 2, array.shape[1] // 2]


def test_sphere_straight_ahead_depth_labels_silhouette_and_shading():
  light = (0.3, 1.0, -2.0)
  scene = Scene(LEVEL, (Sphere((0.0, 1.0, 5.0), 1.0, RED),), light=light, ambient=0.25)
  out = scenes.render(scene, size=33)
  assert centre(out, "depth") == pytest.approx(5.0 - 1.0, rel=1e-6)  # Distance to the centre - radius.
  assert centre(out, "semantic") == SPHERE and centre(out, "instance") == 1
  # The sphere's silhouette subtends asin(r / D) about the axis: in the centre row, the pixels whose ray
  # makes a smaller angle with the axis.
  u = (2 * (np.arange(33) + 0.5) / 33 - 1) * math.tan(math.radians(30))
  np.testing.assert_array_equal(out["instance"][16] == 1, np.abs(u) < math.tan(math.asin(1.0 / 5.0)))
  # Lambert at the front point, whose normal is (0, 0, -1).
  lambert = -light[2] / math.sqrt(sum(c * c for c in light))
  expected = np.round(255 * np.array(RED) * (0.25 + 0.75 * lambert))
  np.testing.assert_array_equal(centre(out, "image"), expected)


def test_nearer_object_occludes_the_farther_one():
  far_sphere, near_box = Sphere((0.0, 1.0, 6.0), 1.0, RED), Box((0.0, 1.0, 3.0), (0.5, 0.5, 0.5), 0.0, GREEN)
  out = scenes.render(Scene(LEVEL, (far_sphere, near_box)), size=33)
  assert centre(out, "depth") == pytest.approx(2.5, rel=1e-6)  # The box's front face.
  assert centre(out, "semantic") == BOX and centre(out, "instance") == 2
  alone = scenes.render(Scene(LEVEL, (far_sphere,)), size=33)
  assert centre(alone, "depth") == pytest.approx(5.0, rel=1e-6) and centre(alone, "instance") == 1


def test_turned_box_and_cylinder_side_and_cap():
  # Turned by 30 degrees, the axis meets the box's local -z face at distance (half size) / cos(30).
  turned = Box((0.0, 1.0, 3.0), (0.5, 0.5, 0.5), math.radians(30), GREEN)
  out = scenes.render(Scene(LEVEL, (turned,)), size=33)
  assert centre(out, "depth") == pytest.approx(3.0 - 0.5 / math.cos(math.radians(30)), rel=1e-6)
  # A long thin box turned by 30 degrees: its local axes are x' = (cos, 0, -sin) and z' = (sin, 0, cos).
  # The centre row's ray (-u, 0, 1) from (0, 1, 0) (right is -x) meets its near face z'.(p - c) = -0.1 at
  # t = (4 cos - 0.1) / (cos - u sin), where |x'.(p - c)| <= 1.
  c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
  out = scenes.render(
    Scene(LEVEL, (Box((0.0, 1.0, 4.0), (1.0, 0.5, 0.1), math.radians(30), GREEN),)), size=33
  )
  u = (2 * (np.arange(33) + 0.5) / 33 - 1) * math.tan(math.radians(30))
  t = (4 * c - 0.1) / (c - u * s)
  on_face = np.abs(-u * t * c - (t - 4.0) * s) <= 1.0
  assert on_face.sum() >= 8 and (out["instance"][16, on_face] == 1).all()
  np.testing.assert_allclose(out["depth"][16, on_face], t[on_face], rtol=1e-6)
  out = scenes.render(Scene(LEVEL, (Cylinder((0.0, 1.0, 4.0), 0.5, 1.0, BLUE),)), size=33)
  assert centre(out, "depth") == pytest.approx(3.5, rel=1e-6) and centre(out, "semantic") == CYLINDER
  # From above, the axis ray ends at the centre of the top cap (y = 1.5): z-depth = its length.
  above = Camera(position=(0.0, 3.0, 0.0), look_at=(0.0, 1.5, 3.0))
  out = scenes.render(Scene(above, (Cylinder((0.0, 1.0, 3.0), 0.5, 1.0, BLUE),)), size=33)
  assert centre(out, "depth") == pytest.approx(math.hypot(1.5, 3.0), rel=1e-6)
  assert centre(out, "semantic") == CYLINDER


def test_floor_and_wall_depths_match_closed_form_plane_intersections():
  height, wall_z, size = 1.5, 8.0, 32
  camera = Camera(position=(0.4, height, 0.0), look_at=(0.4, 0.5, 5.0), fov_deg=50.0)
  out = scenes.render(Scene(camera, (), wall_z=wall_z), size=size)
  pitch = math.atan2(1.0, 5.0)
  v = (1 - 2 * (np.arange(size) + 0.5) / size) * math.tan(math.radians(25))
  # A row's ray goes forward + v up, forward = (0, -sin p, cos p), up = (0, cos p, sin p): y and z parts.
  dy, dz = -math.sin(pitch) + v * math.cos(pitch), math.cos(pitch) + v * math.sin(pitch)
  t_floor = np.where(dy < 0, height / -np.minimum(dy, -1e-12), np.inf)
  t_wall = wall_z / dz
  expected = np.repeat(np.minimum(t_floor, t_wall)[:, None], size, axis=1)
  np.testing.assert_allclose(out["depth"], expected, rtol=1e-6)
  np.testing.assert_array_equal(out["semantic"], np.where(expected < t_wall[:, None], FLOOR, WALL))
  assert {FLOOR, WALL} <= set(np.unique(out["semantic"])) and not out["instance"].any()


def test_rays_that_miss_everything_are_void():
  backwards = Camera(position=(0.0, 1.0, 0.0), look_at=(0.0, 2.0, -1.0))
  out = scenes.render(Scene(backwards, ()), size=9)
  assert out["semantic"][0, 0] == VOID and out["instance"][0, 0] == 0 and np.isinf(out["depth"][0, 0])
  assert not out["image"][0, 0].any()


def test_hard_shadow_under_a_floating_sphere():
  camera = Camera(position=(0.0, 3.0, 0.0), look_at=(0.0, 0.0, 5.0))
  scene = Scene(camera, (Sphere((0.0, 1.5, 5.0), 0.5, RED),), light=(0.0, 1.0, 0.0), ambient=0.3)
  floor = np.array(scene.floor_colour)
  out = scenes.render(scene, size=33)  # The centre pixel sees the floor at (0, 0, 5), under the sphere.
  assert centre(out, "semantic") == FLOOR
  np.testing.assert_array_equal(centre(out, "image"), np.round(255 * floor * 0.3))
  unshadowed = scenes.render(Scene(camera, scene.things, light=(0.0, 1.0, 0.0), shadows=False), size=33)
  np.testing.assert_array_equal(centre(unshadowed, "image"), np.round(255 * floor))


@pytest.mark.parametrize("seed", range(8))
def test_random_scenes_label_every_pixel_consistently_and_shade_in_range(seed):
  scene = scenes.random_scene(seed)
  out = scenes.render(scene, size=32)
  semantic, instance, depth = out["semantic"], out["instance"], out["depth"]
  assert 1 <= len(scene.things) <= 6
  assert np.isin(semantic, scenes.STUFF_CLASSES + scenes.THING_CLASSES).all()  # No VOID.
  assert np.isfinite(depth).all() and depth.min() > 0
  np.testing.assert_array_equal(instance == 0, np.isin(semantic, scenes.STUFF_CLASSES))
  assert set(np.unique(instance)) <= set(range(len(scene.things) + 1))
  for k, thing in enumerate(scene.things, start=1):
    assert (semantic[instance == k] == thing.semantic).all()
  colours = [scene.floor_colour, scene.wall_colour] + [thing.colour for thing in scene.things]
  albedo = np.asarray(colours)[np.where(instance > 0, instance + 1, semantic)]
  image = out["image"].astype(np.float64)
  assert (image >= np.floor(255 * albedo * scene.ambient) - 1e-9).all()
  assert (image <= np.ceil(255 * albedo) + 1e-9).all()


def test_same_seed_same_scene_and_other_seeds_differ():
  first, again, other = scenes.render_scene(3), scenes.render_scene(3), scenes.render_scene(4)
  assert first["scene"] == again["scene"] != other["scene"]
  for key in ("image", "depth", "semantic", "instance"):
    np.testing.assert_array_equal(first[key], again[key])
  assert not np.array_equal(first["image"], other["image"])
  assert not np.array_equal(first["depth"], other["depth"])
  large = scenes.render_scene(3, size=128)
  assert large["image"].shape == (128, 128, 3) and large["depth"].shape == (128, 128)
  assert (large["semantic"] >= 0).all()


def test_tiny_tfds_dataset_holds_the_rendered_scenes(tmp_path):
  builder = builders.prepare("synthetic_scenes/tiny", tmp_path)
  assert builder.info.splits["train"].num_examples == 8 and builder.info.splits["test"].num_examples == 4
  first_seeds = {"train": 0, "test": scenes_builder.TEST_FIRST_SEED}
  for split, first_seed in first_seeds.items():
    source = tfds.data_source("synthetic_scenes/tiny", data_dir=tmp_path, split=split)
    for index in range(len(source)):
      example = source[index]
      assert int(example["seed"]) == first_seed + index
      assert example["image"].shape == (64, 64, 3) and example["image"].dtype == np.uint8
      assert example["depth"].shape == (64, 64) and example["depth"].dtype == np.float32
      for key in ("semantic", "instance"):
        assert example[key].shape == (64, 64) and example[key].dtype == np.int32
      expected = scenes.render_scene(first_seed + index, 64)
      for key in ("image", "depth", "semantic", "instance"):
        np.testing.assert_array_equal(example[key], expected[key])
