"""Writes a torchvision (or timm) ResNet checkpoint and its stage outputs,
for checking `segjax.models.load_pretrained` against PyTorch itself.

Run with the peers' Python (PyTorch is not a segjax dependency):
  ~/.venvs/peer/bin/python tests/reference/make_torchvision_resnet_reference.py \
      --depth 50 --out /tmp/resnet50_ref
then compare in segjax's environment:
  python tests/reference/compare_torchvision_resnet.py --ref /tmp/resnet50_ref
`--timm resnet50d` uses timm's model instead (deep stem, average-pool
shortcuts); the comparison then builds ResNet(deep_stem=True, avg_down=True).

The network is randomly initialised (nothing is downloaded), with batch-norm
statistics and affine parameters randomised so that every term matters.
"""

import argparse
import os

import numpy as np
from safetensors.torch import save_file
import torch
import torchvision


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--depth', type=int, default=50)
  ap.add_argument('--out', required=True)
  ap.add_argument('--height', type=int, default=67)
  ap.add_argument('--width', type=int, default=93)
  ap.add_argument('--timm', default=None, help='a timm model, e.g. resnet50d')
  a = ap.parse_args()
  torch.manual_seed(0)
  if a.timm:
    import timm  # pylint: disable=g-import-not-at-top
    net = timm.create_model(a.timm, pretrained=False).eval()
    net.relu = net.act1
  else:
    net = getattr(torchvision.models, f'resnet{a.depth}')(weights=None).eval()
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.uniform_(-0.5, 0.5)
        m.running_var.uniform_(0.5, 2.0)
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.2, 0.2)
  image = torch.from_numpy(
      np.random.default_rng(0).normal(size=(2, 3, a.height, a.width))
      .astype(np.float32))
  with torch.no_grad():
    stem = net.relu(net.bn1(net.conv1(image)))
    x1 = net.layer1(net.maxpool(stem))
    x2 = net.layer2(x1)
    x3 = net.layer3(x2)
    x4 = net.layer4(x3)
  os.makedirs(a.out, exist_ok=True)
  save_file({k: v.contiguous() for k, v in net.state_dict().items()},
            os.path.join(a.out, f'resnet{a.depth}.safetensors'))
  outputs = {'image': image, 'stem': stem, 'stage1': x1, 'stage2': x2,
             'stage3': x3, 'stage4': x4}
  np.savez(os.path.join(a.out, 'outputs.npz'), depth=a.depth,
           source='timm' if a.timm else 'torchvision',
           deep=bool(a.timm and a.timm.endswith('d')),
           **{k: v.numpy() for k, v in outputs.items()})
  print('wrote', a.out, {k: tuple(v.shape) for k, v in outputs.items()})


if __name__ == '__main__':
  main()
