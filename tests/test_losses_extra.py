"""Bootstrapped CE, binary, focal, Tversky and Lovász losses vs float64 NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax import losses

IGNORE = 255


def _case(seed, shape=(2, 6, 7), num_classes=4, ignore_frac=0.2):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, shape)
  labels[rng.random(shape) < ignore_frac] = IGNORE
  logits = rng.normal(size=shape + (num_classes,)) * 2
  return logits, labels


def _softmax(z):
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize('fraction', [0.1, 0.5, 0.99])
def test_bootstrapped_cross_entropy_keeps_the_hardest_pixels(fraction):
  logits, labels = _case(0)
  p = _softmax(logits)
  valid = labels != IGNORE
  pixel = np.where(valid, -np.log(np.take_along_axis(
      p, np.where(valid, labels, 0)[..., None], -1)[..., 0]), 0.0).ravel()
  k = int(fraction * pixel.size)
  order = np.argsort(-pixel, kind='stable')[:k]
  expected = pixel[order].sum() / max(valid.ravel()[order].sum(), 1)
  got = losses.softmax_cross_entropy(jnp.asarray(logits, jnp.float32), labels,
                                     top_k_percent_pixels=fraction)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize('pos_weight', [1.0, 3.0])
def test_binary_cross_entropy_matches_definition(pos_weight):
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 2, (2, 5, 6))
  labels[0, 0] = IGNORE
  x = rng.normal(size=labels.shape) * 4
  s = 1 / (1 + np.exp(-x))
  valid = labels != IGNORE
  y = (labels == 1).astype(float)
  per = -(pos_weight * y * np.log(s) + (1 - y) * np.log(1 - s))
  expected = per[valid].mean()
  got = losses.sigmoid_binary_cross_entropy(
      jnp.asarray(x[..., None], jnp.float32), labels, pos_weight=pos_weight)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_binary_dice_matches_definition():
  rng = np.random.default_rng(2)
  labels = rng.integers(0, 2, (3, 4, 5))
  labels[1, 1] = IGNORE
  x = rng.normal(size=labels.shape)
  valid = labels != IGNORE
  p = 1 / (1 + np.exp(-x)) * valid
  y = (labels == 1) * valid
  expected = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
  got = losses.binary_dice_loss(jnp.asarray(x, jnp.float32), labels)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize('gamma,alpha', [(0.0, None), (2.0, None),
                                         (1.5, [0.1, 0.2, 0.3, 0.4])])
def test_focal_loss_matches_definition(gamma, alpha):
  logits, labels = _case(3)
  p = _softmax(logits)
  total, count = 0.0, 0
  for idx in np.ndindex(labels.shape):
    y = labels[idx]
    if y == IGNORE:
      continue
    a = 1.0 if alpha is None else alpha[y]
    total += -a * (1 - p[idx][y]) ** gamma * np.log(p[idx][y])
    count += 1
  got = losses.softmax_focal_loss(jnp.asarray(logits, jnp.float32), labels,
                                  gamma=gamma, alpha=alpha)
  np.testing.assert_allclose(got, total / count, rtol=1e-5)


@pytest.mark.parametrize('alpha,beta', [(0.5, 0.5), (0.3, 0.7)])
def test_tversky_loss_matches_definition(alpha, beta):
  logits, labels = _case(4)
  labels = np.where(labels == 3, IGNORE, labels)
  p = _softmax(logits)
  valid = labels != IGNORE
  pred = logits.argmax(-1)
  terms = []
  for c in range(4):
    y = (labels == c) & valid
    pc = p[..., c] * valid
    if not (y.any() or ((pred == c) & valid).any()):
      continue
    tp, fp, fn = (pc * y).sum(), (pc * ~y).sum(), ((1 - pc) * y).sum()
    terms.append(1 - (tp + 1) / (tp + alpha * fp + beta * fn + 1))
  got = losses.tversky_loss(jnp.asarray(logits, jnp.float32), labels,
                            alpha=alpha, beta=beta)
  np.testing.assert_allclose(got, np.mean(terms), rtol=1e-5)


def _np_lovasz_flat(p, labels):
  """The reference algorithm on valid pixels only: p [N, C], labels [N]."""
  terms = []
  for c in range(p.shape[1]):
    fg = (labels == c).astype(float)
    if fg.sum() == 0:
      continue
    errors = np.abs(fg - p[:, c])
    order = np.argsort(-errors, kind='stable')
    e, f = errors[order], fg[order]
    g = f.sum()
    inter = g - np.cumsum(f)
    union = g + np.cumsum(1 - f)
    jac = 1 - inter / union
    jac[1:] = jac[1:] - jac[:-1]
    terms.append(np.dot(e, jac))
  return np.mean(terms) if terms else 0.0


@pytest.mark.parametrize('per_image', [False, True])
def test_lovasz_softmax_matches_the_reference_algorithm(per_image):
  logits, labels = _case(5, shape=(3, 5, 6))
  labels[2] = IGNORE  # An image with nothing valid.
  p = _softmax(logits)
  if per_image:
    expected = np.mean([
        _np_lovasz_flat(p[i][labels[i] != IGNORE], labels[i][labels[i] != IGNORE])
        for i in range(3)])
  else:
    valid = labels != IGNORE
    expected = _np_lovasz_flat(p[valid], labels[valid])
  got = losses.lovasz_softmax_loss(jnp.asarray(logits, jnp.float32), labels,
                                   per_image=per_image)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def _inputs_for(name, labels, logits):
  if name.startswith('binary'):
    return logits[..., 0], np.where(labels == IGNORE, IGNORE, labels % 2)
  return logits, labels


@pytest.mark.parametrize('name', sorted(losses.combined.LOSSES))
def test_every_loss_is_zero_with_zero_gradient_when_all_pixels_are_ignored(
    name):
  fn = losses.combined.LOSSES[name]
  labels = np.full((2, 4, 4), IGNORE)
  logits = jnp.asarray(np.random.default_rng(6).normal(size=(2, 4, 4, 3)),
                       jnp.float32)
  x, y = _inputs_for(name, labels, logits)
  value, grad = jax.value_and_grad(lambda z: fn(z, y))(x)
  assert value == 0.0
  np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize('name', sorted(losses.combined.LOSSES))
def test_every_loss_has_finite_gradients_on_perfect_predictions(name):
  fn = losses.combined.LOSSES[name]
  labels = np.random.default_rng(7).integers(0, 3, (2, 4, 4))
  logits = jnp.asarray(np.eye(3)[labels] * 60.0 - 30.0, jnp.float32)
  x, y = _inputs_for(name, labels, logits)
  if name.startswith('binary'):
    x = jnp.where(y == 1, 60.0, -60.0)
  value, grad = jax.value_and_grad(lambda z: fn(z, y))(x)
  assert np.isfinite(value) and np.all(np.isfinite(grad))
  assert value < 1e-3
