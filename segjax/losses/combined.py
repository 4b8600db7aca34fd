"""A weighted sum of losses, configured by name."""

import inspect

from segjax.losses.binary import binary_dice_loss
from segjax.losses.binary import sigmoid_binary_cross_entropy
from segjax.losses.cross_entropy import softmax_cross_entropy
from segjax.losses.dice import dice_loss
from segjax.losses.focal import softmax_focal_loss
from segjax.losses.focal import tversky_loss
from segjax.losses.lovasz import lovasz_softmax_loss

LOSSES = {
    'cross_entropy': softmax_cross_entropy,
    'dice': dice_loss,
    'focal': softmax_focal_loss,
    'tversky': tversky_loss,
    'lovasz': lovasz_softmax_loss,
    'binary_cross_entropy': sigmoid_binary_cross_entropy,
    'binary_dice': binary_dice_loss,
}

# The losses of one sigmoid logit per pixel, which a binary task
# (`config.binary`, segjax/tasks/binary.py) can use.
BINARY_LOSSES = frozenset({'binary_cross_entropy', 'binary_dice'})


def build_loss(loss_config, ignore_index=255):
  """Builds `loss_fn(logits, labels) -> (total, {name: term})` from a config.

  Args:
    loss_config: mapping from loss name (a key of `LOSSES`) to either its
      weight, or a mapping with 'weight' (default 1) and the loss's keyword
      arguments, e.g. `{'cross_entropy': 1.0, 'dice': 0.5}` or
      `{'cross_entropy': {'weight': 1.0, 'top_k_percent_pixels': 0.2},
        'focal': {'weight': 0.5, 'gamma': 2.0}}`. Zero weights are skipped.
    ignore_index: passed to every term.

  Returns:
    A jittable function of (logits, labels) that returns the weighted float32
    sum and a dict of the unweighted terms. `labels` may also be a batch
    dict holding them under 'labels' (what the train step passes).

  Raises:
    ValueError naming an unknown loss or an argument a loss does not take.
  """
  terms = {}
  for name, value in dict(loss_config).items():
    if name not in LOSSES:
      raise ValueError(f'config.loss names unknown loss {name!r}; known: '
                       f'{sorted(LOSSES)}.')
    if hasattr(value, 'keys'):  # A dict or an ml_collections.ConfigDict.
      kwargs = dict(value)
      weight = float(kwargs.pop('weight', 1.0))
    else:
      weight, kwargs = float(value), {}
    # Its keyword-only options, less ignore_index, which comes from
    # config.data for every term alike.
    accepted = [p.name for p in inspect.signature(LOSSES[name]).parameters
                .values() if p.kind == p.KEYWORD_ONLY and
                p.name != 'ignore_index']
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
      raise ValueError(f'config.loss.{name} has argument(s) {unknown}; '
                       f'{name!r} takes {sorted(accepted)}.')
    if weight:
      terms[name] = (weight, kwargs)
  if not terms:
    raise ValueError('config.loss gives every loss a weight of 0.')

  def loss_fn(logits, labels):
    if isinstance(labels, dict):
      labels = labels['labels']
    values = {name: LOSSES[name](logits, labels, ignore_index=ignore_index,
                                 **kwargs)
              for name, (_, kwargs) in terms.items()}
    total = sum(terms[name][0] * values[name] for name in terms)
    return total, values

  return loss_fn
