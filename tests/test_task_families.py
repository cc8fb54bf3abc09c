"""The task contract and registry (fsq/tasks/base.py): every family keeps the contract, and a new family is
one registry entry away from the config check, training and evaluation's metric choice."""

import jax
import pytest

from configs.maskgit import get_config as maskgit_config
from configs.uvim import get_config as uvim_config
from fsq.tasks import base, build_abstract_task, build_autoencoder_task
from fsq.tasks.base import FAMILIES, METRICS, Task, TaskFamily, family_of
from fsq.tasks.checks import check_conv
from fsq.tasks.validate import validate_config

CONFIGS = {  # one CPU config of each family
  "autoencoder": lambda: _autoencoder(),
  "tokenizer": lambda: maskgit_config("stage=tokenizer,run=cpu,quantizer=fsq"),
  "transformer": lambda: maskgit_config("stage=transformer,run=cpu,quantizer=fsq"),
  "uvim_oracle": lambda: uvim_config("stage=oracle,task=depth,quantizer=fsq,run=cpu"),
  "uvim_lm": lambda: uvim_config("stage=lm,task=depth,quantizer=fsq,run=cpu"),
}


def _autoencoder():
  from configs.autoencoder import get_config

  return get_config("quantizer=fsq")


def test_every_family_has_a_config_and_builds_a_task_that_keeps_the_contract():
  assert set(CONFIGS) == set(FAMILIES)
  for name, make in CONFIGS.items():
    config = make()
    assert config.task == name and family_of(config).name == name
    validate_config(config, devices=False)
    task = build_abstract_task(config)  # a stage II family's frozen stage I as shapes: no checkpoint
    assert isinstance(task, Task), name
    size, groups = task.codebook_shape
    assert size > 1 and groups >= 1


def test_metrics_apply_by_family_and_uvim_task():
  expected = {
    "autoencoder": ("rfid", "train_usage"),
    "tokenizer": ("rfid", "train_usage"),
    "transformer": ("fid", "compression"),
    "uvim_oracle": (),
    "uvim_lm": ("dense_native",),
  }
  for name, make in CONFIGS.items():
    assert FAMILIES[name].metrics(make()) == expected[name]
  colorization = uvim_config("stage=lm,task=colorization,quantizer=fsq,run=cpu")
  assert family_of(colorization).metrics(colorization) == ("color_fid",)
  used = {m for name, make in CONFIGS.items() for m in FAMILIES[name].metrics(make())}
  assert used | {"color_fid"} == set(METRICS)  # every metric applies somewhere


def test_stage_two_families_name_a_stage_one_with_frozen_parameters():
  assert {f.name: f.stage_one for f in FAMILIES.values() if f.stage_one} == {
    "transformer": "tokenizer",
    "uvim_lm": "uvim_oracle",
  }
  assert FAMILIES["tokenizer"].frozen_params == "ema_params"  # MaskGIT freezes the EMA tokenizer
  assert FAMILIES["uvim_oracle"].frozen_params == "params"


def test_bad_task_names_and_registrations_are_refused():
  config = maskgit_config("stage=tokenizer,run=cpu,quantizer=fsq")
  config.task = "tokeniser"
  with pytest.raises(ValueError, match=r"config.task must be one of \('autoencoder', .*got 'tokeniser'"):
    validate_config(config, devices=False)
  with pytest.raises(ValueError, match="task family 'tokenizer' is registered already"):
    base.register(FAMILIES["tokenizer"])
  orphan = TaskFamily("stage_two", build_autoencoder_task, check_conv, stage_one="uvim_lm")
  with pytest.raises(
    ValueError, match="its stage I 'uvim_lm' must be a registered family with frozen_params"
  ):
    base.register(orphan)
  unknown = TaskFamily(
    "stage_two", build_autoencoder_task, check_conv, stage_one="nowhere", frozen_params="p"
  )
  with pytest.raises(ValueError, match="its stage I 'nowhere' must be a registered family"):
    base.register(unknown)
  from fsq.tasks import restore_stage_one

  with pytest.raises(ValueError, match=r"config\.task = 'tokenizer' trains on no stage I run"):
    restore_stage_one(maskgit_config("stage=tokenizer,run=cpu,quantizer=fsq"))


def test_a_new_family_is_one_registry_entry_away_from_the_config_check_and_training(monkeypatch):
  """A family registered outside the package (an autoencoder with a model check of its own) is checked by
  validate_config through its entry and built by build_task; nothing else lists families."""
  from fsq.tasks import build_task

  def check_small(config):
    check_conv(config)
    if config.model.filters > 64:
      raise ValueError(f"config.model.filters must be at most 64 here, got {config.model.filters}")

  monkeypatch.setattr(base, "FAMILIES", dict(FAMILIES))
  base.register(TaskFamily("small_autoencoder", build_autoencoder_task, check_small, lambda c: ("rfid",)))
  config = _autoencoder()
  config.task = "small_autoencoder"
  validate_config(config, devices=False)
  task = build_task(config)
  example = {"image": jax.ShapeDtypeStruct((2, 32, 32, 1), "float32")}
  assert jax.eval_shape(task.init, jax.random.key(0), example).step.shape == ()
  assert family_of(config).metrics(config) == ("rfid",)
  config.model.filters = 128
  with pytest.raises(ValueError, match=r"config\.model\.filters must be at most 64 here, got 128"):
    validate_config(config, devices=False)
