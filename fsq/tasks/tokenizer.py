"""The VQGAN tokenizer task (MaskGIT stage I): reconstruction, perceptual and GAN losses, R1, parameter EMA.

The perceptual loss is ``perceptual``: "resnet50", MaskGIT's (the squared difference of ImageNet ResNet-50
feature maps, ``fsq.models.resnet``), or "lpips" (LPIPS-VGG16, ``fsq.models.lpips``). Each step updates
the autoencoder (generator) on ``l2_weight * L2 + perceptual_weight * perceptual +
adversarial_weight * non-saturating GAN + quantizer loss`` with the current discriminator, then the
discriminator on the logistic loss of real images against the (fixed) reconstructions plus
``r1_weight * R1``. Before ``disc_start_step`` the GAN term is off and the discriminator and its optimizer
state stay untouched. Evaluation and reconstructions use the exponential moving average of the
generator's parameters.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from fsq import losses, weights
from fsq.models import resnet
from fsq.models.discriminator import Discriminator
from fsq.models.lpips import LPIPS, pretrained_params
from fsq.tasks.autoencoder import _SCALAR_AUX, AutoencoderTask
from fsq.train.state import accumulate


def _lpips(params, images, targets, dtype=jnp.float32):
  return jnp.mean(LPIPS(jnp.dtype(dtype)).apply({"params": params}, images, targets))


# name -> (the weights, loaded on the host; loss(weights, images, targets, dtype) -> float32 scalar)
PERCEPTUAL_LOSSES = {
  "lpips": (pretrained_params, _lpips),
  "resnet50": (lambda: weights.load("resnet50_imagenet"), resnet.perceptual_loss),
}


@flax.struct.dataclass
class GANState:
  """Generator (``params``, ``model_state``, ``opt_state``), its EMA, and the discriminator's params
  and optimizer state."""

  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any
  ema_params: Any
  disc_params: Any
  disc_opt_state: Any
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  disc_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)


@dataclasses.dataclass(frozen=True)
class TokenizerTask(AutoencoderTask):
  """Stage I of MaskGIT, on images in [-1, 1].

  MaskGIT's tokenizer sees pixels in [0, 1] with weights L2 1, perceptual 0.1, adversarial 0.1, R1 10.
  Pixels here span twice that range, so the squared error is 4x larger and the discriminator's input
  gradients 2x smaller (R1 4x smaller) for the same images; the defaults L2 0.25 and R1 40 give MaskGIT's
  balance (the perceptual and GAN terms do not depend on the pixel scale). EMA 0.999; both optimizers
  are Adam(b1=0, b2=0.99) at 1e-4 in MaskGIT.
  """

  discriminator: Discriminator
  disc_optimizer: optax.GradientTransformation
  l2_weight: float = 0.25
  perceptual_weight: float = 0.1
  adversarial_weight: float = 0.1
  r1_weight: float = 40.0
  disc_start_step: int = 0
  ema_decay: float = 0.999
  perceptual: str = "lpips"
  perceptual_dtype: str = "float32"  # the perceptual network's activations (its loss is float32)

  def __post_init__(self):
    if self.perceptual not in PERCEPTUAL_LOSSES:
      raise ValueError(f"perceptual must be one of {tuple(PERCEPTUAL_LOSSES)}, got {self.perceptual!r}")

  def constants(self) -> dict:
    """The perceptual network's weights (fetched by scripts/fetch_weights.py) when its loss is on."""
    return {"perceptual": PERCEPTUAL_LOSSES[self.perceptual][0]()} if self.perceptual_weight else {}

  def init(self, rng: jax.Array, batch: dict) -> GANState:
    generator_rng, disc_rng = jax.random.split(rng)
    variables = dict(self.model.init({"params": generator_rng}, batch["image"], train=False))
    params = variables.pop("params")
    disc_params = self.discriminator.init(disc_rng, batch["image"])["params"]
    return GANState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      model_state=variables,
      opt_state=self.optimizer.init(params),
      ema_params=params,
      disc_params=disc_params,
      disc_opt_state=self.disc_optimizer.init(disc_params),
      tx=self.optimizer,
      disc_tx=self.disc_optimizer,
    )

  def eval_variables(self, state: GANState) -> dict:
    return {"params": state.ema_params, **state.model_state}

  def train_step(
    self, state: GANState, batch: dict, rng: jax.Array, constants: dict
  ) -> tuple[GANState, dict]:
    gan_on = state.step >= self.disc_start_step

    def generator_loss(params, model_state, images, rng):
      (recon, aux), model_state = self.model.apply(
        {"params": params, **model_state},
        images,
        train=True,
        mutable=list(model_state),
        rngs={"vq": rng},
      )
      recon = recon.astype(jnp.float32)
      l2 = jnp.mean(jnp.square(recon - images))
      perceptual = (
        PERCEPTUAL_LOSSES[self.perceptual][1](constants["perceptual"], recon, images, self.perceptual_dtype)
        if self.perceptual_weight
        else 0.0
      )
      adversarial = (
        losses.generator_loss(self.discriminator.apply({"params": state.disc_params}, recon))
        if self.adversarial_weight
        else 0.0
      )
      loss = (
        self.l2_weight * l2
        + self.perceptual_weight * perceptual
        + jnp.where(gan_on, self.adversarial_weight, 0.0) * adversarial
        + aux.get("loss", 0.0)
      )
      metrics = {"mse": l2, "perceptual": perceptual, "generator_adversarial": adversarial}
      metrics.update({f"quantizer/{k}": aux[k] for k in _SCALAR_AUX if k in aux})
      return loss, (metrics, dict(model_state), recon)

    def disc_loss(disc_params, images, recon):
      def disc(x):
        return self.discriminator.apply({"params": disc_params}, x)

      logistic = losses.discriminator_loss(disc(images), disc(jax.lax.stop_gradient(recon)))
      r1 = losses.r1_penalty(disc, images)
      return logistic + self.r1_weight * r1, (logistic, r1)

    def gradients(model_state, micro, micro_rng):
      """Both players' gradients at the current parameters on one (micro-)batch."""
      images = micro["image"]
      (loss, (metrics, model_state, recon)), grads = jax.value_and_grad(generator_loss, has_aux=True)(
        state.params, model_state, images, micro_rng
      )
      if self.adversarial_weight:
        (_, (logistic, r1)), d_grads = jax.value_and_grad(disc_loss, has_aux=True)(
          state.disc_params, images, recon
        )
      else:  # no GAN at all: the discriminator is never run
        logistic = r1 = jnp.zeros(())
        d_grads = jax.tree.map(jnp.zeros_like, state.disc_params)
      metrics.update(loss=loss, discriminator_loss=logistic, r1=r1)
      return (grads, d_grads, metrics), model_state

    (grads, d_grads, metrics), model_state = accumulate(
      gradients, state.model_state, batch, rng, self.accumulation_steps
    )
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if self.adversarial_weight:
      d_updates, d_opt_state = state.disc_tx.update(d_grads, state.disc_opt_state, state.disc_params)
      d_params = optax.apply_updates(state.disc_params, d_updates)
    else:
      d_params, d_opt_state = state.disc_params, state.disc_opt_state

    def keep_unless_on(new, old):
      return jax.tree.map(lambda n, o: jnp.where(gan_on, n, o), new, old)

    ema = jax.tree.map(lambda e, p: self.ema_decay * e + (1 - self.ema_decay) * p, state.ema_params, params)
    new_state = state.replace(
      step=state.step + 1,
      params=params,
      model_state=model_state,
      opt_state=opt_state,
      ema_params=ema,
      disc_params=keep_unless_on(d_params, state.disc_params),
      disc_opt_state=keep_unless_on(d_opt_state, state.disc_opt_state),
    )
    metrics.update(
      l2_grads=optax.tree.norm(grads),
      l2_params=optax.tree.norm(params),
      l2_disc_grads=optax.tree.norm(d_grads),
    )
    return new_state, metrics
