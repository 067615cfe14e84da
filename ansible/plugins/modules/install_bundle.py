#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: the bundler authors
# Apache License 2.0 (see LICENSE in the repository)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: install_bundle
short_description: Stage, install, unstage or query a signed install bundle on a host
version_added: "0.1.0"
description:
  - Drives C(install-bundle), the static installer of signed install bundles, on the managed host.
  - C(state=staged) verifies the bundle (signature, policy, variables, every artifact byte), runs
    preflight and the plan, and keeps the verified bundle under the host's state directory
    (C(ROOT/var/lib/install-bundle/staged/NAME)) without changing anything else (C(install-bundle stage)).
  - C(state=installed) installs a bundle file (C(install-bundle install)), or, without O(bundle), the bundle
    staged under O(name) (C(install-bundle apply)), which is verified again before anything changes.
  - C(state=absent-staged) drops the staged bundle O(name) (C(install-bundle unstage)).
  - C(state=query) returns what is installed and staged and what drifted (C(install-bundle status --json)).
  - The result's C(changed) is the installer's own account (its C(--json) document), so a re-run that
    finds everything in place reports C(changed=false).
  - In check mode the installer only plans (C(plan), C(stage --dry-run), C(apply --dry-run)) and the module
    reports whether anything would change; in diff mode every file, directory and symlink the plan changes
    is shown with its state before and after (text content up to 64 KiB).
  - On failure the installer's message, the lines it listed and its exit code are returned
    (3 verification failed, 4 refused by policy or preflight, 5 apply failed and rolled back,
    6 rollback incomplete; see the project README, "Exit codes").
author:
  - bundler authors
options:
  bundle:
    description:
      - Path of the bundle file (C(NAME.tar.zst)) on the managed host.
      - Required with O(state=staged). With O(state=installed), install this file directly;
        without it, install what is staged under O(name).
    type: path
  installer:
    description:
      - Path of the static C(install-bundle) binary on the managed host.
    type: path
    default: /usr/local/sbin/install-bundle
  state:
    description:
      - V(staged) verify, plan and keep the bundle on the host for a later V(installed).
      - V(installed) install O(bundle), or the bundle staged under O(name).
      - V(absent-staged) drop the staged bundle O(name).
      - V(query) return the receipt, the staged bundle and drift (never changes anything).
    type: str
    choices: [staged, installed, absent-staged, query]
    default: installed
  vars:
    description:
      - Values of the bundle's variables (for example C(POD_CIDR)), passed to the installer as a
        C(--values) JSON file. Values are converted to strings.
      - Used with O(bundle); a staged bundle is applied with the values it was staged with.
    type: dict
    default: {}
    aliases: [variables]
  root:
    description:
      - Install into this directory instead of C(/) (C(--root)): image building.
    type: path
  trusted_keys:
    description:
      - Extra public key files on the managed host to trust (C(--trusted-key)), besides the keys compiled
        into the installer and C(ROOT/etc/install-bundle/trusted.d/*.pub).
    type: list
    elements: path
    default: []
  name:
    description:
      - The bundle name. Required with O(state=absent-staged), and with O(state=installed) without O(bundle).
      - With O(state=query), limit the answer to this bundle.
    type: str
  no_start:
    description:
      - Do not start or restart services (C(--no-start)).
    type: bool
    default: false
  allow_downgrade:
    description:
      - Accept a lower serial than the installed (or staged) one (C(--allow-downgrade)).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: The installer plans and reports what would change; nothing is written on the host.
  diff_mode:
    support: full
    details: Per changed path, its state before and after; text content up to 64 KiB.
notes:
  - The installer must already be on the host; the role M(airgap.bundles.rollout) copies it there.
  - A bundle whose files were changed behind the installer's back is reported by O(state=query)
    with C(drifted=true); that is not a failure.
seealso:
  - name: install-bundle
    description: The project README, sections "install-bundle" and "Many hosts".
    link: https://example.invalid/bundler#many-hosts
"""

EXAMPLES = r"""
- name: Stage the worker bundle with this node's pod subnet (phase 1)
  airgap.bundles.install_bundle:
    state: staged
    bundle: /var/tmp/airgap/k8s-worker.tar.zst
    vars:
      POD_CIDR: "{{ pod_cidr }}"

- name: Install what was staged (phase 2)
  airgap.bundles.install_bundle:
    state: installed
    name: k8s-worker

- name: Install a bundle file in one go
  airgap.bundles.install_bundle:
    state: installed
    bundle: /var/tmp/airgap/k8s-worker.tar.zst
    vars:
      POD_CIDR: 172.16.1.0/24

- name: What is installed, and has anything drifted?
  airgap.bundles.install_bundle:
    state: query
    name: k8s-worker
  register: worker

- name: Drop a staged bundle
  airgap.bundles.install_bundle:
    state: absent-staged
    name: k8s-worker
"""

RETURN = r"""
result:
  description: The installer's C(--json) document (see C(installer/schema/) in the project).
  returned: always, when the installer ran
  type: dict
outcome:
  description:
    - The installer's C(result) word. V(installed), V(unchanged), V(planned) (check mode) for installs;
      V(staged), V(already-staged), V(up-to-date), V(would-stage) for staging;
      V(unstaged), V(not-staged); V(status), V(drift) for queries.
  returned: always, when the installer ran
  type: str
  sample: installed
changes:
  description: Operations of the plan that change (or would change, in check mode) the host.
  returned: with O(state=staged) and O(state=installed)
  type: int
  sample: 12
receipt:
  description: The receipt of the bundle on the host (what is installed now), or null.
  returned: with O(state=installed) and O(state=query) (with O(name))
  type: dict
  sample: {"name": "k8s-worker", "version": "1.30.2-1", "serial": 3, "variables": {"POD_CIDR": "172.16.1.0/24"}}
staged:
  description: What is staged under the bundle's name (C(staged.json)), or null.
  returned: with O(state=staged), O(state=absent-staged) and O(state=query) (with O(name))
  type: dict
plan:
  description: The installer's plan (every operation and what it changes).
  returned: with O(state=staged) and O(state=installed)
  type: dict
bundles:
  description: Per bundle name, its receipt, staged bundle and drift.
  returned: with O(state=query)
  type: list
  elements: dict
drift:
  description: What differs from the receipt (path, package or image, with the problem).
  returned: with O(state=query)
  type: list
  elements: dict
  sample: [{"kind": "path", "path": "/etc/cni/net.d/10-bridge.conf", "problem": "content modified"}]
drifted:
  description: Whether anything drifted.
  returned: with O(state=query)
  type: bool
exit_code:
  description: The installer's exit code.
  returned: always, when the installer ran
  type: int
  sample: 0
details:
  description: The lines the installer listed with its error (every problem, or what remains after a failed rollback).
  returned: on failure
  type: list
  elements: str
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule

# Exit codes documented in the project README ("Exit codes").
EXIT_DRIFT = 7


class Installer(object):
    def __init__(self, module):
        self.module = module
        self.p = module.params

    def common_args(self):
        args = []
        if self.p["root"]:
            args += ["--root", self.p["root"]]
        for key in self.p["trusted_keys"]:
            args += ["--trusted-key", key]
        return args

    def values_args(self):
        values = self.p["vars"] or {}
        if not values:
            return []
        path = os.path.join(self.module.tmpdir, "install-bundle-values.json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(dict((str(k), str(v)) for k, v in values.items()), f)
        return ["--values", path]

    def run(self, command, args, ok_codes=(0,)):
        """Runs `install-bundle COMMAND ARGS --json`, returns (rc, document)."""
        installer = self.p["installer"]
        if not os.path.isfile(installer):
            self.module.fail_json(
                msg="the installer %s is not on this host; copy the static install-bundle there "
                "(the airgap.bundles.rollout role does) or set installer:" % installer
            )
        argv = [installer, command] + args + self.common_args() + ["--json"]
        rc, out, err = self.module.run_command(argv, check_rc=False)
        try:
            doc = json.loads(out) if out.strip() else None
        except ValueError:
            doc = None
        if rc in ok_codes and isinstance(doc, dict):
            return rc, doc
        error = (doc or {}).get("error") or err.strip() or "no output"
        self.module.fail_json(
            msg="install-bundle %s failed (exit %d): %s" % (command, rc, error),
            exit_code=rc,
            details=(doc or {}).get("details", []),
            result=doc,
            outcome=(doc or {}).get("result"),
            cmd=argv,
            stdout=out,
            stderr=err,
        )

    def status(self, name=None):
        """`status --json` of every bundle (exit 7 on drift is an answer, not an error)."""
        rc, doc = self.run("status", [], ok_codes=(0, EXIT_DRIFT))
        bundles = doc.get("bundles", [])
        if name is not None:
            bundles = [b for b in bundles if b.get("name") == name]
        return rc, doc, bundles


def describe(state):
    """One side of a diff: the text, or a line saying what the path is."""
    if state is None:
        return ""
    kind = state.get("kind")
    if kind == "file":
        if state.get("text") is not None:
            return state["text"]
        return "(%s bytes, sha256 %s: not shown)\n" % (state.get("size", "?"), state.get("sha256", "?"))
    if kind == "symlink":
        return "symlink to %s\n" % state.get("to", "?")
    if kind == "directory":
        return "directory\n"
    return "%s\n" % kind


def header(path, state):
    if state is None:
        return "%s (absent)" % path
    mode = state.get("mode")
    return "%s (%s%s)" % (path, state.get("kind", "?"), ", mode %s" % mode if mode else "")


def diffs_of(doc):
    out = []
    for d in doc.get("diff") or []:
        out.append(
            {
                "before_header": header(d["path"], d.get("before")),
                "after_header": header(d["path"], d.get("after")),
                "before": describe(d.get("before")),
                "after": describe(d.get("after")),
            }
        )
    return out


def finish(module, **result):
    """exit_json with the diff of the installer's document in diff mode."""
    if module._diff:
        result["diff"] = diffs_of(result.get("result") or {})
    module.exit_json(**result)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            bundle=dict(type="path"),
            installer=dict(type="path", default="/usr/local/sbin/install-bundle"),
            state=dict(type="str", default="installed", choices=["staged", "installed", "absent-staged", "query"]),
            vars=dict(type="dict", default={}, aliases=["variables"]),
            root=dict(type="path"),
            trusted_keys=dict(type="list", elements="path", default=[], no_log=False),
            name=dict(type="str"),
            no_start=dict(type="bool", default=False),
            allow_downgrade=dict(type="bool", default=False),
        ),
        required_if=[
            ("state", "staged", ["bundle"]),
            ("state", "absent-staged", ["name"]),
            ("state", "installed", ["bundle", "name"], True),
        ],
        supports_check_mode=True,
    )
    p = module.params
    inst = Installer(module)
    state = p["state"]
    check = module.check_mode
    diff_args = ["--diff"] if module._diff else []

    if state == "query":
        rc, doc, bundles = inst.status(p["name"])
        drift = [dict(d, bundle=b["name"]) for b in bundles for d in b.get("drift", [])]
        result = dict(
            changed=False,
            outcome=doc.get("result"),
            result=doc,
            exit_code=rc,
            bundles=bundles,
            drift=drift,
            drifted=bool(drift),
        )
        if p["name"] is not None:
            one = bundles[0] if bundles else {}
            result.update(receipt=one.get("receipt"), staged=one.get("staged"))
        module.exit_json(**result)

    if state == "absent-staged":
        if check:
            _, _, bundles = inst.status(p["name"])
            staged = bundles[0].get("staged") if bundles else None
            module.exit_json(changed=staged is not None, outcome="would-unstage" if staged else "not-staged", staged=staged)
        rc, doc = inst.run("unstage", [p["name"]])
        module.exit_json(changed=doc["result"] == "unstaged", outcome=doc["result"], result=doc, exit_code=rc, staged=doc.get("staged"))

    downgrade = ["--allow-downgrade"] if p["allow_downgrade"] else []
    if state == "staged":
        args = [p["bundle"]] + inst.values_args() + downgrade + diff_args
        if check:
            args.append("--dry-run")
        rc, doc = inst.run("stage", args)
        changed = doc["result"] in ("staged", "would-stage")
        finish(
            module,
            changed=changed,
            outcome=doc["result"],
            result=doc,
            exit_code=rc,
            changes=doc.get("changed", 0),
            staged=doc.get("staged"),
            plan=doc.get("plan"),
        )

    # state == installed
    start = ["--no-start"] if p["no_start"] else []
    if p["bundle"]:
        if check:
            rc, doc = inst.run("plan", [p["bundle"]] + inst.values_args() + downgrade + diff_args)
            changed = doc.get("changed", 0) > 0 or bool(doc.get("receipt_changed"))
            _, _, bundles = inst.status(doc.get("name"))
            doc["receipt"] = bundles[0].get("receipt") if bundles else None
        else:
            rc, doc = inst.run("install", [p["bundle"]] + inst.values_args() + downgrade + start + diff_args)
            changed = doc["result"] == "installed"
        receipt = doc.get("receipt")
    else:
        _, _, bundles = inst.status(p["name"])
        one = bundles[0] if bundles else {}
        if one.get("staged") is None:
            if one.get("receipt") is None:
                module.fail_json(
                    msg="%s is neither staged nor installed on this host: stage it first (state: staged) "
                    "or give bundle:" % p["name"]
                )
            module.exit_json(
                changed=False,
                outcome="unchanged",
                msg="nothing is staged for %s; serial %s is installed" % (p["name"], one["receipt"].get("serial")),
                receipt=one["receipt"],
                changes=0,
            )
        args = [p["name"]] + start + diff_args
        if check:
            args.append("--dry-run")
        rc, doc = inst.run("apply", args)
        if check:
            changed = doc.get("changed", 0) > 0 or bool(doc.get("receipt_changed"))
            receipt = one.get("receipt")
        else:
            changed = doc["result"] == "installed"
            receipt = doc.get("receipt")
    finish(
        module,
        changed=changed,
        outcome=doc["result"],
        result=doc,
        exit_code=rc,
        changes=doc.get("changed", 0),
        receipt=receipt,
        staged=doc.get("staged"),
        plan=doc.get("plan"),
    )


if __name__ == "__main__":
    main()
