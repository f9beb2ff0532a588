"""The benchmark workload: the synthetic reference project at N participants behind the emulator."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

from imt_etl.config import Settings
from imt_etl.redcap.emulator import RedcapEmulator, new_token
from imt_etl.redcap.model import ProjectDefinition
from imt_etl.studies.imt.generator import generate_project

SEED = 2024
# A fixed, benchmark-only pseudonym key (>= 16 bytes); never a real study's key.
KEY = b"benchmark-pseudonym-key-not-secret"
BATCH_SIZE = 50  # the pipeline's default (Settings.batch_size); the baseline uses the same


def make_project(n_participants: int, seed: int = SEED) -> ProjectDefinition:
    return generate_project(n_participants=n_participants, seed=seed)


@contextmanager
def serve(project: ProjectDefinition) -> Iterator[tuple[RedcapEmulator, str]]:
    """The emulator on loopback with the project loaded a month ago (as on a real server)."""
    token = new_token()
    loaded = datetime.now() - timedelta(days=30)
    with RedcapEmulator(project, token=token, load_time=loaded) as emulator:
        yield emulator, token


def settings(url: str, token: str, out_dir: Path, batch_size: int = BATCH_SIZE) -> Settings:
    return Settings(redcap_url=url, token=token, out_dir=Path(out_dir), project_name="imt",
                    batch_size=batch_size, pseudonym_key=KEY)


def change_records(emulator: RedcapEmulator, fraction: float, seed: int = SEED) -> list[str]:
    """Edit one enrollment value in `fraction` of the records (at least one); their ids."""
    store = emulator.store
    records = store.record_ids()
    chosen = random.Random(seed).sample(records, max(1, round(len(records) * fraction)))
    for record in chosen:
        row = next(r for r in store.rows_of(record) if "enr_datetime" in r.values)
        store.set_values(record, {"enrollment_notes": f"benchmark edit of {record}"},
                         event=row.event, repeat_instrument=row.repeat_instrument,
                         repeat_instance=row.repeat_instance)
    return chosen
