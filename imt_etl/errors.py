"""One exception hierarchy for the whole package; only cli.py maps these to exit codes."""

from __future__ import annotations


class ImtEtlError(Exception):
    """Base of every error the package raises on purpose (user-facing, no traceback needed)."""

    exit_code = 1

    def __reduce__(self):
        # Subclasses take their own arguments, so the default pickling cannot rebuild them;
        # rebuilt from message and attributes, an error raised in a worker process
        # (imt_etl.batchpool) reaches the caller with its type and exit code.
        return (_rebuild, (type(self), str(self), dict(self.__dict__)))


def _rebuild(cls: type[ImtEtlError], message: str, attributes: dict) -> ImtEtlError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(attributes)
    return error


class ConfigError(ImtEtlError):
    """Configuration is missing or invalid (settings file, environment, CLI options)."""

    exit_code = 2


class DictionaryError(ImtEtlError):
    """A REDCap data dictionary is malformed; names the field and what is wrong."""

    exit_code = 2

    def __init__(self, field: str, problem: str, source: str = ""):
        self.field = field
        self.problem = problem
        self.source = source
        where = f"data dictionary {source}" if source else "data dictionary"
        super().__init__(f"{where}, field {field!r}: {problem}")


class LogicError(ImtEtlError):
    """REDCap branching logic or a calc formula cannot be parsed; names the field and position."""

    exit_code = 2

    def __init__(self, field: str, text: str, position: int | None, message: str):
        self.field = field
        self.text = text
        self.position = position
        self.problem = message
        where = f" at position {position}" if position is not None else ""
        super().__init__(f"logic of field {field or '<unnamed>'!r}{where}: {message} in {text!r}")


class UnsupportedLogic(LogicError):
    """Valid REDCap logic that this package cannot evaluate or translate (e.g. needs the clock)."""


class ProjectXmlError(ImtEtlError):
    """A REDCap project XML file cannot be read; names the file and the element."""

    exit_code = 2

    def __init__(self, source: str, problem: str):
        self.source = source
        self.problem = problem
        super().__init__(f"project XML {source}: {problem}")


class RedcapError(ImtEtlError):
    """REDCap (or the emulator) answered with an error or could not be reached.

    The message never contains the API token: callers build it from the status and the
    server's error text only.
    """

    exit_code = 3

    def __init__(self, message: str, status: int | None = None, retryable: bool = False):
        self.status = status
        self.retryable = retryable
        prefix = f"REDCap error (HTTP {status})" if status else "REDCap error"
        super().__init__(f"{prefix}: {message}")


class RedcapAuthError(RedcapError):
    """The token was rejected (401/403): retrying cannot help."""

    def __init__(self, message: str, status: int | None = None, retryable: bool = False):
        super().__init__(f"{message} (the API token in REDCAP_API_TOKEN was refused: check it "
                         "belongs to this project and has API export rights)", status, False)


class ValidationFailed(ImtEtlError):
    """Validation found errors and the caller asked to stop on them."""

    exit_code = 4


class MappingError(ImtEtlError):
    """A mapping file is invalid; names the file and the key."""

    exit_code = 2

    def __init__(self, file: str, key: str, problem: str):
        self.file = file
        self.key = key
        super().__init__(f"mapping {file}, key {key!r}: {problem}")


class PublishError(ImtEtlError):
    """A FHIR server rejected a bundle or could not be reached."""

    exit_code = 5


class LockError(ImtEtlError):
    """Another run of the same project holds the lock."""

    exit_code = 6


class FhirBuildError(ImtEtlError):
    """A value cannot become a FHIR element (e.g. not of its field type); names record and field."""

    exit_code = 4

    def __init__(self, record: str, field: str, problem: str):
        self.record = record
        self.field = field
        self.problem = problem
        super().__init__(f"FHIR build, record {record!r}, field {field!r}: {problem}")
