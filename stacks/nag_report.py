"""Summarise the cdk-nag results that synth writes to ``<cdk.out>/validation-report.json``.

``python -m stacks.nag_report cdk.out`` prints unacknowledged findings and acknowledgements per
pack, and writes ``nag-acknowledgements.csv`` (pack, rule, resource, reason) next to the report,
the audit trail of every accepted finding.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from stacks.nag import COMPLIANCE_PACKS

REPORT_FILE = "validation-report.json"
ACKNOWLEDGEMENTS_FILE = "nag-acknowledgements.csv"


@dataclass(frozen=True)
class Finding:
    pack: str
    rule: str
    resource: str
    reason: str | None  # None: not acknowledged


def read_findings(cloud_assembly: Path) -> list[Finding]:
    """Every finding of the five packs, acknowledged or not."""
    report = json.loads((cloud_assembly / REPORT_FILE).read_text())
    findings: list[Finding] = []
    for plugin in report.get("pluginReports", []):
        pack = plugin["pluginName"]
        for key in ("violations", "suppressedViolations"):
            for violation in plugin.get(key, []):
                for construct in violation["violatingConstructs"]:
                    findings.append(
                        Finding(
                            pack=pack,
                            rule=violation["ruleName"],
                            resource=construct["constructPath"],
                            reason=violation.get("reason") if key != "violations" else None,
                        )
                    )
    return findings


def main(argv: list[str]) -> int:
    cloud_assembly = Path(argv[0] if argv else "cdk.out")
    findings = read_findings(cloud_assembly)
    open_findings = [f for f in findings if f.reason is None]
    acknowledged = Counter(f.pack for f in findings if f.reason is not None)
    with (cloud_assembly / ACKNOWLEDGEMENTS_FILE).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["pack", "rule", "resource", "reason"])
        for f in sorted(findings, key=lambda f: (f.pack, f.rule, f.resource)):
            if f.reason is not None:
                writer.writerow([f.pack, f.rule, f.resource, f.reason])
    print("cdk-nag compliance report (" + str(cloud_assembly / REPORT_FILE) + ")")
    for pack in COMPLIANCE_PACKS:
        opened = sum(1 for f in open_findings if f.pack == pack)
        print(f"  {pack:16} unacknowledged: {opened:3}   acknowledged: {acknowledged[pack]:3}")
    print(f"  acknowledgements with reasons: {cloud_assembly / ACKNOWLEDGEMENTS_FILE}")
    for f in open_findings:
        print(f"  OPEN {f.rule} at {f.resource}")
    return 1 if open_findings else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
