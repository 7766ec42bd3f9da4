r"""Renders camera images into a low-dim robomimic file from its stored states (robomimic's
``dataset_states_to_obs`` idea), without collecting again.

  python -m ebt_jax.render --in=lift/ph/low_dim_v15.hdf5 --out=lift_image84.hdf5 \
      [--image_keys=agentview_image,robot0_eye_in_hand_image] [--height=84 --width=84]

For each demo the episode's model (``model_file``) is loaded, every stored state is set in turn and each
camera is rendered (``ebt_jax.envs.robosuite_env.render_cameras``: upright uint8, as robomimic's image
datasets store them), in the child renderer of ``evaluation.offscreen``: the main job renders built-in image
demos in a process that runs XLA, where Mesa's EGL context returns stale or dark frames. The output is the input with ``obs/<camera>_image`` [T, H, W, 3] uint8 added to
every demo (gzip, one chunk per frame) and the env_args of an image dataset; everything else is copied
unchanged. Written to ``<out>.tmp`` and renamed, so a killed run leaves no partial file.

Rendering uses MuJoCo's offscreen GL context, EGL on Linux (robosuite's default; Mesa's libEGL, part of
most Linux images, renders in software without a GPU: ~0.08 s per 84x84 frame on this 2-core CPU beside
training runs).
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import h5py
import numpy as np
from absl import flags, logging

from ebt_jax import cli, paths, progress
from ebt_jax.data import robomimic_hdf5
from ebt_jax.envs import robosuite_env
from ebt_jax.errors import DatasetError
from ebt_jax.evaluation import offscreen

DEFAULT_IMAGE_KEYS = ("agentview_image", "robot0_eye_in_hand_image")


def render_dataset(in_path: str, out_path: str, image_keys: Sequence[str] = DEFAULT_IMAGE_KEYS, height: int = 84,
                   width: int = 84, reflections: bool = True) -> None:
  """Writes ``in_path`` plus rendered ``obs/<image key>`` frames to ``out_path`` (module docstring).

  ``reflections`` False draws without MuJoCo's reflection pass (~3x faster on a CPU;
  ``robosuite_env.render_cameras``) and records that in the output's ``env_args``, so that evaluating a
  policy trained on the file draws its frames the same way.

  Raises:
    DatasetError: the input is not a robomimic file with ``env_args``, a demo lacks ``states`` or its
      ``model_file``, or it already has one of the image keys.
    ValueError: an image key that names no camera of the env.
  """
  image_keys = tuple(image_keys)
  with robomimic_hdf5.open_demo_file(in_path, "pass a robomimic .hdf5 file with states (--in)") as fin:
    raw_args = fin["data"].attrs.get("env_args")
    if raw_args is None:
      raise DatasetError(f"{in_path}: 'data' has no env_args attribute: the env to render in is unknown")
    env_args = robomimic_hdf5.parse_env_args(in_path, raw_args)
    names = sorted(fin["data"].keys(), key=robomimic_hdf5.demo_sort_key)
    for name in names:
      g = fin["data"][name]
      if "states" not in g or not g.attrs.get("model_file"):
        raise DatasetError(f"{in_path}: demo '{name}' has no 'states' or no 'model_file' attribute: nothing to "
                           "render from")
      present = [k for k in image_keys if k in g.get("obs", {})]
      if present:
        raise DatasetError(f"{in_path}: demo '{name}' already has image keys {present}")
    out_env_args = robosuite_env.camera_env_args(env_args, image_keys, height, width, reflections)
    renderer = offscreen.Renderer(out_env_args)
    for key in image_keys:
      if robosuite_env.camera_name(key) not in renderer.cameras:
        renderer.close()
        raise ValueError(f"image key {key!r}: the env has no camera {robosuite_env.camera_name(key)!r} "
                         f"(cameras: {sorted(renderer.cameras)})")
    tmp = out_path + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with h5py.File(tmp, "w") as fout:
      for key in fin.keys():
        fin.copy(fin[key], fout, name=key)
      for key, value in fin.attrs.items():
        fout.attrs[key] = value
      fout["data"].attrs["env_args"] = json.dumps(out_env_args)
      with progress.bar(len(names), f"rendering {', '.join(image_keys)}", "demo") as bar:
        for done, name in enumerate(names, 1):
          g = fin["data"][name]
          states = np.asarray(g["states"])
          xml = robomimic_hdf5.model_file_of(g)  # loaded once per demo, before its first camera
          frames = {}
          for i, k in enumerate(image_keys):
            frames[k] = renderer.states(xml if i == 0 else None, states, robosuite_env.camera_name(k), (height, width))
          for k, v in frames.items():
            fout["data"][name].create_dataset(f"obs/{k}", data=v, chunks=(1, height, width, 3), compression="gzip",
                                              compression_opts=4)
          progress.advance(bar, done)
    os.replace(tmp, out_path)
  renderer.close()
  logging.info("wrote %s: %d demos with %s at %dx%d", out_path, len(names), list(image_keys), height, width)


def rendered_path(low_dim_path: str, image_keys: Sequence[str], height: int, width: int,
                  reflections: bool = True) -> str:
  """The cache name of ``low_dim_path`` rendered with these cameras:
  ``<stem>_img<H>x<W>_<cameras>[_noreflect].hdf5``."""
  stem = os.path.splitext(low_dim_path)[0]
  cams = "+".join(robosuite_env.camera_name(k) for k in image_keys)
  return f"{stem}_img{height}x{width}_{cams}{'' if reflections else '_noreflect'}.hdf5"


def cached_rendered(low_dim_path: str, image_keys: Sequence[str], height: int, width: int,
                    reflections: bool = True) -> str:
  """``rendered_path`` of a (built-in, cached) low-dim file, rendering it first if it is not there yet."""
  path = rendered_path(low_dim_path, image_keys, height, width, reflections)

  def make():
    logging.info("rendering %s into %s (once; ~0.08 s per frame and camera on a CPU)", low_dim_path, path)
    render_dataset(low_dim_path, path, image_keys, height, width, reflections)

  return paths.make_once(path, make)  # concurrent jobs render it once


def main(argv):
  del argv  # cli.run refuses positional arguments
  f = flags.FLAGS
  render_dataset(getattr(f, "in"), f.out, f.image_keys, f.height, f.width, f.reflections)


def define_flags() -> None:
  """The CLI's flags (absl validators: every bad value reported at parse time)."""
  flags.DEFINE_string("in", None, "Input robomimic .hdf5 with states and model_file per demo.", required=True)
  flags.DEFINE_string("out", None, "Output .hdf5 (must be writable).", required=True)
  flags.DEFINE_list("image_keys", list(DEFAULT_IMAGE_KEYS), "Camera observation keys (<camera>_image).")
  flags.DEFINE_integer("height", 84, "Frame height, px.")
  flags.DEFINE_integer("width", 84, "Frame width, px.")
  flags.DEFINE_bool("reflections", True, "MuJoCo's reflection pass (robomimic's frames have it); "
                    "--noreflections renders ~3x faster on a CPU and marks the file so.")
  for name in ("height", "width"):
    cli.at_least(name, 1)
  cli.output_file("out")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
