"""Runs an experiment (experiments/EXPERIMENT.py): every training run, then its evaluation.

  python -m scripts.sweep codebook_size                          # CPU scale, one run after another
  python -m scripts.sweep codebook_size --parallel 2 --only 'fsq_*'
  python -m scripts.sweep levels_sweep --levels 8-5-5-5 8-8-8 5-5-5-5-5
  python -m scripts.sweep maskgit_imagenet256 --scale paper --print
  python -m scripts.sweep maskgit_imagenet256 --scale paper --root gs://BUCKET/runs --tpu NAME --zone ZONE

Run RUN lives in ROOT/EXPERIMENT/SCALE/RUN, with train.log and evaluate.log (appended to on every
attempt). ROOT may be a gs:// URL; the logs then go to LOG_DIR/EXPERIMENT/SCALE/RUN on this machine. A
run whose results.json exists is complete and skipped; an interrupted one resumes: training continues
from its newest checkpoint (and is skipped once final_metrics.json exists), evaluation is redone. A run
starts after the run it depends on (stage II after its tokenizer). The first failure stops the sweep,
naming the run and its log; runs in flight get SIGTERM, which checkpoints them (so does a SIGTERM to the
sweep). Each command and its outcome is logged to stdout and sweep.log beside the runs' logs. To retrain
a run, delete its workdir.

--tpu runs each training on every worker of a TPU pod slice through scripts/launch_tpu.sh (one run at a
time; ROOT must be a gs:// URL or an absolute path that every worker and the machine running the sweep
see, as it looks for each run's final_metrics.json there) and lists the evaluation commands at the end:
launch_tpu.sh runs scripts.train only, so they run on one host that sees ROOT.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from configs.common import parse_levels
from experiments.registry import (
  SCALES,
  Run,
  experiment_dir,
  experiment_names,
  experiment_runs,
  load_experiment,
  stale_runs,
)
from fsq.files import is_cloud, local_path, run_path

REPO = Path(__file__).resolve().parents[1]
LAUNCH_TPU = REPO / "scripts" / "launch_tpu.sh"
# How long the sweep waits for a pod's final_metrics.json to appear on its own view of a shared file
# system (NFS or gcsfuse caches may show a new file late) before calling the training unfinished.
TPU_FILE_WAIT_S = 60.0
REMOTE_PYTHON = ".venv/bin/python"  # the interpreter of the checkout on a TPU worker (see launch_tpu.sh)


def train_command(run: Run, directory: Path, overrides: Sequence[str]) -> list[str]:
  """scripts.train for ``run`` in directory/RUN; ``overrides`` (FIELD=VALUE) replace the run's own."""
  fields = dict(o.split("=", 1) for o in (*run.overrides, *overrides))
  if run.depends_on is not None:
    fields["tokenizer_workdir"] = str(directory / run.depends_on)
  args = [f"--config={run.config}", f"--workdir={directory / run.name}"]
  args += [f"--config.{k}={v}" for k, v in fields.items()]
  return [sys.executable, "-m", "scripts.train", *args]


def check_config(run: Run, train: Sequence[str]) -> dict:
  """Parses ``train``'s --config flags (a train_command) here as scripts.train parses them and validates the
  config, so that a typo in a run's config or overrides stops the sweep before anything starts, not
  hours in; a ValueError naming the run otherwise. The checks that need the run's devices are left to
  scripts.train: this process starts no jax backend (on a TPU VM it would hold the chips). Returns the
  config as its config.json would record it."""
  from absl import flags
  from ml_collections import config_flags

  from fsq.tasks.validate import validate_config

  argv = ["sweep", *(a for a in train[3:] if a.startswith("--config"))]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True, sys_argv=argv)
  try:
    values(argv)
    validate_config(values.config, devices=False)
  except Exception as error:  # absl, ml_collections and validate_config raise several kinds
    raise ValueError(f"run {run.name}: its config does not parse or validate: {error}") from error
  return json.loads(values.config.to_json_best_effort())


def evaluate_command(run: Run, directory: Path, python: str = sys.executable) -> list[str]:
  """scripts.evaluate for ``run``: its metrics (none: final_metrics.json only) into results.json."""
  command = [python, "-m", "scripts.evaluate", f"--workdir={directory / run.name}"]
  if run.metrics:
    command.append(f"--metrics={','.join(run.metrics)}")
  if run.num_images is not None:
    command.append(f"--num_images={run.num_images}")
  return command


def tpu_command(train: Sequence[str], name: str, tpu: str, zone: str, dry_run: bool) -> list[str]:
  """``train`` (a train_command) run on every worker of the pod slice ``tpu`` by launch_tpu.sh as job
  ``name`` (detached from the SSH session; launching it again after a dropped connection attaches)."""
  flags = ["--dry-run"] if dry_run else []
  job = ["--name", name.replace("/", "_")]
  return ["bash", str(LAUNCH_TPU), *flags, "--tpu", tpu, "--zone", zone, *job, "--", *train[3:]]


def select(runs: Sequence[Run], patterns: Sequence[str] | None) -> list[Run]:
  """The runs whose names match a pattern (fnmatch), with the runs they depend on, in experiment order."""
  if not patterns:
    return list(runs)
  by_name = {run.name: run for run in runs}
  for pattern in patterns:
    if not fnmatch.filter(by_name, pattern):
      raise ValueError(f"--only {pattern!r} matches no run; runs: {', '.join(by_name)}")
  wanted = {name for name in by_name if any(fnmatch.fnmatchcase(name, p) for p in patterns)}
  for run in reversed(runs):
    if run.name in wanted and run.depends_on is not None:
      wanted.add(run.depends_on)
  return [run for run in runs if run.name in wanted]


class Log:
  """Timestamped lines to stdout and, when given a path, appended to that file; safe across threads."""

  def __init__(self, path: Path | None):
    self.path = path
    self._lock = threading.Lock()

  def __call__(self, message: str) -> None:
    line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}"
    with self._lock:
      print(line, flush=True)
      if self.path is not None:
        with open(self.path, "a") as f:
          f.write(line + "\n")


class Processes:
  """Starts commands and keeps the live ones, so that a failure can stop the others."""

  def __init__(self):
    self._lock = threading.Lock()
    self._live: set[subprocess.Popen] = set()
    self.stopped = False

  def run(self, command: Sequence[str], log_path: Path | None) -> int:
    """Runs ``command`` in the repository, its output appended to ``log_path`` (None: this terminal's).
    Returns its exit status, or -SIGTERM when the sweep was stopped before it started."""
    out = open(log_path, "a") if log_path is not None else None  # noqa: SIM115 (closed below)
    try:
      if out is not None:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n")
        out.flush()
      with self._lock:
        if self.stopped:
          return -signal.SIGTERM
        proc = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT if out else None)
        self._live.add(proc)
      code = proc.wait()
      with self._lock:
        self._live.discard(proc)
      return code
    finally:
      if out is not None:
        out.close()

  def stop(self) -> None:
    """SIGTERM to every live command (training saves a checkpoint and exits); no new ones start."""
    with self._lock:
      self.stopped = True
      for proc in self._live:
        proc.terminate()


@dataclasses.dataclass(frozen=True)
class Outcome:
  """How a run ended: ok, or what failed and the log that says why."""

  run: str
  ok: bool
  message: str = ""
  log: Path | None = None


@dataclasses.dataclass(frozen=True)
class Sweep:
  """Where and how runs execute: directory holds their workdirs (a local path or gs:// URL), log_dir
  their train.log and evaluate.log (local); tpu = (name, zone, dry_run) or None."""

  directory: object
  overrides: tuple[str, ...]
  tpu: tuple[str, str, bool] | None
  log: Log
  processes: Processes
  log_dir: Path

  def commands(self, run: Run) -> list[list[str]]:
    """What the sweep launches for ``run``: training, then (locally) evaluation."""
    train = train_command(run, self.directory, self.overrides)
    if self.tpu is not None:
      return [tpu_command(train, run.name, *self.tpu)]
    return [train, evaluate_command(run, self.directory)]

  def execute(self, run: Run) -> Outcome:
    """Trains ``run`` unless final_metrics.json exists, then evaluates it (not on TPU). A training that
    exits 0 without final_metrics.json (stopped by SIGTERM or a preemption, having saved a checkpoint)
    fails the run, so that no stage II starts on a half-trained stage I."""
    workdir = self.directory / run.name
    local = self.tpu is None
    dry_run = not local and self.tpu[2]
    logs = self.log_dir / run.name
    if local:
      workdir.mkdir(parents=True, exist_ok=True)
      logs.mkdir(parents=True, exist_ok=True)
    train_log, eval_log = (logs / "train.log", logs / "evaluate.log") if local else (None, None)
    if (workdir / "final_metrics.json").exists():
      self.log(f"{run.name}: trained (final_metrics.json exists)")
    else:
      outcome = self._step(run, "train", self.commands(run)[0], train_log)
      if not outcome.ok:
        return outcome
      if not dry_run and not _appears(workdir / "final_metrics.json", 0.0 if local else TPU_FILE_WAIT_S):
        message = "train stopped before its last step (SIGTERM or preemption?): run the sweep again to resume"
        self.log(f"{run.name}: {message}")
        return Outcome(run.name, False, message, train_log)
    if not local:
      return Outcome(run.name, True)
    outcome = self._step(run, "evaluate", evaluate_command(run, self.directory), eval_log)
    if outcome.ok and not (workdir / "results.json").exists():
      self.log(f"{run.name}: evaluate wrote no results.json")
      return Outcome(run.name, False, "evaluate wrote no results.json", eval_log)
    return outcome

  def _step(self, run: Run, what: str, command: Sequence[str], log_path: Path | None) -> Outcome:
    where = f" (log {log_path})" if log_path is not None else ""
    self.log(f"{run.name}: {what} started{where}: {shlex.join(command)}")
    start = time.perf_counter()
    code = self.processes.run(command, log_path)
    minutes = (time.perf_counter() - start) / 60
    if code != 0:
      self.log(f"{run.name}: {what} failed with exit status {code} after {minutes:.1f} min")
      return Outcome(run.name, False, f"{what} exited with status {code}", log_path)
    self.log(f"{run.name}: {what} done in {minutes:.1f} min")
    return Outcome(run.name, True)


def _appears(path: Path, wait_s: float) -> bool:
  """Whether ``path`` exists, or appears within ``wait_s`` seconds (polled every second)."""
  deadline = time.monotonic() + wait_s
  while not path.exists():
    if time.monotonic() >= deadline:
      return False
    time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
  return True


def schedule(
  runs: Sequence[Run],
  complete: set[str],
  execute: Callable[[Run], Outcome],
  parallel: int,
  stop: Callable[[], None],
) -> Outcome | None:
  """Executes ``runs`` at most ``parallel`` at a time, each once the run it depends on is in ``complete``
  or has succeeded; returns the first failure (after calling ``stop`` and waiting for the runs in
  flight) or None."""
  done, pending, failure = set(complete), list(runs), None
  with ThreadPoolExecutor(parallel) as pool:
    running = {}
    while True:
      for run in list(pending):
        if failure is None and len(running) < parallel and (run.depends_on is None or run.depends_on in done):
          pending.remove(run)
          running[pool.submit(execute, run)] = run
      if not running:
        return failure
      finished, _ = wait(running, return_when=FIRST_COMPLETED)
      for future in finished:
        del running[future]
        try:
          outcome = future.result()
        except BaseException:
          stop()
          raise
        if outcome.ok:
          done.add(outcome.run)
        elif failure is None:
          failure = outcome
          stop()


def log_tail(path: Path, lines: int = 20) -> str:
  return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("experiment", choices=experiment_names())
  parser.add_argument("--scale", choices=SCALES, default="cpu")
  parser.add_argument(
    "--root", default="runs/experiments", help="where the experiments' workdirs go (a folder or gs:// URL)"
  )
  parser.add_argument(
    "--log_dir", default="runs/sweep_logs", help="where the logs go when --root is a gs:// URL (local)"
  )
  parser.add_argument("--parallel", type=int, default=1, help="runs at once (local only)")
  parser.add_argument("--print", action="store_true", help="print the commands instead of running them")
  parser.add_argument("--tpu", help="TPU pod slice name: run training through scripts/launch_tpu.sh")
  parser.add_argument("--zone", help="the TPU's zone (with --tpu)")
  parser.add_argument("--dry-run", action="store_true", help="with --tpu: launch_tpu.sh --dry-run")
  parser.add_argument("--only", nargs="+", metavar="NAME", help="runs to do (fnmatch patterns)")
  parser.add_argument("--levels", nargs="+", type=parse_levels, help="level sets, e.g. 8-5-5-5 8-8-8")
  parser.add_argument(
    "--override", action="append", default=[], metavar="FIELD=VALUE", help="--config.FIELD=VALUE for all"
  )
  parser.add_argument(
    "--accept_config_changes",
    action="store_true",
    help="resume and tabulate runs whose recorded config differs from the one they would get now",
  )
  args = parser.parse_args(argv)
  try:
    args.root = run_path(args.root, "--root")
    args.log_dir = local_path(args.log_dir, "--log_dir")
  except ValueError as e:
    parser.error(str(e))
  if args.parallel < 1:
    parser.error(f"--parallel must be >= 1, got {args.parallel}")
  if (args.zone or args.dry_run) and not args.tpu:
    parser.error("--zone and --dry-run go with --tpu")
  if args.tpu and not args.zone:
    parser.error("--tpu needs --zone")
  if args.tpu and args.parallel != 1:
    parser.error("--tpu runs one run at a time on the pod slice: drop --parallel")
  if args.tpu and not (is_cloud(args.root) or args.root.is_absolute()):
    parser.error(f"--tpu needs a gs:// or absolute --root that every worker sees, got {args.root}")
  bad = [o for o in args.override if "=" not in o]
  if bad:
    parser.error(f"--override takes FIELD=VALUE, got {bad}")
  return args


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  module = load_experiment(args.experiment)
  runs = select(experiment_runs(module, args.scale, args.levels), args.only)
  directory = experiment_dir(args.root, args.experiment, args.scale)
  if not is_cloud(directory):
    directory = directory.absolute()
  log_dir = experiment_dir(args.log_dir, args.experiment, args.scale) if is_cloud(directory) else directory
  log_dir = Path(log_dir).absolute()
  complete = {run.name for run in runs if (directory / run.name / "results.json").exists()}
  tpu = (args.tpu, args.zone, args.dry_run) if args.tpu else None
  stale = stale_runs(
    runs,
    directory,
    {run.name: check_config(run, train_command(run, directory, args.override)) for run in runs},
  )
  if stale and not args.accept_config_changes:
    raise ValueError(
      f"runs in {directory} were started with another config than they would get now; move them aside "
      f"(or restore their config) to rerun them, or pass --accept_config_changes: "
      + ", ".join(f"{name} ({reason})" for name, reason in stale.items())
    )
  keep_log = not (args.print or args.dry_run)
  if keep_log:
    directory.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
  log = Log(log_dir / "sweep.log" if keep_log else None)
  for name, reason in stale.items():
    log(f"{name}: kept although its config changed (--accept_config_changes): {reason}")
  sweep = Sweep(directory, tuple(args.override), tpu, log, Processes(), log_dir)

  if args.print:
    for run in runs:
      after = f" (after {run.depends_on})" if run.depends_on else ""
      print(f"# {run.name}{after}{': complete (results.json)' if run.name in complete else ''}")
      for command in sweep.commands(run):
        print(shlex.join(command))
      if tpu is not None:
        remote = shlex.join(evaluate_command(run, directory, REMOTE_PYTHON))
        print(f"# then, in the checkout on one host that sees the workdir: {remote}")
    return 0

  for name in sorted(complete):
    log(f"{name}: skipped (results.json exists)")
  todo = [run for run in runs if run.name not in complete]
  log(f"{args.experiment} at scale {args.scale}: {len(todo)} of {len(runs)} runs to do in {directory}")
  # SIGTERM (a scheduler, kill) stops the sweep as a failure does: runs in flight get SIGTERM, checkpoint
  # and exit, instead of living on without the sweep.
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: sweep.processes.stop())
  try:
    failure = schedule(todo, complete, sweep.execute, args.parallel, sweep.processes.stop)
  finally:
    signal.signal(signal.SIGTERM, previous)
  if failure is not None:
    log(f"FAILED: run {failure.run}: {failure.message}; log: {failure.log}")
    if failure.log is not None:
      print(f"--- last lines of {failure.log} ---\n{log_tail(failure.log)}", file=sys.stderr)
    return 1
  if tpu is not None:
    log(f"{args.experiment}: all {len(runs)} runs trained; evaluate them in the checkout on one host that")
    log("sees the workdirs (launch_tpu.sh runs scripts.train only):")
    for run in todo:
      print(shlex.join(evaluate_command(run, directory, REMOTE_PYTHON)))
    return 0
  log(f"{args.experiment}: all {len(runs)} runs complete")
  return 0


if __name__ == "__main__":
  sys.exit(main())
