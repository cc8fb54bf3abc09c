"""Sweeps and tables: the tiny experiment end to end (train, evaluate, skip, print, tabulate), failures,
scheduling, TPU dry runs, and the paper experiments' runs and tables."""

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from configs.maskgit import get_config
from configs.uvim import get_config as get_uvim_config
from experiments import (
  codebook_size,
  convergence,
  levels_sweep,
  maskgit_imagenet256,
  registry,
  report,
  settling,
  training_length,
  uvim,
)
from experiments.registry import Run
from experiments.report import MISSING
from fsq.files import run_path
from fsq.quantizers import levels_for_codebook_size
from fsq.tasks.validate import validate_config
from scripts import make_tables, sweep


def table_rows(markdown: str) -> dict[str, list[str]]:
  """{first cell: the other cells} for the body rows of the first Markdown table in ``markdown``."""
  lines = list(
    itertools.takewhile(
      lambda line: line.startswith("|"),
      itertools.dropwhile(lambda line: not line.startswith("|"), markdown.splitlines()),
    )
  )
  rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
  return {row[0]: row[1:] for row in rows}


def commands(printed: str) -> list[str]:
  return [line for line in printed.splitlines() if line and not line.startswith("#")]


@pytest.mark.slow
def test_tiny_sweep_trains_evaluates_skips_prints_and_tabulates(
  tfds_data_dir, tmp_path, monkeypatch, capsys, gcs_bucket
):
  """The sweep's root, its runs' workdirs (checkpoints, logs, results) and the FID cache are in a gs://
  bucket on a real Cloud Storage emulator; the runs' train and evaluate logs are local."""
  monkeypatch.setenv("FSQ_FID_CACHE", f"{gcs_bucket}/fid_cache")
  root, logs, out = f"{gcs_bucket}/sweeps", tmp_path / "logs", tmp_path / "tables"
  argv = ["tiny", f"--root={root}", f"--log_dir={logs}", "--parallel=2"]
  argv.append(f"--override=data.data_dir={tfds_data_dir}")
  assert sweep.main(argv) == 0, capsys.readouterr().out
  runs_dir, logs_dir = run_path(root, "root") / "tiny" / "cpu", logs / "tiny" / "cpu"
  results = {
    name: json.loads((runs_dir / name / "results.json").read_text()) for name in ("tokenizer", "transformer")
  }
  assert {"psnr", "rfid", "codebook/usage"} <= set(results["tokenizer"])
  assert {"masked_accuracy", "compression/coded_bits_per_token"} <= set(results["transformer"])
  assert list((run_path(gcs_bucket, "bucket") / "fid_cache").glob("*.npz"))
  capsys.readouterr()

  # Again: both runs are complete, nothing is retrained or re-evaluated.
  files = [logs_dir / n / f for n in results for f in ("train.log", "evaluate.log")]
  mtimes = [f.stat().st_mtime_ns for f in files]
  checkpoints = sorted(p.name for p in (runs_dir / "tokenizer" / "checkpoints").iterdir())
  assert sweep.main(argv) == 0
  log = capsys.readouterr().out
  assert "tokenizer: skipped (results.json exists)" in log and "transformer: skipped" in log
  assert "started" not in log and [f.stat().st_mtime_ns for f in files] == mtimes
  assert sorted(p.name for p in (runs_dir / "tokenizer" / "checkpoints").iterdir()) == checkpoints

  # --print: train then evaluate for each run, stage I first; stage II reads the stage I workdir.
  assert sweep.main([*argv, "--print"]) == 0
  printed = commands(capsys.readouterr().out)
  expected = [("scripts.train", "tokenizer"), ("scripts.evaluate", "tokenizer")]
  expected += [("scripts.train", "transformer"), ("scripts.evaluate", "transformer")]
  assert [(c.split()[2], c.split("--workdir=")[1].split()[0]) for c in printed] == [
    (module, str(runs_dir / name)) for module, name in expected
  ]
  assert f"--config.tokenizer_workdir={runs_dir / 'tokenizer'}" in printed[2]
  assert "--metrics=rfid --num_images=8" in printed[1] and "--metrics=compression" in printed[3]

  # The table holds each results.json's numbers; a run without one shows as an en dash and is listed.
  assert make_tables.main(["tiny", f"--root={root}", f"--out={out}"]) == 0
  rows = table_rows((out / "table.md").read_text())
  assert list(rows) == ["tokenizer", "transformer"]
  assert json.loads((out / "results.json").read_text()) == results
  keys = ["psnr", "rfid", "codebook/usage", "codebook/perplexity", "masked_accuracy"]
  keys += ["compression/coded_bits_per_token"]
  for name, cells in rows.items():
    for key, text in zip(keys, cells, strict=True):
      if key in results[name]:
        assert float(text) == pytest.approx(results[name][key], rel=1e-5), (name, key)
      else:
        assert text == "", (name, key)
  (runs_dir / "transformer" / "results.json").unlink()
  assert make_tables.main(["tiny", f"--root={root}", f"--out={out}"]) == 0
  document = (out / "table.md").read_text()
  assert table_rows(document)["transformer"] == [MISSING] * len(keys)
  assert "Missing (no results.json yet, shown as \u2013): transformer" in document
  assert "## Convergence" in document and (out / "training_curves.png").stat().st_size > 0


def test_a_failed_run_stops_the_sweep_naming_the_run_and_its_log(tmp_path, capsys):
  root = tmp_path / "runs"
  # A config that validates but cannot run: its dataset folder cannot be made.
  assert sweep.main(["tiny", f"--root={root}", "--override=data.data_dir=/proc/no_such_dir"]) == 1
  out, err = capsys.readouterr()
  train_log = root / "tiny" / "cpu" / "tokenizer" / "train.log"
  assert f"FAILED: run tokenizer: train exited with status 1; log: {train_log}" in out
  assert "/proc/no_such_dir" in train_log.read_text() and f"last lines of {train_log}" in err
  assert not (root / "tiny" / "cpu" / "transformer").exists()  # its dependency failed: never started


def test_sigterm_to_the_sweep_stops_its_runs_in_flight(tmp_path, monkeypatch, capsys):
  started, stopped = tmp_path / "started", tmp_path / "stopped"
  child = (
    "import pathlib, signal, sys, time\n"
    f"signal.signal(signal.SIGTERM, lambda *a: (pathlib.Path({str(stopped)!r}).touch(), sys.exit(0)))\n"
    f"pathlib.Path({str(started)!r}).touch()\n"
    "time.sleep(120)\n"
  )
  monkeypatch.setattr(sweep, "train_command", lambda run, directory, overrides: [sys.executable, "-c", child])
  monkeypatch.setattr(sweep, "check_config", lambda run, train: None)  # the child is no scripts.train

  def kill_when_started():
    while not started.exists():
      time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)

  killer = threading.Thread(target=kill_when_started, daemon=True)
  killer.start()
  begin = time.perf_counter()
  assert sweep.main(["tiny", f"--root={tmp_path / 'runs'}"]) == 1
  assert stopped.exists() and time.perf_counter() - begin < 60  # the child got SIGTERM, did not sleep on
  assert "tokenizer: train stopped before its last step" in capsys.readouterr().out
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the sweep's handler is gone again


def test_schedule_runs_dependencies_first_at_most_parallel_at_once_and_stops_on_failure():
  runs = [
    Run("a", "c"),
    Run("b", "c"),
    Run("a2", "c", depends_on="a"),
    Run("c", "c"),
    Run("b2", "c", depends_on="b"),
  ]
  lock, live, events = threading.Lock(), set(), []

  def execute(run, fail=()):
    with lock:
      live.add(run.name)
      events.append(("start", run.name, len(live)))
    time.sleep(0.05)
    with lock:
      live.discard(run.name)
      events.append(("end", run.name))
    return sweep.Outcome(run.name, run.name not in fail, "boom", None)

  assert sweep.schedule(runs, set(), execute, 2, stop=lambda: None) is None
  assert max(e[2] for e in events if e[0] == "start") == 2
  assert {e[1] for e in events} == {"a", "b", "a2", "c", "b2"}
  for child, parent in (("a2", "a"), ("b2", "b")):
    assert events.index(("end", parent)) < [e[:2] for e in events].index(("start", child))

  events.clear()
  stops = []
  failure = sweep.schedule(runs, set(), lambda r: execute(r, fail={"a"}), 1, stop=lambda: stops.append(1))
  assert failure.run == "a" and stops == [1] and [e[1] for e in events] == ["a", "a"]
  events.clear()
  assert sweep.schedule(runs[2:3], {"a"}, execute, 1, stop=lambda: None) is None  # "a" already complete
  assert [e[1] for e in events] == ["a2", "a2"]


def test_tpu_dry_run_prints_one_gcloud_command_per_training_and_the_evaluations(tmp_path, capfd):
  argv = ["maskgit_imagenet256", "--scale=paper", f"--root={tmp_path}", "--tpu=pod", "--zone=us-z1"]
  assert sweep.main([*argv, "--dry-run"]) == 0
  out = capfd.readouterr().out
  gcloud = [line for line in out.splitlines() if line.startswith("gcloud")]
  # Per run: start the training on every worker (a job named after the run), then wait on worker 0.
  start, wait = gcloud[::2], gcloud[1::2]
  assert len(start) == len(wait) == 4
  assert all("--worker=all" in line and "scripts.train" in line for line in start)
  assert all("--worker=0" in line and "scripts.train" not in line for line in wait)
  assert "run=imagenet256" in start[0] and f"tokenizer_workdir={tmp_path}" in start[1].replace("\\", "")
  assert "logs/fsq_stage1.pid" in start[0] and "logs/fsq_stage1.pid" in wait[0]
  assert len([line for line in out.splitlines() if "scripts.evaluate" in line]) == 4
  assert not list(tmp_path.iterdir())  # a dry run writes nothing
  with pytest.raises(SystemExit):
    sweep.main(["maskgit_imagenet256", "--root=relative", "--tpu=pod", "--zone=us-z1"])


def test_tpu_run_that_exits_without_finishing_stops_the_sweep_before_stage_two(tmp_path, monkeypatch, capsys):
  """launch_tpu.sh exits 0 when training saved a checkpoint on SIGTERM: without final_metrics.json the
  tokenizer is unfinished, and the transformer that depends on it must not start."""
  launched = []

  def launch(command, log_path):
    launched.append(command)
    return 0

  monkeypatch.setattr(sweep.Processes, "run", lambda self, command, log_path: launch(command, log_path))
  monkeypatch.setattr(sweep, "TPU_FILE_WAIT_S", 0.3)  # the pod's file system may show the file late
  argv = ["tiny", f"--root={tmp_path}", "--tpu=pod", "--zone=us-z1"]
  assert sweep.main(argv) == 1
  assert len(launched) == 1 and "stage=tokenizer" in " ".join(launched[0])
  assert "tokenizer: train stopped before its last step" in capsys.readouterr().out
  (tmp_path / "tiny" / "cpu" / "tokenizer").mkdir(parents=True)  # as the pod's training would
  (tmp_path / "tiny" / "cpu" / "tokenizer" / "final_metrics.json").write_text("{}")
  assert sweep.main(argv) == 1  # now the tokenizer counts as trained; the transformer is launched
  assert len(launched) == 2 and "stage=transformer" in " ".join(launched[1])


def test_a_file_that_appears_late_on_a_shared_file_system_counts(tmp_path):
  late = tmp_path / "final_metrics.json"
  threading.Timer(0.2, late.touch).start()
  begin = time.monotonic()
  assert sweep._appears(late, 10.0) and time.monotonic() - begin < 5
  assert not sweep._appears(tmp_path / "never", 0.3)


def test_a_config_typo_or_bad_value_stops_the_sweep_before_anything_starts(tmp_path, capsys):
  root = tmp_path / "runs"
  with pytest.raises(ValueError, match=r"run fsq_8_stage1: its config does not parse .*\"learning_rate\""):
    sweep.main(["codebook_size", f"--root={root}", "--override", "optimizer.lerning_rate=1e-3"])
  with pytest.raises(
    ValueError, match=r"run depth_fsq_oracle: .*num_train_steps must be a positive integer, got 0"
  ):
    sweep.main(["uvim", f"--root={root}", "--print", "--override", "num_train_steps=0"])
  assert not root.exists() and capsys.readouterr().out == ""  # nothing started, made or printed


def test_a_run_started_under_another_recipe_stops_the_sweep_and_a_moved_one_does_not(tmp_path, capsys):
  """A workdir whose config.json differs from the config its run would get now (here: the optimizer's b1
  and a field the run never had) is named with the fields, before anything starts, and so is the stage II
  run trained on it, or on a stage I that is gone; paths, the pinned stage I step and how often a run
  evaluates may differ (an experiment folder moved, a resume). --accept_config_changes keeps them."""
  root = tmp_path / "runs"
  args = ["codebook_size", f"--root={root}", "--only", "fsq_8_stage2", "--print"]
  directory = root / "codebook_size" / "cpu"
  runs = {r.name: r for r in codebook_size.runs("cpu")}
  configs = {n: sweep.check_config(runs[n], sweep.train_command(runs[n], directory, [])) for n in runs}
  moved = {}
  for name in ("fsq_8_stage1", "fsq_8_stage2"):
    config = configs[name]
    moved[name] = {
      **config,
      "tokenizer_workdir": "/elsewhere/fsq_8_stage1",
      "tokenizer_step": 1000,
      "eval_every_steps": 7,
      "data": {**config["data"], "data_dir": "/elsewhere/tfds"},
    }
    (directory / name).mkdir(parents=True)
    (directory / name / "config.json").write_text(json.dumps(moved[name]))
  assert sweep.main(args) == 0
  capsys.readouterr()

  stage_1 = moved["fsq_8_stage1"]
  other = {**stage_1, "optimizer": {**stage_1["optimizer"], "b1": 0.0}, "retired_field": 1}
  (directory / "fsq_8_stage1" / "config.json").write_text(json.dumps(other))
  changes = (
    r"fsq_8_stage1 \(optimizer\.b1: 0\.0 recorded, 0\.9 now; retired_field: 1 recorded, '\(absent\)' now\)"
  )
  with pytest.raises(ValueError, match=r"another config than they would get now; .*" + changes):
    sweep.main(args)
  assert capsys.readouterr().out == ""  # nothing printed or started
  assert registry.stale_runs(list(runs.values()), directory, configs) == {
    "fsq_8_stage1": "optimizer.b1: 0.0 recorded, 0.9 now; retired_field: 1 recorded, '(absent)' now",
    "fsq_8_stage2": "its stage I fsq_8_stage1 is stale",
  }
  assert sweep.main([*args, "--accept_config_changes"]) == 0
  (directory / "fsq_8_stage1" / "config.json").unlink()  # moved aside, to be retrained
  assert registry.stale_runs(list(runs.values()), directory, configs) == {
    "fsq_8_stage2": "its stage I fsq_8_stage1 is gone"
  }
  assert registry.recipe_changes({"a": {"b": [1, 2]}}, {"a": {"b": [1, 2]}}) == []
  assert registry.recipe_changes({"a": {"b": [1, 2]}}, {"a": {"b": [1, 3]}}) == [
    "a.b: [1, 2] recorded, [1, 3] now"
  ]


def test_the_config_check_starts_no_jax_backend(tmp_path):
  """The sweep's controller checks every run's config without starting jax (on a TPU VM a backend in
  the controller would hold the chips its runs need)."""
  code = f"""
import contextlib, io
from jax._src import xla_bridge
from scripts import sweep
for name, scale in (("codebook_size", "cpu"), ("uvim", "paper"), ("maskgit_imagenet256", "paper")):
  with contextlib.redirect_stdout(io.StringIO()):
    assert sweep.main([name, "--scale", scale, "--root={tmp_path}", "--print"]) == 0
print(xla_bridge.backends_are_initialized())
"""
  done = subprocess.run(
    [sys.executable, "-c", code], cwd=sweep.REPO, capture_output=True, text=True, timeout=300
  )
  assert done.returncode == 0, done.stderr
  assert done.stdout.strip().splitlines()[-1] == "False"


def test_levels_override_the_level_sets_and_only_selects_runs(tmp_path, capsys):
  argv = ["levels_sweep", f"--root={tmp_path}", "--levels", "8-8-8", "5-5-5-5-5", "--print"]
  assert sweep.main([*argv, "--only", "*_stage2"]) == 0
  printed = commands(capsys.readouterr().out)
  names = [c.split("--workdir=")[1].split()[0].rsplit("/", 1)[1] for c in printed if "scripts.train" in c]
  # Stage II runs bring their stage I runs with them.
  assert names == ["fsq_8-8-8_stage1", "fsq_8-8-8_stage2", "fsq_5-5-5-5-5_stage1", "fsq_5-5-5-5-5_stage2"]
  assert (
    "levels=8-8-8" in printed[0] and f"--config.num_train_steps={registry.CPU_STEPS_STAGE_1}" in printed[0]
  )
  with pytest.raises(ValueError, match="--levels is an option"):
    sweep.main(["codebook_size", "--levels", "8-8-8", "--print"])
  with pytest.raises(ValueError, match="matches no run"):
    sweep.main(["codebook_size", "--only", "nothing*", "--print"])
  assert (
    make_tables.main(["levels_sweep", f"--root={tmp_path}", f"--out={tmp_path / 't'}", "--levels", "8-8-8"])
    == 0
  )
  rows = table_rows((tmp_path / "t" / "table.md").read_text())
  assert list(rows) == ["8-8-8"] and rows["8-8-8"][:3] == ["512", "9.00", "8"]


@pytest.mark.parametrize("scale", registry.SCALES)
def test_paper_experiments_have_valid_configs_and_overrides(scale):
  for module in (codebook_size, maskgit_imagenet256, levels_sweep):
    runs = module.runs(scale)
    registry.check_runs(runs)
    for run in runs:
      path, arg = run.config.split(":", 1)
      assert path == "configs/maskgit.py"
      config = get_config(arg)
      validate_config(config)
      expected = (
        "cpu" if scale == "cpu" else ("imagenet256" if module is maskgit_imagenet256 else "imagenet128")
      )
      assert f"run={expected}" in arg
      for override in run.overrides:
        field, _ = override.split("=", 1)
        node = config
        for part in field.split("."):
          node = node[part]  # a KeyError names a field the config lacks
      assert run.num_images == (registry.CPU_NUM_IMAGES if scale == "cpu" else registry.PAPER_NUM_IMAGES)
  # Stage I for all three tokenizers at every size; stage II for FSQ and MaskGIT's VQ.
  runs = {r.name: r for r in codebook_size.runs(scale)}
  sizes_2 = (8, 12, 16) if scale == "cpu" else (8, 10, 12, 14, 16)
  expected = [f"{arm}_{b}_stage1" for arm in ("fsq", "vq", "vq_plain") for b in (8, 10, 12, 14, 16)]
  expected += [f"{arm}_{b}_stage2" for arm in ("fsq", "vq") for b in sizes_2]
  assert sorted(runs) == sorted(expected)
  assert runs["vq_plain_12_stage1"].config.endswith("quantizer=vq_plain,codebook=12")
  assert runs["fsq_16_stage2"].depends_on == "fsq_16_stage1" and runs["fsq_16_stage2"].metrics == (
    "compression",
    "fid",
  )


def test_tables_put_our_numbers_beside_the_paper_and_mark_missing_runs():
  runs = maskgit_imagenet256.runs("cpu")
  results = {
    "fsq_stage1": {"codebook/usage": 0.994},
    "fsq_stage2": {"fid": 12.3456, "precision": 0.5, "recall": 0.25, "fid/guidance_scale": 0.2},
  }
  rows = table_rows(maskgit_imagenet256.table(runs, results))
  assert rows["MaskGIT (FSQ)"] == [
    "0.2",
    "0.2",
    "12.346",
    "4.534",
    "0.500",
    "0.864",
    "0.250",
    "0.453",
    "99%",
    "100%",
  ]
  assert rows["MaskGIT (VQ)"][::2] == [MISSING] * 5 and rows["MaskGIT (VQ)"][3] == "4.509"
  assert rows["ADM"][3] == "4.590"

  runs = codebook_size.runs("cpu")
  fsq_8_results = {"codebook/usage": 0.9, "codebook/usage_train": 0.95, "psnr": 20.123, "rfid": 30.5}
  text = codebook_size.table(runs, {"fsq_8_stage1": fsq_8_results})
  body = [line for line in text.splitlines()[2:]]
  fsq_8, fsq_10 = ([c.strip() for c in line.strip("|").split("|")] for line in body[:2])
  assert fsq_8[:8] == ["FSQ", "8", "8-6-5 (240)", "90.0%", "95.0%", "", "20.12", "30.50"]
  assert fsq_8[8] == MISSING
  assert fsq_10[3] == fsq_10[4] == MISSING and fsq_10[8:] == [""] * 5  # no stage II at 2^10 at CPU scale


def test_percent_keeps_small_fractions():
  cases = {1.0: "100.0%", 0.9634: "96.3%", 0.01: "1.0%", 0.0052449: "0.52%", 0.000524: "0.052%", 0.0: "0%"}
  assert {x: report.percent(x) for x in cases} == cases
  plain_vq_16 = codebook_size.table(
    codebook_size.runs("cpu"), {"vq_plain_16_stage1": {"codebook/usage": 34 / 65536}}
  )
  assert table_rows(plain_vq_16)["VQ, no entropy loss"][2] == "0.052%"


def test_tail_change_compares_the_medians_of_the_last_two_fifths():
  steps = np.arange(50, 1001, 50, dtype=np.float64)  # 20 logs; the last fifth holds 850..1000
  values = np.full(20, 10.0)
  values[steps > 800] = [4.0, 5.0, 99.0, 6.0]  # median 5.5; the spike at 950 does not count
  values[(steps > 600) & (steps <= 800)] = [8.0, 7.0, 9.0, 8.0]  # median 8
  assert convergence.tail_change(steps, values) == pytest.approx((5.5 - 8.0) / 8.0)
  assert convergence.tail_change(steps[-3:], values[-3:]) is None  # under 2 points before the last fifth
  rng = np.random.default_rng(0)
  for _ in range(20):  # a constant series has settled, whatever its level
    level = rng.uniform(-5, 5)
    assert convergence.tail_change(steps, np.full(20, level)) == 0.0


def test_convergence_table_and_curves_read_the_training_logs(tmp_path):
  runs = [Run("a", "configs/autoencoder.py"), Run("b", "configs/maskgit.py"), Run("c", "configs/maskgit.py")]
  records = [{"step": s, "split": "train", "mse": 1.0 / s, "loss": 9.0} for s in range(100, 1001, 100)]
  records += [{"step": 500, "split": "eval", "psnr": 20.0}, {"step": 1000, "split": "eval", "psnr": 21.5}]
  (tmp_path / "a").mkdir()
  (tmp_path / "a" / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
  (tmp_path / "b").mkdir()  # a run without a log (not trained yet) is left out
  (tmp_path / "c").mkdir()
  records = [{"step": s, "split": "train", "loss": 4.0} for s in (250, 500, 750, 1000)]
  (tmp_path / "c" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  rows = table_rows(convergence.convergence_table(runs, tmp_path))
  # a: mse is preferred to loss; medians 1/950 (900, 1000) against 1/750 (700, 800).
  late, early = np.median([1 / 900, 1 / 1000]), np.median([1 / 700, 1 / 800])
  assert rows["a"][:2] == ["1000", "mse 0.001"]
  assert rows["a"][2] == f"{(late - early) / early:+.1%}"
  assert rows["a"][3:5] == ["no", "0"]  # still falling 17% over the last fifth
  assert rows["a"][5] == "psnr 20 (500) \u2192 21.5 (1000)"
  assert rows["c"] == ["1000", "loss 4", "", "", "0", ""]  # one log per window: no change; no evaluations
  assert list(rows) == ["a", "c"]
  assert [p.name for p in convergence.curves_figure(runs, tmp_path, tmp_path)] == ["training_curves.png"]
  # The figure's panels: one per stage of the config spec (the file's name when the spec names none).
  assert convergence.stage(Run("t", "configs/maskgit.py:stage=tokenizer,run=cpu")) == "tokenizer"
  assert convergence.stage(Run("t", "configs/uvim.py:task=depth,stage=lm")) == "lm"
  assert convergence.stage(Run("t", "configs/uvim.py:substage=x")) == "uvim"
  assert convergence.stage(runs[0]) == "autoencoder"
  assert convergence.convergence_table(runs[1:2], tmp_path) is None
  assert convergence.curves_figure(runs[1:2], tmp_path, tmp_path / "none") == []


def test_spikes_count_rises_over_1_5x_after_the_warmup_recorded_in_config_json(tmp_path):
  steps = np.arange(50, 1001, 50, dtype=np.float64)
  values = np.full(20, 1.0)
  values[1] = 3.0  # step 100: inside a 100-step warm-up, not counted
  values[7] = 1.51  # step 400: a spike
  values[8] = 2.2  # step 450: 1.46x the value before it, not a spike
  values[4], values[5] = 0.5, 0.76  # step 300: 1.52x a lower level, a spike
  assert convergence.spikes(steps, values, warmup_steps=100) == 2
  assert convergence.spikes(steps, values, warmup_steps=0) == 3
  assert convergence.spikes(steps, np.linspace(1.0, 0.1, 20), 0) == 0
  (tmp_path / "run").mkdir()
  assert convergence.warmup_steps(tmp_path / "run") == 0  # no config.json
  (tmp_path / "run" / "config.json").write_text(json.dumps({"optimizer": {"warmup_steps": 100}}))
  assert convergence.warmup_steps(tmp_path / "run") == 100
  records = [{"step": int(s), "split": "train", "loss": float(v)} for s, v in zip(steps, values, strict=True)]
  (tmp_path / "run" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  row = table_rows(convergence.convergence_table([Run("run", "configs/autoencoder.py")], tmp_path))["run"]
  assert row[2:5] == ["+0.0%", "no", "2"]  # flat at the end, but it spiked: not settled
  values[4] = values[5] = values[7] = values[8] = 1.0
  # a resumed run logs steps 400 to 500 again after its step-350 checkpoint: the last record of a step counts
  resumed = [{"step": s, "split": "train", "loss": 1.0} for s in (400, 450, 500)]
  records = [{"step": int(s), "split": "train", "loss": float(v)} for s, v in zip(steps, values, strict=True)]
  records.insert(12, {"step": 450, "split": "train", "loss": 9.0})  # logged before the run was stopped
  records[13:13] = resumed  # ... and again after it resumed
  (tmp_path / "run" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  row = table_rows(convergence.convergence_table([Run("run", "configs/autoencoder.py")], tmp_path))["run"]
  assert row[2:5] == ["+0.0%", "yes", "0"]
  _, logged, _ = convergence.series(records, "train", ("loss",))
  np.testing.assert_array_equal(logged, steps)  # ascending, each step once


def test_figures_are_written(tmp_path):
  runs = codebook_size.runs("cpu")
  results = {
    f"{a}_{b}_stage1": {"rfid": 10.0 / b, "psnr": b, "codebook/usage": 0.5}
    for a in ("fsq", "vq")
    for b in (8, 10)
  }
  assert [p.name for p in codebook_size.figures(runs, results, tmp_path)] == ["codebook_size.png"]
  runs = levels_sweep.runs("cpu")
  # The sweep asks Fig. 10's question at 2^10 and 2^16, with the recommender's sets among its own.
  sizes = {round(math.log2(math.prod(levels))) for levels in levels_sweep.level_sets(runs)}
  assert sizes == {10, 16} and all(min(v) >= 2 for v in levels_sweep.level_sets(runs))
  for bits in (10, 16):
    assert levels_for_codebook_size(2**bits) in levels_sweep.level_sets(runs)
    assert any(min(v) < 5 for v in levels_sweep.level_sets(runs) if round(math.log2(math.prod(v))) == bits)
  results = {"fsq_8-5-5-5_stage1": {"rfid": 3.0, "codebook/usage": 0.9}, "fsq_32-32_stage2": {"fid": 5.0}}
  assert [p.name for p in levels_sweep.figures(runs, results, tmp_path)] == ["levels_sweep.png"]
  assert (tmp_path / "codebook_size.png").stat().st_size > 0 and (
    tmp_path / "levels_sweep.png"
  ).stat().st_size > 0


@pytest.mark.parametrize("scale", registry.SCALES)
def test_uvim_experiment_runs_each_task_and_quantizer_through_both_stages(scale):
  runs = {r.name: r for r in uvim.runs(scale)}
  registry.check_runs(list(runs.values()))
  names = [f"{t}_{q}" for t in ("depth", "panoptic", "colorization") for q in ("fsq", "vq", "vq_nosplit")]
  names += ["panoptic_fsq_nocontext", "panoptic_vq_nocontext"]
  stage_two = [f"{n}_lm{seed}" for n in names for seed in ("", "_seed1", "_seed2")]  # three stage II seeds
  assert sorted(runs) == sorted([f"{n}_oracle" for n in names] + stage_two)
  for name, run in runs.items():
    path, arg = run.config.split(":", 1)
    config = get_uvim_config(arg)
    validate_config(config)
    assert path == "configs/uvim.py" and f"run={'cpu' if scale == 'cpu' else 'paper'}" in arg
    lm = "_lm" in name
    assert config.task == ("uvim_lm" if lm else "uvim_oracle")
    assert config.model.context == ("nocontext" not in name)
    if lm:
      assert run.depends_on == name.split("_lm")[0] + "_oracle"
      seed = int(name.rsplit("_seed", 1)[1]) if "_seed" in name else 0
      assert run.overrides == ((f"seed={seed}",) if seed else ())
    colour = name.startswith("colorization") and lm
    assert run.metrics == (("color_fid",) if colour else ())
    assert run.num_images == ((500 if scale == "cpu" else 5000) if colour else None)
  assert runs["depth_vq_nosplit_oracle"].config.endswith(
    "quantizer=vq_nosplit,context=on,run=" + ("cpu" if scale == "cpu" else "paper")
  )


def test_uvim_table_and_figure(tmp_path):
  runs = uvim.runs("cpu")
  results = {
    "depth_fsq_oracle": {"depth/rmse": 0.25, "codebook/usage": 0.995},
    "depth_fsq_lm": {"depth/rmse": 0.51234, "codebook/usage": 0.5},
    "depth_fsq_lm_seed1": {"depth/rmse": 0.6, "codebook/usage": 0.7},
    "depth_vq_lm_seed2": {"depth/rmse": 0.5},
    "panoptic_vq_lm": {"pq/all_pq": 0.4321},
    "colorization_fsq_oracle": {"color/psnr": 21.256},
    "colorization_fsq_lm": {"color_fid": 33.333},
  }
  text = uvim.table(runs, results)
  cells = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()[2:]]
  rows = {tuple(row[:3]): row[3:] for row in cells}
  assert len(rows) == len(cells) == 11
  # Stage II: the mean and standard deviation over the seeds with results: (0.51234 + 0.6) / 2 and
  # |0.6 - 0.51234| / sqrt(2); usage (0.5 + 0.7) / 2 and 0.2 / sqrt(2). One seed: its value.
  assert rows[("depth", "FSQ", "on")] == [
    "RMSE (m): 0.250",
    "99.5%",
    "RMSE (m): 0.556 \u00b1 0.062 (2)",
    "60.0% \u00b1 14.1% (2)",
    "0.473",
    "99.00%",
  ]
  assert rows[("depth", "VQ", "on")][2:4] == ["RMSE (m): 0.500 (1)", ""]
  assert rows[("panoptic", "VQ", "on")] == [
    "PQ: \u2013",
    MISSING,
    "PQ: 43.2% (1)",
    "",  # the run has results, without this metric
    "43.4%",
    "100.00%",
  ]
  colour = rows[("colorization", "FSQ", "on")]
  assert colour[0] == "PSNR (dB): 21.26" and colour[2] == "FID: 33.33 (1)" and colour[4] == "17.55"
  assert rows[("depth", "VQ without splitting", "on")][4:] == ["0.490", "0.78%"]
  assert rows[("panoptic", "FSQ", "off")][4:] == ["40.2%", ""]
  assert [p.name for p in uvim.figures(runs, results, tmp_path)] == ["uvim.png"]
  assert (tmp_path / "uvim.png").stat().st_size > 0


def test_uvim_images_collect_the_last_stage_two_predictions(tmp_path):
  from PIL import Image

  runs = uvim.runs("cpu")
  assert uvim.from_logs(runs, tmp_path / "runs", tmp_path) == (None, [])  # nothing trained yet: no file
  for step, shade in ((500, 0), (2000, 200)):
    folder = tmp_path / "runs" / "depth_fsq_lm" / "images"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 24, 3), shade, np.uint8)).save(folder / f"eval_predictions_{step:08d}.png")
  (path,) = uvim.predictions_figure(runs, tmp_path / "runs", tmp_path)
  assert path == tmp_path / "uvim_predictions.png"
  pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
  assert np.sum(np.all(pixels == 200, axis=1)) > 100  # the step-2000 picture (grey 200) is the one shown


def test_settling_repeats_study_runs_longer_and_finds_when_validation_settles(tmp_path):
  study = {r.name: r for r in codebook_size.runs("cpu")}
  for run in settling.runs("cpu"):  # the study's stage I, longer, validated more often, at a constant rate
    assert run.config == study[run.name].config and run.depends_on is None
    rest = [o for o in run.overrides if not o.startswith(("num_train_steps=", "eval_every_steps="))]
    assert rest[-4:] == [  # the recipe of the first study, which these runs measured
      "optimizer.schedule=constant",
      "optimizer.grad_clip_norm=0.0",
      "optimizer.warmup_steps=50",
      "optimizer.b1=0.0",
    ]
    assert rest[:-4] == [o for o in study[run.name].overrides if not o.startswith("num_train_steps=")]
    assert "num_train_steps=4000" in run.overrides and "eval_every_steps=250" in run.overrides
  with pytest.raises(ValueError, match="no 'paper' scale"):
    settling.runs("paper")

  steps = np.arange(250.0, 2001.0, 250.0)
  climbing = np.array([10.0, 12.0, 14.0, 14.9, 15.1, 15.0, 14.95, 15.0])
  assert settling.settled_at(steps, climbing, 0.25) == 1000.0  # 14.0 is 1 dB off; 14.9 on are within
  spiked = climbing.copy()
  spiked[-2] = 13.0
  assert settling.settled_at(steps, spiked, 0.25) == 2000.0  # only the last is within itself
  assert settling.settled_at(steps, np.full(8, 3.0), 0.0) == 250.0

  runs = settling.runs("cpu")
  run_dir = tmp_path / "runs" / "settling" / "cpu"
  (run_dir / "fsq_8_stage1").mkdir(parents=True)
  records = [{"step": 10, "split": "train", "mse": 0.1}]
  records += [
    {"step": int(s), "split": "eval", "psnr": 20.0 + min(s, 2000) / 1000, "codebook/usage": 0.5 + s / 8000}
    for s in np.arange(250, 4001, 250)
  ]
  (run_dir / "fsq_8_stage1" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  assert settling.log_table(runs, tmp_path / "nothing") is None
  rows = table_rows(settling.log_table(runs, run_dir))
  # PSNR 21, 22, 22, 22 dB at the report steps; 21.75 at 1750 is within 0.25 dB of the last 22, 21.5 at
  # 1500 is not. Usage grows 12.5 points per 1000 steps: only the last validation is within one point.
  assert rows == {
    "fsq_8_stage1": [
      "21.00",
      "22.00",
      "22.00",
      "22.00",
      "1750",
      "62.5%",
      "75.0%",
      "87.5%",
      "100.0%",
      "not by 4000",
    ]
  }
  section, figures = settling.from_logs(runs, run_dir, tmp_path / "out")
  assert section == settling.log_table(runs, run_dir) and [p.name for p in figures] == ["settling.png"]
  assert make_tables.main(["settling", f"--root={tmp_path / 'runs'}", f"--out={tmp_path / 't'}"]) == 0
  document = (tmp_path / "t" / "table.md").read_text()
  assert "## Validation during training" in document and "![settling](settling.png)" in document


def test_training_length_trains_the_study_s_fsq_2_16_longer_and_reports_every_1000_steps(tmp_path):
  study = {r.name: r for r in codebook_size.runs("cpu")}["fsq_16_stage1"]
  runs = training_length.runs("cpu")
  assert [r.name for r in runs] == ["fsq_16_4x_stage1", "fsq_16_2x_stage1"]
  for run, steps in zip(runs, (8000, 4000), strict=True):
    assert run.config == study.config and run.metrics == study.metrics and run.num_images == study.num_images
    rest = [o for o in run.overrides if not o.startswith(("num_train_steps=", "eval_every_steps="))]
    assert rest == [o for o in study.overrides if not o.startswith("num_train_steps=")]  # the same recipe
    assert f"num_train_steps={steps}" in run.overrides and "eval_every_steps=500" in run.overrides
    assert f"num_train_steps={steps // 4 if steps == 8000 else steps // 2}" in study.overrides
  with pytest.raises(ValueError, match="no 'paper' scale"):
    training_length.runs("paper")

  run_dir = tmp_path / "runs" / "training_length" / "cpu"
  (run_dir / "fsq_16_2x_stage1").mkdir(parents=True)
  records = [
    {"step": int(s), "split": "eval", "psnr": 25.0 + s / 4000, "codebook/usage": 0.4 + s / 40000}
    for s in np.arange(500, 4001, 500)
  ]
  (run_dir / "fsq_16_2x_stage1" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  section, figures = training_length.from_logs(runs, run_dir, tmp_path / "out")
  header = section.split("\n\n")[2].splitlines()[0]
  assert "PSNR @1000" in header and "PSNR @8000" in header and "Every 500 steps" in section
  row = table_rows(section)["fsq_16_2x_stage1"]
  # within 0.25 dB of the last (26.00) from 25.75 at step 3000; usage within 1 point only at the last
  assert row[:4] == ["25.25", "25.50", "25.75", "26.00"] and row[4:9] == [""] * 4 + ["3000"]
  assert row[9:13] == ["42.5%", "45.0%", "47.5%", "50.0%"] and row[-1] == "not by 4000"
  assert [p.name for p in figures] == ["training_length.png"]
