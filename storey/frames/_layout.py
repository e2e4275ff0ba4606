"""What one frames aggregation computes: aggregators, plans, feature columns and the emit policy.

`StepLayout` is shared by both frames engines (the pure-Python reference and the compiled one) and by the
output assembly. The plans come from `storey.aggregations.schema.plan_for`, exactly as `AggregateByKey`
builds them when its flow starts, so the tile grid, the maintained kernels and `N` are the stream's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from storey.aggregations.emit import (
    EmitAfterDelay,
    EmitAfterMaxEvent,
    EmitAfterPeriod,
    EmitAfterWindow,
    EmitEveryEvent,
    EmitPolicy,
    emit_policy_from_dict,
)
from storey.aggregations.field import FieldAggregator, FieldEquals
from storey.aggregations.schema import plan_for, reconcile
from storey.aggregations.state import AggregatorPlan

__all__ = [
    "POLICY_DELAY",
    "POLICY_EVERY",
    "POLICY_MAX",
    "POLICY_NONE",
    "POLICY_PERIOD",
    "NoEmit",
    "StepLayout",
    "as_policy",
]

POLICY_EVERY = 0
POLICY_MAX = 1
POLICY_DELAY = 2
POLICY_PERIOD = 3  # period and window policies: boundaries
POLICY_NONE = 4  # build_state: nothing is emitted


class NoEmit(EmitPolicy):
    """Internal policy of `build_state`: events update the state and nothing is emitted."""

    @staticmethod
    def name() -> str:
        return "none"


def as_policy(policy: EmitPolicy | Mapping[str, Any] | None, where: str) -> EmitPolicy:
    """The emit policy object (``None`` is `EmitEveryEvent`; dicts use the form of §6.4)."""
    if policy is None:
        return EmitEveryEvent()
    if isinstance(policy, Mapping):
        return emit_policy_from_dict(policy)
    if not isinstance(policy, EmitPolicy):
        msg = f"{where}: `emit_policy` must be an EmitPolicy or a dict, got {policy!r}"
        raise TypeError(msg)
    return policy


class StepLayout:
    """Aggregators, their plans under the stored schema, output feature columns and the policy.

    Parameters
    ----------
    aggregates
        The `FieldAggregator`s (already reconciled with the stored schema).
    doc
        The schema document the plans are built from (``None``: each aggregator's own definition).
    policy
        The emit policy.
    aliases
        ``{feature: output name}``.

    Attributes
    ----------
    plans
        One `AggregatorPlan` per aggregator.
    features
        ``features[a]``: output names of aggregator ``a``'s features, in feature order.
    int_features
        ``int_features[a][f]``: whether that feature column is int64 (``count`` without a float cap).
    """

    def __init__(
        self,
        aggregates: Sequence[FieldAggregator],
        doc: Mapping[str, Any] | None,
        policy: EmitPolicy,
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        self.aggregates = list(aggregates)
        self.doc = doc
        self.plans: list[AggregatorPlan] = [plan_for(a, doc) for a in self.aggregates]
        self.policy = policy
        self.aliases = dict(aliases or {})
        self.raw_features = [list(p.feature_names) for p in self.plans]
        self.features = [[self.aliases.get(f, f) for f in fs] for fs in self.raw_features]
        self.int_features = []
        for agg, plan in zip(self.aggregates, self.plans, strict=True):
            flags = []
            for aggr in plan.aggregations:
                is_int = aggr == "count" and not isinstance(agg.max_value, float)
                flags.extend([is_int] * len(plan.windows.windows))
            self.int_features.append(flags)
        self.names = [a.name for a in self.aggregates]

    @classmethod
    def build(
        cls,
        aggregates: Sequence[FieldAggregator],
        stored_doc: Mapping[str, Any] | None,
        policy: EmitPolicy,
        aliases: Mapping[str, str] | None,
        where: str,
    ) -> tuple[StepLayout, dict[str, Any], bool]:
        """Reconcile with the stored schema (as `AggregateByKey` does when it starts) and build the layout.

        Returns the layout, the document to use and whether it must be saved.
        """
        doc, changed, aggs = reconcile(stored_doc, aggregates, where=where)
        return cls(aggs, doc, policy, aliases), doc, changed

    # ---------------------------------------------------------------------------------- derived facts
    @property
    def all_features(self) -> list[str]:
        """Every output feature name, in output order."""
        return [f for fs in self.features for f in fs]

    @property
    def policy_kind(self) -> int:
        p = self.policy
        if isinstance(p, EmitEveryEvent):
            return POLICY_EVERY
        if isinstance(p, EmitAfterMaxEvent):
            return POLICY_MAX
        if isinstance(p, EmitAfterDelay):
            return POLICY_DELAY
        if isinstance(p, EmitAfterPeriod | EmitAfterWindow):
            return POLICY_PERIOD
        if isinstance(p, NoEmit):
            return POLICY_NONE
        msg = f"unsupported emit policy {p!r}"
        raise TypeError(msg)

    @property
    def boundary_step(self) -> int:
        """Spacing of the boundaries of period/window policies (the first aggregator's grid)."""
        windows = self.aggregates[0].windows
        return windows.period_ns if isinstance(self.policy, EmitAfterPeriod) else windows.windows_ns[0]

    @property
    def per_key_timers(self) -> bool:
        """Whether emissions can refer to an earlier event of the key (max-events and delay policies)."""
        return self.policy_kind in (POLICY_MAX, POLICY_DELAY)

    def vectorisable(self) -> bool:
        """Fields are columns and filters are `FieldEquals` (so the compiled engine can run)."""
        for agg in self.aggregates:
            if not isinstance(agg.field, str):
                return False
            if agg.aggr_filter is not None and not isinstance(agg.aggr_filter, FieldEquals):
                return False
        return True

    def callables(self) -> list[str]:
        """Descriptions of the user callables that force row-by-row calls."""
        out = []
        for agg in self.aggregates:
            if agg.field is not None and not isinstance(agg.field, str):
                out.append(f"the field of aggregator {agg.name!r}")
            if agg.aggr_filter is not None and not isinstance(agg.aggr_filter, FieldEquals):
                out.append(f"the aggr_filter of aggregator {agg.name!r}")
        return out
