"""Drift lines from check-mode results: where a change would land, never what the file holds."""

from __future__ import annotations

from modules.ansible import drift, runner

SECRET = "s3cret-dovecot-password-0123456789"
PEM_LINE = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7"


def _event(task, res, action="ansible.builtin.template", host="mx-01"):
    return {"host": host, "task": task, "resolved_action": action, "res": res}


def test_a_template_change_names_the_file_and_not_its_content():
    res = {
        "changed": True,
        "diff": [{"before_header": "/etc/postfix/main.cf", "after_header": "dynamically generated",
                  "before": "x = 1\nhandmade = yes\n", "after": f"x = 1\npassword = {SECRET}\n"}],
    }  # fmt: skip
    kept = drift.changed_result(_event("Render main.cf", res))
    assert kept == {"host": "mx-01", "task": "Render main.cf", "action": "ansible.builtin.template",
                    "targets": ["/etc/postfix/main.cf"]}  # fmt: skip
    assert SECRET not in repr(kept) and "handmade" not in repr(kept)
    assert drift.drift_lines([kept]) == ["Render main.cf: /etc/postfix/main.cf"]


def test_unchanged_results_are_not_kept():
    assert drift.changed_result(_event("Render main.cf", {"changed": False, "dest": "/etc/x"})) is None
    assert drift.changed_result(_event("Gather", "not a mapping")) is None


def test_no_log_results_are_hidden_and_services_show_name_and_state():
    censored = {"censored": "the output has been hidden due to the fact that 'no_log: true'", "changed": True}
    service = {"changed": True, "name": "postfix", "state": "started"}
    lines = drift.drift_lines(
        [
            drift.changed_result(_event("Install the DKIM keys", censored)),
            drift.changed_result(_event("Start postfix", service, action="ansible.builtin.service")),
        ]
    )
    assert lines == ["Install the DKIM keys: (hidden: no_log)", "Start postfix: postfix started"]


def test_loop_items_report_each_changed_path_and_hide_no_log_items():
    res = {
        "changed": True,
        "results": [
            {"changed": True, "dest": "/etc/opendkim/KeyTable", "item": {"private_key": SECRET}},
            {"changed": False, "dest": "/etc/opendkim/SigningTable"},
            {"changed": True, "_ansible_no_log": True, "item": SECRET},
        ],
    }
    lines = drift.drift_lines([drift.changed_result(_event("Tables", res, action="ansible.builtin.copy"))])
    assert lines == ["Tables: /etc/opendkim/KeyTable, (hidden: no_log)"]


def test_lines_are_redacted_bounded_and_unique():
    change = {"task": f"Set {SECRET}", "targets": ["/etc/" + "a" * 400], "action": "copy"}
    lines = drift.drift_lines([change, change], runner.secret_strings({"p": SECRET, "k": PEM_LINE}))
    assert len(lines) == 1 and SECRET not in lines[0] and "***" in lines[0]
    assert len(lines[0]) <= drift.MAX_LINE


def test_an_action_without_targets_says_its_module():
    lines = drift.drift_lines([{"task": "Reload", "targets": [], "action": "ansible.builtin.command"}])
    assert lines == ["Reload: ansible.builtin.command"]


def test_unreachable_and_failed_checks_are_one_line_each_without_secrets():
    failures = [
        runner.Failure("mx-02", "Gathering Facts", "ssh: connect to host 10.0.0.2 port 22: No route", True),
        runner.Failure("mx-02", "Render", f"template error near {SECRET}\nsecond line"),
    ]
    lines = drift.failure_lines(failures, [SECRET])
    assert lines[0].startswith("unreachable: mx-02 did not answer (ssh: connect")
    assert lines[1] == "Render: check failed (template error near *** second line)"
    assert all("\n" not in line and SECRET not in line for line in lines)
