"""One error tree for the whole service.

Every error the user can cause carries a stable machine-readable ``code`` and a
message that says what was wrong and, where possible, how to fix it. HTTP status
codes are attached here, in one place, so routers never choose them.

    DsbError
    ├── PolicyError            invalid policy files (carries a list of PolicyIssue)
    ├── SignatureError         unsigned / tampered / untrusted agreement
    ├── KeyError_              missing or wrong key material
    ├── DatasetError           publishing / lifecycle problems
    │   └── SchemaMismatch     source data does not match the declared columns
    ├── NotFound
    ├── QueryRejected          the rewriter refused a statement (code names the rule)
    ├── AuditError             the audit trail could not be written or does not verify
    └── ExecutionError         the engine failed; message is generic, details audited
"""

from __future__ import annotations

from dataclasses import dataclass


class DsbError(Exception):
    code: str = "error"
    http_status: int = 400

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class PolicyIssue:
    """One problem in one policy file; ``line`` is 1-based, 0 if unknown."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class PolicyError(DsbError):
    code = "invalid_policy"
    http_status = 422

    def __init__(self, issues: list[PolicyIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class SignatureError(DsbError):
    code = "bad_signature"
    http_status = 403


class KeyMaterialError(DsbError):
    code = "key_error"
    http_status = 500


class DatasetError(DsbError):
    code = "dataset_error"
    http_status = 422


class SchemaMismatch(DatasetError):
    code = "schema_mismatch"


class NotFound(DsbError):
    code = "not_found"
    http_status = 404


class QueryRejected(DsbError):
    """The rewriter refused the statement; ``code`` names the rule that fired."""

    http_status = 400

    def __init__(self, code: str, message: str, *, position: int | None = None) -> None:
        super().__init__(message, code=code)
        self.position = position


class AuditError(DsbError):
    code = "audit_unavailable"
    http_status = 503


class ExecutionError(DsbError):
    code = "execution_failed"
    http_status = 500
