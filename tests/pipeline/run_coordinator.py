"""Run a serial Coordinator over a folder (used by the kill -9 test as a subprocess)."""

from __future__ import annotations

import sys

from tests.pipeline.sessions import fast_settings

from cryowarp.pipeline.schedule import Coordinator

if __name__ == "__main__":
    project, movies, coords = sys.argv[1:4]
    coordinator = Coordinator(project, fast_settings(__import__("pathlib").Path(coords)), n_workers=0)
    print(coordinator.run(movies, stable_s=0.2), flush=True)
    coordinator.close()
