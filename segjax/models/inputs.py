"""How images enter a model: one normalisation for every model in segjax."""

import jax.numpy as jnp

# ImageNet statistics, so backbones pretrained with them can be loaded as is.
MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def normalize_images(images, dtype=jnp.float32):
  """[..., H, W, 3] uint8 (or float in [0, 255]) -> normalised `dtype`."""
  images = images.astype(jnp.float32)
  images = (images - jnp.asarray(MEAN_RGB)) / jnp.asarray(STDDEV_RGB)
  return images.astype(dtype)


def model_inputs(images, dtype=jnp.float32):
  """What a train or eval step feeds the model.

  [..., H, W, 3] uint8 images (segjax's default: they cross to the device
  at a quarter of float32's bytes) are normalised here; float images are
  taken as already normalised on the host (the `normalize` augmentation op).
  """
  if images.dtype == jnp.uint8:
    return normalize_images(images, dtype)
  return images.astype(dtype)
