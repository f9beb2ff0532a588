"""The baseline of issue 8: the least a user could do, PyCap export in batches to one parquet file.

It exports every record with PyCap in the same batches as the pipeline, builds one DataFrame of
all rows and writes it to parquet. No typing, validation, FHIR or analysis tables: the pipeline's
full sync is compared with this as a ratio measured in the same run.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from redcap import Project


def export_to_parquet(url: str, token: str, out_file: Path, batch_size: int) -> dict[str, float]:
    """Run the baseline; its wall time in seconds and the rows it wrote."""
    started = time.perf_counter()
    project = Project(url, token)
    id_field = project.def_field
    ids = list(dict.fromkeys(str(r[id_field]) for r in project.export_records(fields=[id_field])))
    rows: list[dict] = []
    for start in range(0, len(ids), batch_size):
        rows.extend(project.export_records(records=ids[start:start + batch_size],
                                           raw_or_label="raw"))
    frame = pd.DataFrame(rows)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out_file, index=False)
    return {"seconds": time.perf_counter() - started, "rows": len(frame)}
