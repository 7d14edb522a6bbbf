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
    ├── PrivacyRefusal         the privacy guard withheld a result (403)
    │   ├── BudgetExhausted    the agreement's epsilon budget is spent
    │   └── DifferencingRisk   combined with earlier releases it would isolate < k entities
    ├── AuditError             the audit trail could not be written or does not verify
    │   ├── AuditIntegrityError the trail contradicts itself or its signed checkpoints
    │   └── ReceiptInvalid     a receipt that does not prove its event (forged, altered)
    ├── ExecutionError         the engine failed; message is generic, details audited
    │   ├── EngineError        the statement failed in the engine (detail kept for the audit)
    │   ├── ResourceExhausted  a statement or the sandbox pool ran out of memory/capacity
    │   ├── StatementTimeout   the statement ran past the scenario's timeout_ms
    │   ├── StatementCancelled the statement was cancelled or its sandbox stopped
    │   └── SandboxFailed      the sandbox crashed or was killed; it is replaced
    ├── RuntimeUnavailable     neither a Docker engine nor bubblewrap to run sandboxes
    ├── StoreUnavailable       the metadata database is unreachable (restart, failover)
    ├── Unauthenticated        no, unknown, expired or revoked token
    ├── Forbidden              the role or the ownership does not allow it
    ├── AgreementUnusable      expired / suspended / revoked / wrong channel
    ├── QuotaExceeded          daily queries used up (carries retry_after_s)
    └── Conflict               the action does not fit the current state
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


class PrivacyRefusal(DsbError):
    """The privacy guard refused to release a result; ``code`` names the rule.

    403, not 429: waiting does not help. The budget of an agreement does not refill and
    an earlier release does not go away; the message says what to change instead.
    """

    code = "privacy_refusal"
    http_status = 403


class BudgetExhausted(PrivacyRefusal):
    code = "budget_exhausted"


class DifferencingRisk(PrivacyRefusal):
    code = "differencing_risk"


class ResultWithheld(PrivacyRefusal):
    """The post-check found what the scenario forbids in a result (a column, an internal
    value, a group below k): refused like the guard's refusals, not a server fault,
    although it also means a rule before it let the statement through."""

    code = "postcheck_failed"


# Refusals a finished job can carry, to raise them again from its stored code.
PRIVACY_REFUSALS: dict[str, type[PrivacyRefusal]] = {
    cls.code: cls for cls in (BudgetExhausted, DifferencingRisk, ResultWithheld)
}


class AuditError(DsbError):
    code = "audit_unavailable"
    http_status = 503


class AuditIntegrityError(AuditError):
    """The trail contradicts itself or its checkpoints; appending stops until verified."""

    code = "audit_integrity"


class ReceiptInvalid(AuditError):
    """A receipt that does not prove its event: forged, altered, or for another log."""

    code = "receipt_invalid"
    http_status = 422


class ExecutionError(DsbError):
    code = "execution_failed"
    http_status = 500


# -- access (gateway API) -------------------------------------------------------------


class Unauthenticated(DsbError):
    code = "unauthenticated"
    http_status = 401


class Forbidden(DsbError):
    code = "forbidden"
    http_status = 403


class AgreementUnusable(DsbError):
    """The agreement exists but may not be used now (code says why: expired, suspended...)."""

    http_status = 403


class QuotaExceeded(DsbError):
    code = "quota_exceeded"
    http_status = 429

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Conflict(DsbError):
    code = "conflict"
    http_status = 409


# -- sandbox runtime (sandbox/runtime/) ------------------------------------------------


class EngineError(ExecutionError):
    """The engine refused or failed the statement.

    ``message`` is generic because engine messages can quote data values; ``detail``
    holds the engine's own text for the audit trail, never for the client.
    """

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class ResourceExhausted(ExecutionError):
    code = "resource_exhausted"
    http_status = 422


class StatementTimeout(ExecutionError):
    code = "timeout"
    http_status = 408


class StatementCancelled(ExecutionError):
    code = "cancelled"
    http_status = 409


class SandboxFailed(ExecutionError):
    code = "sandbox_failed"
    http_status = 503


class RuntimeUnavailable(DsbError):
    """No way to run sandboxes on this machine; the message says what to install."""

    code = "runtime_unavailable"
    http_status = 503


class StoreUnavailable(DsbError):
    """The metadata database dropped or refused the connection; nothing was committed.

    Retryable: a restarted or failed-over PostgreSQL answers again within seconds, and
    the transaction that failed was rolled back whole (no half-recorded job or event).
    """

    code = "store_unavailable"
    http_status = 503
    retry_after_s = 2
