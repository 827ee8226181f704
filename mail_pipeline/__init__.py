"""mail-pipeline's domain core: reading, mapping, validation, merge rules, logs, the command line.

Nothing here imports Dagster; the Dagster layer lives in the top-level `assets` package.
"""

import csv as _csv
import sys as _sys

# A cell is as long as it is: rows are failed for size by validation (16 MiB), never by the
# csv module's 128 KiB default, which every reader here (staging, line reader, logs) would hit.
_csv.field_size_limit(_sys.maxsize)
