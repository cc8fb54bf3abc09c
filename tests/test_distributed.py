"""When a process joins a multi-process job: flags, the JAX_* environment, TPU hosts."""

import pytest

from fsq.train import distributed
from fsq.train.distributed import initialize_arguments


def test_a_coordinator_from_flags_or_environment_needs_the_process_count_and_index():
  assert initialize_arguments("auto", "h:1", 2, 0, environ={}, tpu=False) == dict(
    coordinator_address="h:1", num_processes=2, process_id=0
  )
  env = {"JAX_COORDINATOR_ADDRESS": "h:2", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
  assert initialize_arguments("auto", None, None, None, environ=env, tpu=False) == dict(
    coordinator_address="h:2", num_processes=4, process_id=3
  )
  # Flags win over the environment; process 0 is a valid index, not a missing one.
  assert initialize_arguments("auto", "h:1", 2, 0, environ=env, tpu=False)["process_id"] == 0
  with pytest.raises(ValueError, match=r"coordinator_address='h:1' needs num_processes and process_id"):
    initialize_arguments("auto", "h:1", 2, None, environ={}, tpu=False)
  with pytest.raises(ValueError, match=r"distributed must be one of .* got 'yes'"):
    initialize_arguments("yes", None, None, None, environ={}, tpu=False)


def test_a_tpu_host_initializes_without_arguments_and_a_plain_machine_stays_one_process():
  # A Cloud TPU VM sets no variable naming the workers: being on a TPU host is enough (jax reads the
  # worker list from the TPU metadata). The old rule (a comma in TPU_WORKER_HOSTNAMES) skipped it.
  assert initialize_arguments("auto", None, None, None, environ={}, tpu=True) == {}
  assert initialize_arguments("auto", None, None, None, environ={}, tpu=False) is None
  assert initialize_arguments("on", None, None, None, environ={}, tpu=False) == {}
  assert initialize_arguments("off", "h:1", 2, 0, environ={}, tpu=True) is None
  # GKE's variables mark a TPU host whatever the device files say.
  assert distributed.on_tpu_host({"TPU_WORKER_HOSTNAMES": "w0"})
  assert distributed.on_tpu_host({"TPU_ACCELERATOR_TYPE": "v5litepod-8"})
  assert not distributed.on_tpu_host({})  # this machine: no libtpu, no TPU device files
