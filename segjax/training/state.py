"""The training state pytree, created directly in its target sharding."""

from typing import Any

import flax
import jax
import jax.numpy as jnp

from segjax.parallel import sharding as sharding_lib


@flax.struct.dataclass
class TrainState:
  """Everything a train step reads and writes; nothing else is hidden.

  Attributes:
    step: int32 scalar, number of updates applied.
    params: model parameters.
    batch_stats: batch-norm running statistics ({} for models without).
    opt_state: optax state.
    rng: [2] uint32 PRNG key; per-step keys are `fold_in(rng, step)`.
    ema_params, ema_batch_stats: exponential moving averages of params and
      batch_stats ({} when the run keeps no EMA).
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  ema_params: Any = flax.struct.field(default_factory=dict)
  ema_batch_stats: Any = flax.struct.field(default_factory=dict)

  def variables(self, ema=False):
    """The model variables to evaluate: raw, or the EMA ones."""
    if ema:
      return {'params': self.ema_params, 'batch_stats': self.ema_batch_stats}
    return {'params': self.params, 'batch_stats': self.batch_stats}


def init_variables(model, image_shape, rng):
  """The model's {'params', 'batch_stats'} for [1, *image_shape] images."""
  images = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
  variables = model.init({'params': rng}, images, train=False)
  return {'params': variables['params'],
          'batch_stats': variables.get('batch_stats', {})}


def make_init_fn(model, tx, image_shape, ema=False):
  """`rng -> TrainState` for a model taking [1, *image_shape] images."""

  def init_fn(rng):
    params_rng, state_rng = jax.random.split(rng)
    variables = init_variables(model, image_shape, params_rng)
    return from_variables(variables, tx, state_rng, ema)

  return init_fn


def from_variables(variables, tx, rng, ema=False):
  """A step-0 TrainState around given model variables (e.g. pretrained)."""
  params, batch_stats = variables['params'], variables['batch_stats']
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=batch_stats,
      opt_state=tx.init(params),
      rng=rng,
      # Copies, not aliases: the step donates the state's buffers.
      ema_params=jax.tree.map(jnp.copy, params) if ema else {},
      ema_batch_stats=jax.tree.map(jnp.copy, batch_stats) if ema else {},
  )


def state_shardings(abstract_state, mesh, fsdp_min_size=2**14):
  """Sharding of every state leaf: replicated, or split over 'fsdp' when the
  mesh has that axis (`sharding.state_sharding`)."""
  return jax.tree.map(
      lambda x: sharding_lib.state_sharding(x, mesh, fsdp_min_size),
      abstract_state)


def create_train_state(model, tx, image_shape, rng, mesh, shardings=None,
                       ema=False, fsdp_min_size=2**14):
  """Initialises the state already laid out on `mesh`.

  The shapes come from `jax.eval_shape` (no compute), the shardings from
  them, and `jax.jit(init, out_shardings=...)` writes each leaf straight into
  place, so no host ever holds an unsharded copy of a large model.

  Args:
    shardings: the state's shardings when the caller already has them (from
      `abstract_state`), which skips tracing `init` a second time.

  Returns:
    (state, shardings): the TrainState and the matching pytree of shardings.
  """
  init_fn = make_init_fn(model, tx, image_shape, ema)
  if shardings is None:
    shardings = state_shardings(jax.eval_shape(init_fn, rng), mesh,
                                fsdp_min_size)
  state = jax.jit(init_fn, out_shardings=shardings)(rng)
  return state, shardings


def abstract_state(model, tx, image_shape, mesh, ema=False,
                   fsdp_min_size=2**14):
  """ShapeDtypeStructs (with shardings) of the state: a restore target."""
  init_fn = make_init_fn(model, tx, image_shape, ema)
  abstract = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
  shardings = state_shardings(abstract, mesh, fsdp_min_size)
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract, shardings)


def count_params(params):
  return sum(int(x.size) for x in jax.tree.leaves(params))
