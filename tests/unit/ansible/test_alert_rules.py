"""The monitoring role's alert rules: promtool accepts them and their unit tests pass, every rule carries
the labels the coverage check reads (``severity``, ``covers``) and annotations that name the stack, the
component and the next step, and every rule has a firing and a quiet promtool test case.

promtool is Debian's (package ``prometheus``, installed by ``make bootstrap``).
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from modules.ansible.runner import ANSIBLE_DIR

RULES_DIR = ANSIBLE_DIR / "roles" / "monitoring" / "files" / "rules"
TESTS_DIR = RULES_DIR / "tests"
SEVERITIES = ("page", "ticket")
# The scrape jobs of the contract: a rule's `covers` names the job whose components it watches.
JOBS = ("node", "postfix", "postgres", "redis", "bind", "penguinmails", "prometheus", "alertmanager")
# The alerts issue 12 asks for by name.
REQUIRED_ALERTS = (
    "HostDown", "DiskFillingUp", "MemoryLow", "PostfixDown", "PostfixQueueGrowing", "BounceRateHigh",
    "CertificateExpiring", "PostgresConnectionsSaturated", "PostgresDown", "RedisDown", "RedisMemoryHigh",
    "BindDown", "QueueBacklog", "QueueDeadLetters", "QueueOldestReadyOld", "IpListed",
    "DnsVerificationFailing", "ExporterDown",
)  # fmt: skip
RULE_FILES = sorted(RULES_DIR.glob("*.rules.yml"))
TEST_FILES = sorted(TESTS_DIR.glob("*.test.yml"))


def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.fail("promtool is not installed: run `make bootstrap` (Debian package prometheus)")
    return found


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120)


def load_rules(files: list[Path]) -> list[dict]:
    """Every alerting rule of ``files``, each with the file it came from under ``_file``."""
    rules = []
    for path in files:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    rules.append({**rule, "_file": path.name})
    return rules


def load_tests(files: list[Path]) -> list[dict]:
    """Every ``alert_rule_test`` entry of ``files``, with its test case's name."""
    cases = []
    for path in files:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test") or []:
                cases.append({**case, "_test": f"{path.name}: {test.get('name', '?')}"})
    return cases


def untested_rules(rules: list[dict], cases: list[dict]) -> list[str]:
    """Why some rule lacks a test: each alert needs a quiet case, each (alert, severity) a firing one."""
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    firing = {
        (case["alertname"], alert["exp_labels"].get("severity"))
        for case in cases
        for alert in case.get("exp_alerts") or []
    }
    missing = []
    for rule in rules:
        name, severity = rule["alert"], rule["labels"].get("severity")
        if (name, severity) not in firing:
            missing.append(f"{rule['_file']}: {name} (severity {severity}) has no firing test case")
        if name not in quiet:
            missing.append(f"{rule['_file']}: {name} has no test case where it stays quiet")
    return sorted(set(missing))


def test_rule_and_test_files_exist_for_every_component_kind():
    kinds = {p.name.removesuffix(".rules.yml") for p in RULE_FILES}
    assert kinds == {
        "host",
        "mail",
        "postgres",
        "redis",
        "dns",
        "queue",
        "reputation",
        "monitoring",
        "retention",
    }
    assert {p.name.removesuffix(".test.yml") for p in TEST_FILES} == kinds


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules_accepts_the_file(path):
    done = _run("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_check_rules_refuses_a_broken_expression(tmp_path):
    broken = tmp_path / "broken.rules.yml"
    rules = yaml.safe_load((RULES_DIR / "redis.rules.yml").read_text())
    rules["groups"][0]["rules"][0]["expr"] = "redis_up == == 0"
    broken.write_text(yaml.safe_dump(rules))
    done = _run("check", "rules", str(broken))
    assert done.returncode != 0
    assert "parse error" in done.stdout + done.stderr


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(path):
    done = _run("test", "rules", str(path))
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "SUCCESS" in done.stdout + done.stderr


def test_promtool_unit_tests_fail_when_an_expected_alert_is_dropped(tmp_path):
    """The unit tests compare what fires: a case stripped of its expected alert must fail."""
    source = yaml.safe_load((TESTS_DIR / "queue.test.yml").read_text())
    changed = copy.deepcopy(source)
    case = next(c for c in changed["tests"][0]["alert_rule_test"] if c["exp_alerts"])
    case["exp_alerts"] = []
    changed["rule_files"] = [str(RULES_DIR / Path(name).name) for name in source["rule_files"]]
    path = tmp_path / "queue.test.yml"
    path.write_text(yaml.safe_dump(changed))
    done = _run("test", "rules", str(path))
    assert done.returncode != 0
    assert "QueueBacklog" in done.stdout + done.stderr


def test_every_rules_file_is_loaded_by_a_test_file():
    loaded = set()
    for path in TEST_FILES:
        for name in yaml.safe_load(path.read_text())["rule_files"]:
            loaded.add((path.parent / name).resolve())
    assert {p.resolve() for p in RULE_FILES} <= loaded


def test_the_alerts_the_issue_names_all_exist():
    names = {rule["alert"] for rule in load_rules(RULE_FILES)}
    assert set(REQUIRED_ALERTS) - names == set()


@pytest.mark.parametrize(
    "rule", load_rules(RULE_FILES), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}"
)
def test_rule_has_severity_covers_and_annotations_naming_stack_component_and_next_step(rule):
    labels, annotations = rule["labels"], rule.get("annotations") or {}
    assert labels.get("severity") in SEVERITIES, rule["alert"]
    assert labels.get("covers") in JOBS, rule["alert"]
    assert set(annotations) >= {"summary", "description"}
    text = annotations["summary"] + " " + annotations["description"]
    assert "$labels.stack" in annotations["summary"]
    assert "$labels.component" in text
    assert "Next step:" in annotations["description"]


def test_alert_and_severity_pairs_are_unique():
    pairs = [(rule["alert"], rule["labels"]["severity"]) for rule in load_rules(RULE_FILES)]
    assert len(pairs) == len(set(pairs))


def test_every_rule_has_a_firing_and_a_quiet_test_case():
    assert untested_rules(load_rules(RULE_FILES), load_tests(TEST_FILES)) == []


def test_a_rule_added_without_a_test_is_reported():
    rules = load_rules(RULE_FILES)
    extra = {
        "alert": "SomethingNew",
        "labels": {"severity": "page", "covers": "node"},
        "_file": "x.rules.yml",
    }
    page_twin = {**rules[0], "labels": {**rules[0]["labels"], "severity": "other"}}
    missing = untested_rules([*rules, extra, page_twin], load_tests(TEST_FILES))
    assert "x.rules.yml: SomethingNew (severity page) has no firing test case" in missing
    assert "x.rules.yml: SomethingNew has no test case where it stays quiet" in missing
    assert any("(severity other) has no firing test case" in reason for reason in missing)


def test_expected_annotations_render_the_stack_and_never_a_missing_label():
    for case in load_tests(TEST_FILES):
        for alert in case.get("exp_alerts") or []:
            annotations = alert.get("exp_annotations") or {}
            assert annotations, f"{case['_test']}: {case['alertname']} expects no annotations"
            text = " ".join(annotations.values())
            assert "<no value>" not in text, case["_test"]
            assert alert["exp_labels"]["stack"] in annotations["summary"], case["_test"]
