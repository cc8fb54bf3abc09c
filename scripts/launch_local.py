"""Runs one training (or evaluation) job as N processes on this machine, for testing multi-host code on CPU.

  python -m scripts.launch_local --num_processes 2 --devices_per_process 2 -- \\
      --config configs/autoencoder.py --workdir runs/two_process
  python -m scripts.launch_local --module scripts.evaluate --log_dir L -- \\
      --workdir runs/two_process --metrics rfid

Each process gets ``--coordinator_address localhost:PORT --num_processes N --process_id i`` and
``--xla_force_host_platform_device_count`` devices; its output goes to WORKDIR/process_<i>.log. The
launcher exits with the first non-zero exit code, after stopping the other processes.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def launch(
  num_processes: int,
  devices_per_process: int,
  train_args: list[str],
  log_dir: Path,
  module: str = "scripts.train",
) -> int:
  """Starts the processes (``python -m module``), waits for all of them, returns 0 or the first
  failure's exit code."""
  if num_processes < 1 or devices_per_process < 1:
    raise ValueError(
      f"num_processes and devices_per_process must be >= 1, got {num_processes}, {devices_per_process}"
    )
  log_dir.mkdir(parents=True, exist_ok=True)
  port = free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = (
    f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices_per_process}".strip()
  )
  procs = []
  for i in range(num_processes):
    cmd = [
      sys.executable,
      "-m",
      module,
      *train_args,
      f"--coordinator_address=localhost:{port}",
      f"--num_processes={num_processes}",
      f"--process_id={i}",
    ]
    log = open(log_dir / f"process_{i}.log", "w")  # noqa: SIM115 (closed below)
    procs.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log))
  code = 0
  while any(p.poll() is None for p, _ in procs):
    failed = [p.returncode for p, _ in procs if p.returncode not in (None, 0)]
    if failed:
      code = failed[0]
      for p, _ in procs:
        if p.poll() is None:
          p.kill()
    time.sleep(0.2)
  for p, log in procs:
    log.close()
    code = code or p.returncode
  return code


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--num_processes", type=int, default=2)
  parser.add_argument("--devices_per_process", type=int, default=2)
  parser.add_argument(
    "--module", default="scripts.train", help="what each process runs: scripts.train or scripts.evaluate"
  )
  parser.add_argument(
    "--log_dir", type=Path, default=None, help="default: the --workdir of the job's arguments"
  )
  parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the arguments of scripts.train")
  args = parser.parse_args(argv)
  train_args = [a for a in args.train_args if a != "--"]
  log_dir = args.log_dir
  if log_dir is None:
    workdirs = [a.split("=", 1)[1] for a in train_args if a.startswith("--workdir=")]
    if not workdirs:
      parser.error("pass --workdir=DIR among the training arguments, or --log_dir")
    log_dir = Path(workdirs[0])
  return launch(args.num_processes, args.devices_per_process, train_args, log_dir, args.module)


if __name__ == "__main__":
  sys.exit(main())
