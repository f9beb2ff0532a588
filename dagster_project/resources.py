"""Resources: the configured REDCap projects, and how a run connects to one of them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from dagster_project.projects import (
    REFERENCE,
    ProjectSpec,
    configured_projects,
    load_projects_file,
    project_by_name,
)
from imt_etl.redcap.client import RedcapClient


@dataclass(frozen=True)
class RedcapConnection:
    """An open connection to one REDCap project: a ready client plus its project name."""

    project_name: str
    client: RedcapClient
    batch_size: int


class ProjectsResource(dg.ConfigurableResource):
    """The projects (partitions) of this deployment and where each one's outputs go.

    `projects_file` empty means the single default project of IMT_ETL_DEPLOYMENT.
    """

    projects_file: str = ""

    def all(self) -> list[ProjectSpec]:
        if self.projects_file:
            return load_projects_file(Path(self.projects_file))
        return configured_projects()

    def spec(self, name: str) -> ProjectSpec:
        return project_by_name(self.all(), name)


class RedcapSource(dg.ConfigurableResource):
    """Opens a connection to one project; subclasses decide where the server and token come from."""

    @contextmanager
    def connect(self, spec: ProjectSpec) -> Iterator[RedcapConnection]:
        raise NotImplementedError("use RedcapProjectsResource or RedcapResource")
        yield  # pragma: no cover


class RedcapProjectsResource(RedcapSource):
    """Each project as its spec says: a real REDCap (token from the spec's environment variable)
    or the bundled emulator on loopback serving a project XML (demo, tests)."""

    timeout_s: float = 60.0

    @contextmanager
    def connect(self, spec: ProjectSpec) -> Iterator[RedcapConnection]:
        if spec.emulator:
            from imt_etl.demo import emulated_project

            xml = None if spec.emulator == REFERENCE else Path(spec.emulator)
            with emulated_project(xml) as (url, token):
                yield RedcapConnection(spec.name, RedcapClient(url, token), spec.batch_size)
            return
        client = RedcapClient(spec.url, spec.token(), timeout=self.timeout_s,
                              allow_insecure=spec.allow_insecure)
        yield RedcapConnection(spec.name, client, spec.batch_size)


class RedcapResource(RedcapSource):
    """One fixed REDCap server for every project. Give the token as `dg.EnvVar("...")`: it is
    then resolved at launch and never shown in the UI."""

    url: str
    token: str
    allow_insecure: bool = False

    @contextmanager
    def connect(self, spec: ProjectSpec) -> Iterator[RedcapConnection]:
        client = RedcapClient(self.url, self.token, allow_insecure=self.allow_insecure)
        yield RedcapConnection(spec.name, client, spec.batch_size)
