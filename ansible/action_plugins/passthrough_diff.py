# Shows diffs the way Ansible shows a changed file's under --diff: `diffs` is a list of Ansible
# diffs (before, after and their headers), as the filter passthrough_diffs makes them from a run's
# report (filter_plugins/passthrough.py). Runs nothing on the managed host. `changed` when there is
# a diff to show, as Ansible prints only those.
from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

_KEYS = {"before_header", "after_header", "before", "after"}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("diffs",))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        diffs = self._task.args.get("diffs") or []
        if not isinstance(diffs, list) or not all(
            isinstance(d, dict) and _KEYS <= set(d) for d in diffs
        ):
            raise AnsibleActionFail("diffs must be a list of {before_header, after_header, before, after}")
        result["diff"] = diffs
        result["changed"] = len(diffs) > 0
        return result
