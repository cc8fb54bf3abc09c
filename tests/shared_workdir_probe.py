"""A process of a multi-process job that checks its workdir is shared (``fsq.files.check_shared``),
for tests/test_files.py through scripts.launch_local: ``--per_process`` gives each process a directory
of its own, as per-host local disks would."""

import argparse
import sys

from fsq.train import distributed


def main() -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--per_process", action="store_true")
  parser.add_argument("--coordinator_address")
  parser.add_argument("--num_processes", type=int)
  parser.add_argument("--process_id", type=int)
  args = parser.parse_args()
  distributed.initialize("on", args.coordinator_address, args.num_processes, args.process_id)
  from pathlib import Path

  from fsq.files import check_shared

  workdir = Path(args.workdir) / (f"host_{args.process_id}" if args.per_process else "")
  try:
    check_shared(workdir, wait_s=1.0)
  except ValueError as e:
    print(f"refused: {e}")
    return 3
  print("shared")
  return 0


if __name__ == "__main__":
  sys.exit(main())
