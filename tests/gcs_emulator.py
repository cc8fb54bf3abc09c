"""A Cloud Storage emulator for the tests: gcp-storage-emulator's HTTP server, in memory, with a bucket.

    python -m tests.gcs_emulator --port PORT --bucket NAME

One header added: its media downloads do not say the object's generation (``x-goog-generation``), which
Cloud Storage sends and tensorstore (orbax's array store) needs to read and conditionally rewrite its
checkpoint manifests; this wraps the emulator's download handler to send it.
"""

import argparse
from http import HTTPStatus

from gcp_storage_emulator import server
from gcp_storage_emulator.handlers import objects

_download = objects.download


def download_with_generation(request, response, storage, *args, **kwargs):
  """The emulator's download, plus the generation headers of the object it sends."""
  _download(request, response, storage, *args, **kwargs)
  if response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
    obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    response["x-goog-generation"] = obj["generation"]
    response["x-goog-metageneration"] = obj["metageneration"]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--port", type=int, required=True)
  parser.add_argument("--bucket", required=True)
  args = parser.parse_args()
  objects.download = download_with_generation  # what objects.get calls for ?alt=media
  for _, methods in server.HANDLERS:
    for method, handler in methods.items():
      if handler is _download:
        methods[method] = download_with_generation
  emulator = server.create_server("127.0.0.1", args.port, in_memory=True, default_bucket=args.bucket)
  emulator.run()


if __name__ == "__main__":
  main()
