"""A weighted sum of losses, configured by name."""

from segjax.losses.cross_entropy import softmax_cross_entropy
from segjax.losses.dice import dice_loss

LOSSES = {
    'cross_entropy': softmax_cross_entropy,
    'dice': dice_loss,
}


def build_loss(loss_config, ignore_index=255):
  """Builds `loss_fn(logits, labels) -> (total, {name: term})` from a config.

  Args:
    loss_config: mapping from loss name (a key of `LOSSES`) to its weight,
      e.g. `{'cross_entropy': 1.0, 'dice': 0.5}`. Zero weights are skipped.
    ignore_index: passed to every term.

  Returns:
    A jittable function of (logits [..., H, W, C], labels [..., H, W]) that
    returns the weighted float32 sum and a dict of the unweighted terms.
  """
  terms = dict(loss_config)
  unknown = sorted(set(terms) - set(LOSSES))
  if unknown:
    raise ValueError(f'config.loss names unknown loss(es) {unknown}; '
                     f'known: {sorted(LOSSES)}.')
  terms = {k: float(w) for k, w in terms.items() if w}
  if not terms:
    raise ValueError('config.loss gives every loss a weight of 0.')

  def loss_fn(logits, labels):
    values = {name: LOSSES[name](logits, labels, ignore_index=ignore_index)
              for name in terms}
    total = sum(terms[name] * values[name] for name in terms)
    return total, values

  return loss_fn
