"""Building blocks of `promtool test rules` cases: input series with the scrape's labels,
and expected alerts whose annotations are expanded from the rules' own templates."""

from __future__ import annotations

import re
from typing import Any

from monitoring.alerts import rule_groups
from monitoring.config import MonitoringConfig

INSTANCE = "sidecar:9464"


def series(config: MonitoringConfig, name: str, values: str, **labels: str) -> dict[str, str]:
    all_labels = {"job": config.job, "instance": INSTANCE, **labels}
    body = ",".join(f'{k}="{v}"' for k, v in all_labels.items())
    return {"series": f"{name}{{{body}}}", "values": values}


def _branch(match: re.Match[str], labels: dict[str, str]) -> str:
    label, wanted, then, otherwise = match.groups()
    return then if labels.get(label) == wanted else otherwise


def _expand(template: str, labels: dict[str, str], value: str) -> str:
    """The annotation Prometheus renders from ``template``, for the few template forms
    the rules use (promtool compares the whole text, so a wrong expansion fails)."""
    if template.startswith("{{ range query"):
        return labels.get("_reasons", "")
    # the sidecar's links: the case's own (``_external_url``, ``_runbook_url``) or the fallback
    template = re.sub(
        r'\{\{ with query \(printf "whatsapp_sidecar_links_info[^"]*" \$labels\.job'
        r' \$labels\.instance\) \}\}\{\{ \. \| first \| label "(\w+)" \}\}'
        r"\{\{ else \}\}(.*?)\{\{ end \}\}",
        lambda m: labels.get(f"_{m.group(1)}", m.group(2)),
        template,
    )
    text = re.sub(
        r'\{\{ if eq \$labels\.(\w+) "([^"]*)" \}\}(.*?)\{\{ else \}\}(.*?)\{\{ end \}\}',
        lambda m: _branch(m, labels),
        template,
    )
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), text)
    return re.sub(r"\{\{ \$value[^}]*\}\}", value, text)


class Cases:
    """Expected alerts, with their annotations expanded from the rules' own templates."""

    def __init__(self, config: MonitoringConfig) -> None:
        self.config = config
        self.alerts = {
            r["alert"]: r for g in rule_groups(config)["groups"] for r in g["rules"] if "alert" in r
        }

    def expect(
        self, alert: str, eval_time: str, *label_sets: dict[str, str], value: str = ""
    ) -> dict[str, Any]:
        """``value``: the alert's value as its annotations print it (``_value`` in a label
        set gives that alert its own)."""
        rule = self.alerts[alert]
        expected = []
        for given in label_sets:
            extra = dict(given)
            reasons = extra.pop("_reasons", "")
            printed = extra.pop("_value", value)
            links: dict[str, str] = {
                k: extra.pop(k) for k in ("_external_url", "_runbook_url") if k in extra
            }
            labels = {**rule["labels"], **extra}
            annotations = {
                k: _expand(v, {**labels, "_reasons": reasons, **links}, printed)
                for k, v in rule["annotations"].items()
            }
            expected.append({"exp_labels": labels, "exp_annotations": annotations})
        return {"eval_time": eval_time, "alertname": alert, "exp_alerts": expected}

    def account(self, name: str, **more: str) -> dict[str, str]:
        return {"job": self.config.job, "instance": INSTANCE, "account": name, **more}
