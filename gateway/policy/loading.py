"""Load a policy tree (``datasets/``, ``scenarios/``, ``agreements/``) into a PolicySet.

Every problem in every file is collected before anything is reported, so one run of
``dsb policy check`` lists them all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from yaml.nodes import Node

from gateway.errors import PolicyError, PolicyIssue, SignatureError
from gateway.policy import crossref, signing, yamlmarks
from gateway.policy.models import Agreement, Dataset, Scenario

M = TypeVar("M", bound=BaseModel)
KINDS: dict[str, type[BaseModel]] = {
    "datasets": Dataset,
    "scenarios": Scenario,
    "agreements": Agreement,
}


@dataclass
class Source:
    """Where a policy object came from, to point errors at a line."""

    path: Path
    node: Node | None

    def issue(self, loc: Sequence[str | int], message: str) -> PolicyIssue:
        return PolicyIssue(
            file=str(self.path),
            line=yamlmarks.line_of(self.node, loc),
            field=yamlmarks.dotted(loc),
            message=message,
        )


@dataclass
class PolicySet:
    datasets: dict[str, Dataset] = field(default_factory=dict)
    scenarios: dict[str, Scenario] = field(default_factory=dict)
    agreements: dict[str, Agreement] = field(default_factory=dict)
    sources: dict[tuple[str, str], Source] = field(default_factory=dict)
    # Ids (file stems) of files that failed to load: references to them are not reported
    # again as "unknown", the file's own issue already says what is wrong.
    invalid: set[tuple[str, str]] = field(default_factory=set)

    def dataset(self, dataset_id: str) -> Dataset:
        from gateway.errors import NotFound

        try:
            return self.datasets[dataset_id]
        except KeyError:
            raise NotFound(f"no dataset {dataset_id!r}", code="unknown_dataset") from None

    def scenario(self, scenario_id: str) -> Scenario:
        from gateway.errors import NotFound

        try:
            return self.scenarios[scenario_id]
        except KeyError:
            raise NotFound(f"no scenario {scenario_id!r}", code="unknown_scenario") from None

    def agreement(self, agreement_id: str) -> Agreement:
        from gateway.errors import NotFound

        try:
            return self.agreements[agreement_id]
        except KeyError:
            raise NotFound(f"no agreement {agreement_id!r}", code="unknown_agreement") from None


def load_policies(
    root: Path, *, trusted_keys_dir: Path | None = None, require_signatures: bool = True
) -> PolicySet:
    """Load and check every policy under ``root``; raise PolicyError listing all issues."""
    issues: list[PolicyIssue] = []
    policies = PolicySet()
    if not root.is_dir():
        raise PolicyError([PolicyIssue(str(root), 0, "", "policy directory does not exist")])
    for kind, model in KINDS.items():
        folder = root / kind
        for path in sorted(folder.glob("*.y*ml")) if folder.is_dir() else []:
            loaded = _load_one(path, model, issues)
            if loaded is None:
                policies.invalid.add((kind, path.stem))
                continue
            obj, source = loaded
            table: dict[str, Any] = getattr(policies, kind)
            obj_id: str = obj.id  # type: ignore[attr-defined]
            if path.stem != obj_id:
                issues.append(source.issue(["id"], f"id {obj_id!r} must match the file name "
                                           f"{path.name!r} (rename the file to {obj_id}.yaml)"))
            if obj_id in table:
                first = policies.sources[(kind, obj_id)].path
                issues.append(source.issue(["id"], f"id {obj_id!r} is also defined in {first}"))
                continue
            table[obj_id] = obj
            policies.sources[(kind, obj_id)] = source
    issues.extend(crossref.check(policies))
    if require_signatures:
        keys = signing.trusted_keys(trusted_keys_dir or root / "keys")
        for agreement_id, agreement in policies.agreements.items():
            try:
                signing.verify(agreement, keys)
            except SignatureError as exc:
                source = policies.sources[("agreements", agreement_id)]
                issues.append(source.issue(["signature"], exc.message))
    if issues:
        raise PolicyError(sorted(issues, key=lambda i: (i.file, i.line, i.field)))
    return policies


def load_model(path: Path, model: type[M]) -> tuple[M, Source]:
    """Load one file as ``model``; raise PolicyError with its issues."""
    issues: list[PolicyIssue] = []
    loaded = _load_one(path, model, issues)
    if loaded is None:
        raise PolicyError(issues)
    return loaded


def _load_one(
    path: Path, model: type[M], issues: list[PolicyIssue]
) -> tuple[M, Source] | None:
    try:
        data, node = yamlmarks.load(path)
    except yamlmarks.YamlProblem as exc:
        issues.append(PolicyIssue(str(path), exc.line, "", exc.message))
        return None
    except (OSError, UnicodeDecodeError) as exc:
        issues.append(PolicyIssue(str(path), 0, "", f"cannot read file: {exc}"))
        return None
    source = Source(path, node)
    if not isinstance(data, dict):
        found = type(data).__name__
        issues.append(source.issue([], f"expected a mapping of fields, found {found}"))
        return None
    try:
        return model.model_validate(data), source
    except ValidationError as exc:
        issues.extend(source.issue(list(err["loc"]), _message(err)) for err in exc.errors())
        return None


def _message(err: Any) -> str:
    kind: str = err["type"]
    messages: dict[str, Callable[[Any], str]] = {
        "extra_forbidden": lambda e: "unknown field (not part of the policy format)",
        "missing": lambda e: "required field is missing",
    }
    if kind in messages:
        return messages[kind](err)
    msg: str = err["msg"]
    return msg.removeprefix("Value error, ")
