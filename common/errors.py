"""The fedcollab exception tree.

Every error a user can cause derives from :class:`FedcollabError`, carries a
``hint`` that says what to do, and maps to its own CLI exit code::

    FedcollabError                      (exit 1)
    +-- DataValidationError             (exit 10)  a partner's CSV breaks its schema
    +-- SchemaError                     (exit 11)  a schema file is itself invalid
    +-- JobSpecError                    (exit 12)  a job spec file is invalid
    +-- WorkspaceError                  (exit 13)  federation workspace missing/corrupt
    +-- FederationError                 (exit 14)  coordinator/nodes unreachable, job failed
    |   +-- NotEnoughPartnersError      (exit 15)  fewer partners than the job's minimum
    |   +-- FleetLinkError              (exit 17)  a node's Fleet API link stayed down
    +-- ProtocolError                   (exit 16)  a peer sent a malformed/unexpected message
    +-- PrivacyError                    (exit 20)
    |   +-- BudgetExceededError         (exit 21)  a round would exceed a dataset's DP cap
    |   +-- CiphertextError             (exit 22)  a ciphertext is foreign, malformed, truncated
    +-- ComplianceError                 (exit 30)
    |   +-- AuditVerificationError      (exit 31)  an audit log/bundle fails verification
    |   +-- EventOrderError             (exit 30)  an event older than its log's newest
    |   +-- PolicyRefusal               (exit 32)  purpose/grant/consent missing or expired
    +-- ConsoleError                    (exit 40)  web console: bad user, config or unsafe start

Exit code 2 is reserved for command-line usage errors (Typer/Click).
"""

from __future__ import annotations

__all__ = [
    "AuditVerificationError",
    "BudgetExceededError",
    "CiphertextError",
    "ComplianceError",
    "ConsoleError",
    "DataValidationError",
    "EventOrderError",
    "FedcollabError",
    "FederationError",
    "FleetLinkError",
    "JobSpecError",
    "NotEnoughPartnersError",
    "PolicyRefusal",
    "PrivacyError",
    "ProtocolError",
    "SchemaError",
    "WorkspaceError",
    "error_class",
]


class FedcollabError(Exception):
    """Root of every error fedcollab raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    #: Set by a command that already showed this error's message and hint (e.g. the
    #: progress display of a failed job): the entry point then prints a short line.
    shown: bool = False

    def diagnostics(self) -> str:
        """A human-readable explanation: what went wrong and what to do."""
        text = self.message
        if self.hint:
            text += f"\nWhat to do: {self.hint}"
        return text


class DataValidationError(FedcollabError):
    """A dataset does not satisfy its schema.

    ``file``, ``row`` (1-based, the header is row 1) and ``column`` locate the
    problem; any of them may be ``None`` when it does not apply.
    """

    exit_code = 10

    def __init__(
        self,
        message: str,
        *,
        file: str,
        row: int | None = None,
        column: str | None = None,
        hint: str = "",
    ) -> None:
        where = f"{file}"
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {message}", hint=hint)
        self.file = file
        self.row = row
        self.column = column


class SchemaError(FedcollabError):
    exit_code = 11


class JobSpecError(FedcollabError):
    exit_code = 12


class WorkspaceError(FedcollabError):
    exit_code = 13


class FederationError(FedcollabError):
    exit_code = 14


class NotEnoughPartnersError(FederationError):
    exit_code = 15


class FleetLinkError(FederationError):
    """A SuperNode's calls to the coordinator's Fleet API kept failing (HTTP 5xx, refused
    connections) for longer than the node's retry window (client/fleet_poll.py)."""

    exit_code = 17


class ProtocolError(FedcollabError):
    exit_code = 16


class PrivacyError(FedcollabError):
    exit_code = 20


class BudgetExceededError(PrivacyError):
    exit_code = 21


class CiphertextError(PrivacyError):
    exit_code = 22


class ComplianceError(FedcollabError):
    exit_code = 30


class AuditVerificationError(ComplianceError):
    exit_code = 31


class EventOrderError(ComplianceError):
    """An audit event whose time is earlier than the newest event of its log."""


class PolicyRefusal(ComplianceError):
    exit_code = 32


class ConsoleError(FedcollabError):
    """The web console refuses a user, a configuration or an unsafe way to start."""

    exit_code = 40


def error_class(name: str) -> type[FedcollabError]:
    """The error class called ``name`` (as recorded in a job's result), or FederationError."""
    cls = globals().get(name)
    if isinstance(cls, type) and issubclass(cls, FedcollabError):
        return cls
    return FederationError
