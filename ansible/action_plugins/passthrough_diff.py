# Under --diff, shows each VM's definition the way Ansible shows a changed file: `output` is what
# passthrough printed on the managed host (`plan --json`: the definition now and as planned, or a
# refused VM's repair; `apply --json`: before and after the define), secrets already `***`. Runs
# nothing on the host; `changed` when there is a diff to show, as Ansible prints only those.
import json

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


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


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("output",))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        # Templating may already have turned the JSON text into a mapping. Anything else (a run
        # killed before its report, a usage error) has nothing to show.
        report = self._task.args.get("output") or {}
        if isinstance(report, str):
            try:
                report = json.loads(report) if report.startswith("{") else {}
            except ValueError:
                report = {}
        if not isinstance(report, dict):
            report = {}
        try:
            result["diff"] = [
                {
                    "before_header": "%s (%s)" % (name, before_header),
                    "after_header": "%s (%s)" % (name, after_header),
                    "before": before,
                    "after": after,
                }
                for name, before_header, before, after_header, after in _definitions(report)
            ]
        except (KeyError, TypeError, AttributeError) as error:
            raise AnsibleActionFail("not a passthrough JSON report: %r" % (error,))
        result["changed"] = len(result["diff"]) > 0
        return result
