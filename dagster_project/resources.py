"""Resources: where REDCap is (a real server or the bundled emulator) and where output goes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from imt_etl.redcap.client import RedcapClient


@dataclass(frozen=True)
class RedcapConnection:
    """An open connection to one REDCap project: a ready client plus its project name."""

    project_name: str
    client: RedcapClient
    batch_size: int


class RedcapSource(dg.ConfigurableResource):
    """Where REDCap data comes from; subclasses open a connection to one project."""

    project_name: str = "redcap"
    batch_size: int = 50

    @contextmanager
    def connect(self) -> Iterator[RedcapConnection]:
        raise NotImplementedError("use RedcapResource or EmulatorRedcapResource")
        yield  # pragma: no cover


class RedcapResource(RedcapSource):
    """A real REDCap project. Give the token as `dg.EnvVar("REDCAP_API_TOKEN")`, never inline."""

    url: str
    token: str
    allow_insecure: bool = False

    @contextmanager
    def connect(self) -> Iterator[RedcapConnection]:
        client = RedcapClient(self.url, self.token, allow_insecure=self.allow_insecure)
        yield RedcapConnection(self.project_name, client, self.batch_size)


class EmulatorRedcapResource(RedcapSource):
    """The bundled REDCap-compatible server on loopback, serving a project XML (demo, tests)."""

    project_xml: str = ""  # empty: the bundled reference IMT project
    project_name: str = "imt"
    batch_size: int = 10

    @contextmanager
    def connect(self) -> Iterator[RedcapConnection]:
        from imt_etl.demo import emulated_project

        with emulated_project(Path(self.project_xml) if self.project_xml else None) as (url, tok):
            client = RedcapClient(url, tok)
            yield RedcapConnection(self.project_name, client, self.batch_size)


class OutputResource(dg.ConfigurableResource):
    """Where a project's outputs and sync state live."""

    out_dir: str = "out"

    def path(self) -> Path:
        return Path(self.out_dir)
