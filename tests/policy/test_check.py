"""`dsb policy check`: the demo passes; each broken fixture gets its own precise message."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.errors import PolicyError
from gateway.policy.loading import load_policies

runner = CliRunner()


@dataclass(frozen=True)
class Broken:
    """Replace ``old`` by ``new`` in one demo file; expect one issue at ``line``/``field``."""

    name: str
    file: str
    old: str
    new: str
    line: int
    field: str
    message: str  # regular expression the message must match
    # Issues that follow from this one in other fields or files (an agreement whose text
    # changed also fails its signature; a renamed dataset is unknown where it is used).
    consequences: int = 0


CUT = "<cut from here to the end of the file>"


SCEN = "scenarios/flights-aggregate.yaml"
RES = "scenarios/residents-sandbox.yaml"
AGR = "agreements/agr-acme-flights-aggregate.yaml"
CASES = [
    Broken("malformed_yaml", SCEN, "mode: aggregate", "mode: [aggregate", 5, "",
           r"not valid YAML"),
    Broken("unknown_field", "datasets/airlines.yaml", "domain: transport",
           "domain: transport\ncolour: red", 10, "colour", r"unknown field"),
    Broken("wrong_type", SCEN, "k: 5 ", "k: five ", 5, "k", r"valid integer"),
    Broken("k_below_two", SCEN, "k: 5 ", "k: 1 ", 5, "k", r"k must be at least 2"),
    Broken("aggregate_without_k", SCEN, "k: 5 ", "# k: 5 ", 1, "k",
           r"aggregate mode needs k"),
    Broken("unknown_column", SCEN, "join_keys: [carrier, tailnum,", "join_keys: [carrier, "
           "tailnumber,", 19, "datasets.flights.join_keys[1]",
           r"column 'tailnumber' is not a column of dataset 'flights'"),
    Broken("row_filter_syntax", RES, "row_filter: age >= 18", "row_filter: age >= (18", 22,
           "datasets.residents.row_filter", r"row filter does not parse"),
    Broken("row_filter_subquery", RES, "row_filter: age >= 18",
           "row_filter: age >= (SELECT max(age) FROM residents)", 22,
           "datasets.residents.row_filter", r"subqueries"),
    Broken("row_filter_unknown_column", RES, "row_filter: age >= 18",
           "row_filter: salary >= 18", 22, "datasets.residents.row_filter",
           r"'salary', not a column of 'residents'"),
    Broken("mask_type", RES, "birth_date: {kind: generalise, unit: year}",
           "birth_date: {kind: truncate, length: 4}", 21, "datasets.residents.masks.birth_date",
           r"truncate needs a VARCHAR column"),
    Broken("unknown_dataset", SCEN, "  airlines:\n", "  airliners:\n", 20, "datasets.airliners",
           r"unknown dataset 'airliners'"),
    Broken("window_reversed", AGR, "valid_until: '2027-12-31'", "valid_until: '2025-12-31'", 9,
           "valid_until", r"valid_until 2025-12-31 is before valid_from 2026-01-01"),
    Broken("unknown_scenario", AGR, "scenario: flights-aggregate", "scenario: flights-everything",
           6, "scenario", r"unknown scenario 'flights-everything'", consequences=1),
    Broken("duplicate_key", SCEN, "mode: aggregate", "mode: aggregate\nmode: records", 5, "",
           r"duplicate key 'mode'"),
    Broken("bad_sensitivity", "datasets/planes.yaml", "sensitivity: identifier",
           "sensitivity: secret", 22, "columns[0].sensitivity", r"'public', 'quasi-identifier'"),
    Broken("entity_key_not_a_column", "datasets/planes.yaml", "entity_key: tailnum",
           "entity_key: registration", 15, "entity_key", r"'registration' is not one of"),
    Broken("tampered_agreement", AGR, "purpose: 'Route planning:", "purpose: 'Route planning "
           "and resale:", 16, "signature", r"signature does not match its content"),
    Broken("unsigned_agreement", AGR, "signature:", CUT, 1, "signature", r"is not signed"),
    Broken("id_not_file_name", "datasets/weather.yaml", "id: weather", "id: weather2", 1, "id",
           r"must match the file name", consequences=1),
    Broken("closed_dataset_opened", "datasets/planes.yaml", "class: conditional", "class: closed",
           0, "datasets.planes", r"closed and cannot be opened"),
]


def test_demo_policies_pass() -> None:
    policies = load_policies(Path("policies"))
    assert set(policies.datasets) >= {"flights", "airlines", "airports", "planes", "weather",
                                      "residents"}
    assert {s.mode.value for s in policies.scenarios.values()} == {"aggregate", "records",
                                                                   "sandbox"}
    result = runner.invoke(app, ["policy", "check", "policies"])
    assert result.exit_code == 0, result.output
    assert "ok: 6 datasets" in result.output


def _break(tree: Path, case: Broken) -> Path:
    path = tree / case.file
    text = path.read_text()
    assert case.old in text, f"fixture {case.name}: {case.old!r} not in {case.file}"
    if case.new == CUT:
        path.write_text(text[: text.index(case.old)])
    else:
        path.write_text(text.replace(case.old, case.new, 1))
    return path


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_broken_policy_is_reported_precisely(policy_tree: Path, case: Broken) -> None:
    path = _break(policy_tree, case)
    with pytest.raises(PolicyError) as caught:
        load_policies(policy_tree)
    issues = caught.value.issues
    if case.name == "closed_dataset_opened":
        # Closing planes breaks the one scenario that opens it; that is the issue to see.
        issues = [i for i in issues if "closed" in i.message]
        path = policy_tree / SCEN
    assert len(issues) == 1 + case.consequences, "\n".join(map(str, issues))
    issue = next(i for i in issues if i.file == str(path) and i.field == case.field)
    assert issue.file == str(path)
    assert re.search(case.message, issue.message), issue.message
    assert issue.field == case.field
    if case.line:
        assert issue.line == case.line, str(issue)


def test_every_problem_is_reported_at_once_with_exit_code_1(policy_tree: Path) -> None:
    chosen = [c for c in CASES if c.name in {"k_below_two", "unknown_field", "row_filter_syntax",
                                            "window_reversed"}]
    for case in chosen:
        _break(policy_tree, case)
    result = runner.invoke(app, ["policy", "check", str(policy_tree)])
    assert result.exit_code == 1
    for case in chosen:
        assert re.search(case.message, result.output), (case.name, result.output)
    assert "4 problem(s) found" in result.output


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["policy", "check", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "policy directory does not exist" in result.output
