# Filters for ansible/passthrough.yml, found beside it. Ansible decodes the JSON that passthrough
# prints on a managed host, so the control characters the CLI wrote as `\uXXXX` escapes are real
# characters again when Ansible prints them (it does not escape C1 controls, and a terminal takes
# U+009B as the start of an escape sequence). Every string the playbook prints from that JSON goes
# through passthrough_terminal_safe, which writes them as escapes again, as the CLI does
# (lib/render/terminal.ts): C0 controls but tab and newline, DEL, C1 controls, line and paragraph
# separators, Unicode's bidirectional controls (embeddings, overrides, isolates and marks), and the
# characters that show nothing (soft hyphen, zero-width space, word joiner and invisible operators,
# U+FEFF, and the rest of the default-ignorable ones but the joiners and the emoji and text
# presentation selectors), a character past U+FFFF as its two UTF-16 units, as JSON writes it.
import json
import posixpath
import re

_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\xad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f"
    "\u200b\u200e\u200f\u2028\u2029\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0d"
    "\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)


def _escape(char):
    """`char` as `\\uXXXX` escapes of its UTF-16 units."""
    units = char.encode("utf-16-be")
    return "".join("\\u%02x%02x" % (units[i], units[i + 1]) for i in range(0, len(units), 2))


def terminal_safe(value):
    """`value` with every string in it (keys too) safe to print on a terminal."""
    if isinstance(value, str):
        return _UNSAFE.sub(lambda m: _escape(m.group()), value)
    if isinstance(value, dict):
        return {terminal_safe(k): terminal_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [terminal_safe(v) for v in value]
    return value


def _report(output):
    """
    passthrough's JSON report from a run's stdout (or already decoded), else {}. The playbook
    decodes reports with this, not from_json on a variable holding the stdout: Ansible turns a
    variable's text that reads as a Python literal (a JSON report without true, false or null,
    such as `{"error": {...}}`) into a dict, on which the text's tests fail.
    """
    if isinstance(output, str):
        try:
            output = json.loads(output) if output.startswith("{") else {}
        except ValueError:
            output = {}
    return output if isinstance(output, dict) else {}


def _definitions(report):
    for vm in report.get("vms") or []:
        name = vm.get("name") or vm.get("vm")
        defined = vm.get("definition")
        repair = vm.get("repair")
        if defined:
            yield name, "before apply", defined["before"], "defined", defined["after"]
        elif repair and repair.get("desiredXml") is not None:
            yield name, "now", vm["currentXml"], "repair planned", repair["desiredXml"]
        elif vm.get("changed") is True:
            yield name, "now", vm["currentXml"], "planned", vm["desiredXml"]


def passthrough_diffs(output):
    """
    Ansible's diffs of each VM's definition in a run's output: `plan --json` (the definition now
    and as planned, or a refused VM's repair) or `apply --json` (before and after each define that
    took effect); none for output that is not a report (a run killed before it printed one).
    """
    return terminal_safe([
        {
            "before_header": "%s (%s)" % (name, before_header),
            "after_header": "%s (%s)" % (name, after_header),
            "before": before,
            "after": after,
        }
        for name, before_header, before, after_header, after in _definitions(_report(output))
    ])


def applied_summary(output):
    """
    apply's report in one line: the VMs it changed, each whose change waits for its next full
    power-off (it is running, or its next start resumes a saved state) saying so, then those it
    skipped. The playbook passes no --live: a reboot inside a running guest does not bring its
    devices, which "changed: NAME" alone left the operator to guess.
    """
    report = _report(output)
    later = {
        vm.get("name"): "running" if vm.get("active") else "saved state"
        for vm in report.get("vms") or []
        if vm.get("effect") == "next-power-off"
    }
    changed = [
        "%s (%s: takes effect after its next full power-off)" % (name, later[name])
        if name in later else name
        for name in report.get("changed") or []
    ]
    return "changed: %s; skipped: %s" % (
        ", ".join(changed) or "none",
        ", ".join(report.get("skipped") or []) or "none",
    )


def sysfs_as_recorded(path):
    """
    `path`, an absolute sysfs tree, as `hook install` records it in the hook (Deno's `resolve`):
    without a trailing slash, `.` or `..` parts, or repeated slashes. The playbook compares the
    hook's with passthrough_sysfs so; as written, `/srv/tree/` was never the hook's `/srv/tree`.
    """
    normal = posixpath.normpath(path)
    return "/" + normal.lstrip("/") if normal.startswith("/") else normal


class FilterModule(object):
    def filters(self):
        return {
            "passthrough_terminal_safe": terminal_safe,
            "passthrough_diffs": passthrough_diffs,
            "passthrough_report": _report,
            "passthrough_applied": applied_summary,
            "passthrough_sysfs_as_recorded": sysfs_as_recorded,
        }
