"""`python -m core.worker JOB_DIR`: the process one training job runs in (started by `core.app.jobs`)."""

import sys
from pathlib import Path

from core.app.jobs import run_worker

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m core.worker JOB_DIR")
    sys.exit(run_worker(Path(sys.argv[1])))
