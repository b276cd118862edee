"""The gateway's policy file: which calls a gate matches, and what a bad file says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest

from greenlight.gateway.arguments import takes
from greenlight.gateway.policy import Policy, PolicyError, load

GATES = """
[[gate]]
name = "big refunds"
tools = ["refund"]
when = [{ arg = "amount", gt = 100 }, { arg = "customer.tier", in = ["gold", "vip"] }]
approvers = ["group:finance"]
min_approvals = 2

[[gate]]
tools = ["drop_*", "delete_*"]
when = [{ arg = "path", regex = "^/(prod|data)/" }, { arg = "dry_run", exists = false }]
policy = "destructive"

[[gate]]
tools = ["shell"]
"""


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    path = tmp_path / "gates.toml"
    path.write_text(GATES)
    return load(path)


def gate_of(policy: Policy, tool: str, arguments: dict[str, Any]) -> str | None:
    found = policy.gate_for(tool, arguments)
    return None if found is None else found[0]


def test_the_first_gate_whose_tools_and_tests_all_match_gates_the_call(policy: Policy) -> None:
    gold = {"amount": 250, "customer": {"tier": "gold"}}
    assert gate_of(policy, "refund", gold) == "big refunds"
    assert gate_of(policy, "refund", {**gold, "amount": 99}) is None
    assert gate_of(policy, "refund", {"amount": 250, "customer": {"tier": "basic"}}) is None
    assert gate_of(policy, "delete_table", {"path": "/prod/orders"}) == "gate 2"
    assert gate_of(policy, "delete_table", {"path": "/tmp/x"}) is None
    assert gate_of(policy, "drop_db", {"path": "/data/x", "dry_run": True}) is None
    assert gate_of(policy, "shell", {}) == "gate 3"
    assert gate_of(policy, "read_file", {"path": "/prod/x"}) is None


def test_a_missing_argument_fails_a_test_and_one_that_cannot_be_made_asks(policy: Policy) -> None:
    assert gate_of(policy, "refund", {"customer": {"tier": "gold"}}) is None  # no amount
    # Text where a number was expected: in doubt, people are asked.
    assert gate_of(policy, "refund", {"amount": "5000", "customer": {"tier": "vip"}}) == (
        "big refunds"
    )
    assert gate_of(policy, "delete_x", {"path": 42}) == "gate 2"


def test_a_gate_asks_under_its_inline_policy_or_the_named_one(policy: Policy) -> None:
    big, named, bare = policy.gate
    assert big.to_policy() == {"approvers": ["group:finance"], "min_approvals": 2}
    assert named.to_policy() == "destructive"
    assert bare.to_policy() is None  # the server's policy named default


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[[gate]]\ntools = [\n", "not TOML"),
        ("", "no [[gate]] tables"),
        ('[[gate]]\ntools = ["x"]\nwhen = [{ arg = "a" }]\n', "gate[1].when[1]: give exactly one"),
        ('[[gate]]\ntools = ["x"]\nwhen = [{ arg = "a", regex = "(" }]\n', "does not compile"),
        ("[[gate]]\ntools = []\n", "gate[1].tools"),
        ('[[gate]]\ntools = ["x"]\napprover = ["bob"]\n', "gate[1].approver: Extra inputs"),
        ('[[gate]]\ntools = ["x"]\npolicy = "p"\napprovers = ["bob"]\n', "not both"),
        ('[[gate]]\ntools = ["x"]\nmin_approvals = 2\n', "min_approvals needs approvers"),
        ('[[gate]]\ntools = ["x"]\napprovers = ["b"]\non_expiry = "escalate"\n', "escalate_to"),
        (
            '[[gate]]\ntools = ["x"]\n[[gate]]\ntools = ["y"]\nexpires_in = -1\n',
            "gate[2].expires_in",
        ),
    ],
)
def test_a_bad_file_is_refused_naming_the_gate_and_field(
    tmp_path: Path, text: str, says: str
) -> None:
    path = tmp_path / "gates.toml"
    path.write_text(text)
    with pytest.raises(PolicyError) as caught:
        load(path)
    assert str(path) in str(caught.value)
    assert says in str(caught.value)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot be read"):
        load(tmp_path / "nope.toml")


PROD = """
[[gate]]
name = "writes"
tools = ["write_file"]
when = [{ arg = "path", glob = "/srv/data/prod*" }]

[[gate]]
name = "relative"
tools = ["note"]
when = [{ arg = "path", glob = "prod/*" }]
"""


def policy_of(tmp_path: Path, text: str) -> Policy:
    path = tmp_path / "gates.toml"
    path.write_text(text)
    return load(path)


@pytest.mark.parametrize(
    "path",
    [
        "/srv/data/prod/a",
        "/srv/data/./prod/a",
        "/srv/data//prod/a",
        "/srv/data/tmp/../prod/a",
        "//srv/data/prod/a",
        "/srv/data/prod",
        "/srv/data/prod/",
        "/srv/./data/prod/../prod/deep/a",
        "prod/a",  # relative: resolved where the upstream runs, so people are asked
        "~/a",
    ],
)
def test_an_absolute_glob_matches_paths_as_the_upstream_resolves_them(
    tmp_path: Path, path: str
) -> None:
    assert gate_of(policy_of(tmp_path, PROD), "write_file", {"path": path}) == "writes"


@pytest.mark.parametrize(
    "path", ["/srv/data/tmp/a", "/srv/data/prod/../tmp/a", "/srv/data/./tmp//a", "/srv/prod"]
)
def test_a_path_outside_an_absolute_glob_passes(tmp_path: Path, path: str) -> None:
    assert gate_of(policy_of(tmp_path, PROD), "write_file", {"path": path}) is None


def test_a_relative_glob_matches_the_argument_as_sent(tmp_path: Path) -> None:
    policy = policy_of(tmp_path, PROD)
    assert gate_of(policy, "note", {"path": "prod/a"}) == "relative"
    assert gate_of(policy, "note", {"path": "./prod/a"}) is None


class Target(pydantic.BaseModel):
    env: str
    zone: str | None = None


class Deploy(pydantic.BaseModel):
    version: str
    target: Target
    fallback: Target | None = None
    labels: dict[str, str] = {}


MOVE: dict[str, Any] = {
    "type": "object",
    "properties": {"source": {"type": "string"}, "destination": {"type": "string"}},
    "required": ["source", "destination"],
    "additionalProperties": False,
}


def test_whether_a_tool_takes_an_argument_is_read_from_its_input_schema() -> None:
    schema = Deploy.model_json_schema()  # nested models as $defs and $ref, optional as anyOf
    for path in ("version", "target", "target.env", "fallback.zone", "labels.team"):
        assert takes(schema, path), path
    for path in ("path", "target.nope", "version.major", "fallback.env.x"):
        assert not takes(schema, path), path
    assert takes(MOVE, "source") and not takes(MOVE, "path")
    assert takes({"type": "object"}, "anything.below")  # free-form: any name
    assert not takes({"type": "object", "properties": {}}, "path")  # no arguments
    assert not takes(None, "path")  # no such tool


def test_a_test_of_an_argument_a_covered_tool_does_not_take_is_refused(tmp_path: Path) -> None:
    policy = policy_of(
        tmp_path,
        '[[gate]]\nname = "writes"\ntools = ["write_file", "move_*"]\n'
        'when = [{ arg = "path", glob = "/srv/data/prod/*" }]\n'
        '[[gate]]\ntools = ["deploy"]\nwhen = [{ arg = "target.env", equals = "prod" }]\n',
    )
    tools: dict[str, dict[str, Any]] = {
        "write_file": {"type": "object", "properties": {"path": {}, "content": {}}},
        "move_file": MOVE,
        "deploy": Deploy.model_json_schema(),
        "read_file": {"type": "object", "properties": {"path": {}}},  # no gate covers it
    }
    with pytest.raises(PolicyError) as caught:
        policy.check(tools)
    assert str(caught.value).count("tests argument") == 1, caught.value
    assert (
        "gate 'writes' tests argument 'path', which tool 'move_file' does not take "
        "(it takes destination, source)"
    ) in str(caught.value)
    moves_path = {"type": "object", "properties": {"path": {}}}
    policy.check({**tools, "move_file": moves_path})  # a move_file taking path fits
    assert policy.misfits("move_new", None) == [
        "gate 'writes' tests argument 'path', which tool 'move_new' does not take "
        "(it is not among the upstream's tools)"
    ]
    assert policy.misfits("read_file", None) == []


def test_exists_false_of_an_argument_a_covered_tool_does_not_take_fits_and_gates(
    tmp_path: Path,
) -> None:
    """``exists = false`` holds exactly when the argument is missing: over a tool that does
    not take it, the gate gates every call, so the policy fits. ``exists = true`` of it
    would never hold, so that one is refused."""
    policy = policy_of(
        tmp_path,
        '[[gate]]\nname = "no dry run"\ntools = ["*"]\n'
        'when = [{ arg = "dry_run", exists = false }]\n',
    )
    tools: dict[str, dict[str, Any]] = {
        "delete_file": {"type": "object", "properties": {"path": {}, "force": {}}},
        "drop_table": {"type": "object", "properties": {"table": {}, "dry_run": {}}},
    }
    policy.check(tools)
    assert policy.misfits("delete_file", tools["delete_file"]) == []
    assert gate_of(policy, "delete_file", {"path": "/a"}) == "no dry run"
    assert gate_of(policy, "drop_table", {"table": "t", "dry_run": True}) is None
    assert gate_of(policy, "drop_table", {"table": "t"}) == "no dry run"

    given = policy_of(
        tmp_path, '[[gate]]\ntools = ["*"]\nwhen = [{ arg = "dry_run", exists = true }]\n'
    )
    with pytest.raises(PolicyError, match="tests argument 'dry_run', which tool 'delete_file'"):
        given.check(tools)


def test_a_gate_naming_a_tool_the_upstream_does_not_list_is_refused(tmp_path: Path) -> None:
    """A misspelled tool name would leave the gate guarding nothing: each pattern must
    match a listed tool, unless the gate is for tools the upstream adds later."""
    policy = policy_of(
        tmp_path,
        '[[gate]]\nname = "writes"\ntools = ["write_file", "edit_fiel"]\napprovers = ["bob"]\n'
        '[[gate]]\ntools = ["delete_*"]\n'
        '[[gate]]\ntools = ["drop_*", "truncate"]\n'
        '[[gate]]\nname = "learned"\ntools = ["echo_*"]\ntools_added_later = true\n'
        'approvers = ["bob"]\n',
    )
    tools: dict[str, dict[str, Any]] = {
        "write_file": {"type": "object", "properties": {"path": {}, "content": {}}},
        "edit_file": {"type": "object", "properties": {"path": {}, "edits": {}}},
        "delete_file": {"type": "object", "properties": {"path": {}}},
    }
    with pytest.raises(PolicyError) as caught:
        policy.check(tools)
    said = str(caught.value)
    assert "gate 'writes': 'edit_fiel'; gate 'gate 3': 'drop_*', 'truncate'." in said, said
    assert "The upstream lists delete_file, edit_file, write_file." in said, said
    assert "tools_added_later = true" in said
    assert "'write_file'" not in said and "'delete_*'" not in said and "echo" not in said
    # tools_added_later says how start-up checks the gate, not who approves.
    assert policy.gate[3].to_policy() == {"approvers": ["bob"]}

    fixed = policy_of(tmp_path, '[[gate]]\ntools = ["write_file", "edit_file"]\n')
    fixed.check(tools)
    with pytest.raises(PolicyError, match=r"gate 1': 'write_file', 'edit_file'.*lists no tools"):
        fixed.check({})  # an upstream that lists no tools: the gate would guard nothing


def test_the_docs_pair_of_gates_asks_for_every_call_that_is_not_a_dry_run() -> None:
    # docs/gateway.md: `exists = false` alone lets `dry_run: false` (a real run) through;
    # with a second gate on `not_equals = true`, only a dry run passes.
    alone = Policy.model_validate(
        {"gate": [{"tools": ["*"], "when": [{"arg": "dry_run", "exists": False}]}]}
    )
    assert alone.gate_for("delete_file", {"dry_run": False}) is None
    pair = Policy.model_validate(
        {
            "gate": [
                {"tools": ["*"], "when": [{"arg": "dry_run", "exists": False}]},
                {"tools": ["*"], "when": [{"arg": "dry_run", "not_equals": True}]},
            ]
        }
    )
    for asked in ({}, {"dry_run": False}, {"dry_run": None}, {"dry_run": "yes"}):
        assert pair.gate_for("delete_file", asked) is not None, asked
    assert pair.gate_for("delete_file", {"dry_run": True}) is None
