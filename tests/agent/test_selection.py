"""Which agents a deployment's selector picks, on labels and device facts, and why not."""

from __future__ import annotations

from npuctl.agent.selection import selects
from npuctl.schema.models import Selector


def test_selectors_on_labels_and_facts() -> None:
    facts = {"soc": "x-elite", "socModel": 60, "memoryGiB": 16.0, "os": "windows"}
    ok = Selector.model_validate({"matchLabels": {"ring": "pilot"}, "matchExpressions": [
        {"key": "soc", "operator": "In", "values": ["x-elite", "x2-elite"]},
        {"key": "memoryGiB", "operator": "Gt", "values": ["15"]},
        {"key": "labels.site", "operator": "DoesNotExist"}]})
    assert selects(ok, {"ring": "pilot"}, facts) == (True, "")
    chosen, why = selects(ok, {"ring": "canary"}, facts)
    assert not chosen and "ring=pilot" in why
    x2_only = Selector.model_validate({"matchExpressions": [{"key": "soc", "operator": "In", "values": ["x2-elite"]}]})
    chosen, why = selects(x2_only, {}, facts)
    assert not chosen and "soc=x-elite" in why
