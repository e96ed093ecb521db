"""Whether a deployment's spec.selector picks this agent: its labels and its device facts."""

from __future__ import annotations

from typing import Any

from npuctl.runtime.devices import HostFacts
from npuctl.schema.models import Selector


def device_facts(host: HostFacts) -> dict[str, Any]:
    """The facts selectors match on, by the keys the manifest schema documents."""
    soc = host.soc
    return {
        "soc": soc.alias if soc else None,
        "socModel": host.soc_model,
        "htpArch": host.htp_arch,
        "os": host.os.lower(),
        "arch": host.arch,
        "memoryGiB": host.memory_gib,
        "npu": host.npu.value,
    }


def selects(selector: Selector, labels: dict[str, str], facts: dict[str, Any]) -> tuple[bool, str]:
    """(True, "") when every matchLabels entry and every expression holds; else (False, the first reason)."""
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False, f"label {key}={value} wanted, this agent has {key}={labels.get(key, '<unset>')}"
    for expression in selector.match_expressions:
        key = expression.key
        actual = labels.get(key[7:]) if key.startswith("labels.") else facts.get(key)
        if not _holds(expression.operator, actual, expression.values):
            return False, f"{key} {expression.operator} {expression.values} does not hold (this agent: {key}={actual})"
    return True, ""


def _holds(operator: str, value: Any, values: list[str]) -> bool:
    if operator == "Exists":
        return value is not None
    if operator == "DoesNotExist":
        return value is None
    if operator in ("In", "NotIn"):
        inside = value is not None and str(value) in values
        return inside if operator == "In" else not inside
    try:
        number, bound = float(value), float(values[0])
    except (TypeError, ValueError, IndexError):
        return False
    return number > bound if operator == "Gt" else number < bound
