"""Compares segjax's ResNet with torchvision's on the reference outputs
written by make_torchvision_resnet_reference.py; prints one JSON line with
the largest absolute difference per stage (NCHW -> NHWC)."""

import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from segjax.models import pretrained
from segjax.models.resnet import ResNet


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--ref', required=True)
  a = ap.parse_args()
  ref = np.load(os.path.join(a.ref, 'outputs.npz'))
  depth = int(ref['depth'])
  image = ref['image'].transpose(0, 2, 3, 1)
  deep = bool(ref['deep'])
  model = ResNet(depth=depth, deep_stem=deep, avg_down=deep)
  variables = model.init(jax.random.PRNGKey(0), jnp.asarray(image))
  variables, report = pretrained.load_pretrained(
      variables, os.path.join(a.ref, f'resnet{depth}.safetensors'),
      source=str(ref['source']))
  out = model.apply(variables, jnp.asarray(image), train=False)
  result = {'depth': depth, 'source': str(ref['source']), 'deep': deep,
            'loaded': report['loaded'],
            'missing': report['missing'], 'unexpected': report['unexpected'],
            'shape_mismatch': report['shape_mismatch']}
  for name in ('stem', 'stage1', 'stage2', 'stage3', 'stage4'):
    expected = ref[name].transpose(0, 2, 3, 1)
    got = np.asarray(out[name])
    assert got.shape == expected.shape, (name, got.shape, expected.shape)
    result[f'{name}_max_abs_diff'] = float(np.abs(got - expected).max())
    result[f'{name}_max_abs'] = float(np.abs(expected).max())
  print(json.dumps(result))


if __name__ == '__main__':
  main()
