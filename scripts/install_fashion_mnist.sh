#!/usr/bin/env bash
# Installs the Debian package dataset-fashion-mnist (real Fashion-MNIST, MIT), or says how to.
set -euo pipefail
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "Fashion-MNIST is missing. Install it with: sudo apt-get install dataset-fashion-mnist" >&2
  echo "(or pass --data-dir to a folder holding the four idx files)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
  || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }
echo "installed dataset-fashion-mnist into /usr/share/datasets/fashion-mnist"
