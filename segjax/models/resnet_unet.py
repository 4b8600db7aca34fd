"""U-Net with a ResNet encoder, as segmentation_models_pytorch builds `Unet`.

Encoder: a ResNet (`resnet.py`) whose stem (stride 2) and stage1..stage4
(strides 4..32) are the skips. Decoder: five blocks, each upsampling by 2
(nearest neighbour, `layers.upsample_nearest`), concatenating the skip of
that resolution (none for the last) and applying two 3x3 conv-BN-ReLU
layers (the first computed at the low resolution where it can be:
`upconv.py`), with `decoder_features` channels (256, 128, 64, 32, 16); a 3x3
classifier conv on top. With a
ResNet-18 and 11 classes it has 14,329,659 parameters, as SMP's
`Unet("resnet18", classes=11)`. Any input size works (skips and logits are
resized to the exact sizes they meet).

`init_scheme='torchvision'` initialises as SMP does: the encoder as
torchvision's ResNet (`resnet.py`), the decoder's convs He-uniform over fan-in
(`initialize_decoder`), the classifier Glorot-uniform with zero bias
(`initialize_head`); a MobileNetV2 encoder keeps Flax's. The default
'flax' keeps Flax's initialisers everywhere.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.models import backbones
from segjax.models import resnet
from segjax.models.conv import Conv
from segjax.models.layers import batch_norm
from segjax.models.layers import ConvBNReLU
from segjax.models.upconv import UpConcatConvBNReLU


class ResNetUNet(nn.Module):
  """Backbone-encoder U-Net; attributes as `DeepLab`'s where they overlap.

  `backbone` may be any of `backbones.BACKBONES` ('mobilenet_v2' too);
  `kernels` (segjax.kernels: 'auto', 'segjax' or 'xla') picks XLA's ops or
  segjax's formulations, in the backbone too.
  """
  num_classes: int
  backbone: str = 'resnet34'
  deep_stem: bool = False
  avg_down: bool = False
  decoder_features: Sequence[int] = (256, 128, 64, 32, 16)
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  init_scheme: str = 'flax'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernels: str = 'auto'

  @nn.compact
  def __call__(self, images, train=False):
    """[B, H, W, 3] float images -> [B, H, W, num_classes] float32 logits."""
    b, h, w, _ = images.shape
    features = backbones.backbone_of(self)(images, train)
    norm = batch_norm(self, train)
    decoder_init = resnet.kernel_init_kwargs(self.init_scheme, 'fan_in')
    head_init = ({} if self.init_scheme == 'flax' else
                 {'kernel_init': nn.initializers.glorot_uniform()})
    block = functools.partial(ConvBNReLU, kernel=3, norm=norm,
                              kernel_init=decoder_init.get('kernel_init'),
                              dtype=self.dtype, param_dtype=self.param_dtype,
                              kernels=self.kernels)
    skips = [features[k] for k in ('stage3', 'stage2', 'stage1', 'stem')]
    x = features['stage4']
    for i, width in enumerate(self.decoder_features):
      skip = skips[i] if i < len(skips) else None
      size = skip.shape[1:3] if skip is not None else (h, w)
      # = block(...)(concat([upsample_nearest(x, size), skip])), with the
      # same parameters, computed sub-pixel at 2x (upconv.py).
      x = UpConcatConvBNReLU(
          width, norm=norm, kernel_init=decoder_init.get('kernel_init'),
          dtype=self.dtype, param_dtype=self.param_dtype,
          kernels=self.kernels, name=f'decoder{i}_conv1')(x, skip, size)
      x = block(width, name=f'decoder{i}_conv2')(x)
    logits = Conv(self.num_classes, (3, 3), padding=((1, 1), (1, 1)),
                  dtype=self.dtype, param_dtype=self.param_dtype,
                  kernels=self.kernels, name='classifier',
                  **head_init)(x).astype(jnp.float32)
    if logits.shape[1:3] != (h, w):
      logits = jax.image.resize(logits, (b, h, w, self.num_classes),
                                'bilinear')
    return logits
