"""mail-pipeline's domain core: reading, mapping, validation, merge rules, logs, exports.

Nothing here imports Dagster, `assets` (the definitions) or `service` (the job service and the
command line): the layers above import this one.
"""

import csv as _csv
import sys as _sys

# A cell is as long as it is: rows are failed for size by validation (16 MiB), never by the
# csv module's 128 KiB default, which every reader here (staging, line reader, logs) would hit.
_csv.field_size_limit(_sys.maxsize)
