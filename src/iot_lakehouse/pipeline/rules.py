"""Validation rules as data: load the YAML contract, evaluate it on Spark, split good from bad.

The same ``Check`` objects drive the row-level split here and the Great Expectations suite in
``quality.py``; both give nulls in the checked column a pass (except ``not_null``), so their
unexpected counts agree rule by rule.
"""

from __future__ import annotations

import functools
import math
import operator
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from iot_lakehouse.errors import ConfigError

CRITICALITIES = ("error", "warn")
EXPECTATIONS = ("not_null", "be_null", "between", "in_set", "not_in_set", "match_regex")
DOUBLE_MAX = 1.7976931348623157e308
METRIC_UNIT_CHECKS = ("metric_unit", "metric_known_unit", "metric_converted_unit")


@dataclass(frozen=True)
class Check:
    """One column check, the unit both Spark and Great Expectations evaluate."""

    expectation: str
    column: str
    condition: str | None = None
    min_value: float | None = None
    max_value: float | None = None
    values: tuple[str, ...] = ()
    regex: str | None = None


@dataclass(frozen=True)
class Rule:
    """A reason code with its criticality and the checks whose failure raises it."""

    code: str
    criticality: str
    description: str
    checks: tuple[Check, ...]


@dataclass(frozen=True)
class UnitConversion:
    """A unit a metric is accepted in: value in the metric's unit = (value + add) * multiply."""

    unit: str
    add: float = 0.0
    multiply: float = 1.0


@dataclass(frozen=True)
class MetricSpec:
    """Unit, physical range and the other units one metric is converted from."""

    name: str
    unit: str
    min_value: float | None = None
    max_value: float | None = None
    conversions: tuple[UnitConversion, ...] = ()

    @property
    def known_units(self) -> tuple[str, ...]:
        return (self.unit, *(c.unit for c in self.conversions))


@dataclass(frozen=True)
class StaticAlert:
    """A threshold flag set on silver rows (HIGH_TEMP, …)."""

    alert_type: str
    metric: str
    severity: str
    above: float | None = None
    below: float | None = None


@dataclass(frozen=True)
class RuleSet:
    """The whole contract of one rule file."""

    version: str
    max_future_seconds: int
    metrics: dict[str, MetricSpec]
    rules: tuple[Rule, ...]
    static_alerts: tuple[StaticAlert, ...] = field(default=())

    @property
    def error_codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.rules if r.criticality == "error")

    @property
    def warn_codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.rules if r.criticality == "warn")


def default_rules_file() -> Path:
    return Path(str(files("iot_lakehouse") / "rules" / "silver_rules.yml"))


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not a number") from None


def _expand(
    raw: dict[str, Any], metrics: dict[str, MetricSpec], max_future: int
) -> tuple[Check, ...]:
    """Turn one YAML rule into its checks (metric_range/metric_unit give one per metric)."""
    code = raw.get("code", "?")
    check = raw.get("check")
    column = raw.get("column")
    when = raw.get("when")
    if not isinstance(column, str) or not column:
        raise ConfigError(f"rule {code}: 'column' is required")
    finite = f"abs({column}) <= {DOUBLE_MAX!r}"
    if check == "metric_range":
        return tuple(
            Check("between", column, f"metric = '{m.name}' AND {finite}", m.min_value, m.max_value)
            for m in metrics.values()
            if m.min_value is not None or m.max_value is not None
        )
    if check in ("metric_unit", "metric_known_unit"):
        return tuple(
            Check(
                "in_set",
                column,
                f"metric = '{m.name}'",
                values=(m.unit,) if check == "metric_unit" else m.known_units,
            )
            for m in metrics.values()
        )
    if check == "metric_converted_unit":
        return tuple(
            Check(
                "not_in_set",
                column,
                f"metric = '{m.name}'",
                values=tuple(c.unit for c in m.conversions),
            )
            for m in metrics.values()
            if m.conversions
        )
    if check not in EXPECTATIONS:
        raise ConfigError(
            f"rule {code}: check {check!r} is not one of "
            f"{[*EXPECTATIONS, 'metric_range', *METRIC_UNIT_CHECKS]}"
        )
    # A bound may name a parameter of the rule file instead of a number.
    params: dict[str, float] = {"max_future_seconds": float(max_future)}

    def bound(name: str) -> float | None:
        value = raw.get(name)
        if isinstance(value, str):
            value = params.get(value, value)
        return _number(value, f"rule {code} {name}")

    values = raw.get("values", ())
    if values == "known_metrics":
        values = list(metrics)
    return (
        Check(
            check,
            column,
            when,
            min_value=bound("min_value"),
            max_value=bound("max_value"),
            values=tuple(str(v) for v in values),
            regex=raw.get("regex"),
        ),
    )


def _conversions(raw: Any, where: str) -> tuple[UnitConversion, ...]:
    """``{unit: {add, multiply}}`` of a metric's ``convert_from`` -> its conversions."""
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not all(isinstance(v, dict | None) for v in raw.values()):
        raise ConfigError(f"{where}: expected {{unit: {{add: number, multiply: number}}}}")
    out = []
    for unit, spec in raw.items():
        spec = spec or {}
        unknown = set(spec) - {"add", "multiply"}
        if unknown:
            raise ConfigError(f"{where} {unit}: unknown keys {sorted(unknown)}, use add/multiply")
        add = _number(spec.get("add", 0.0), f"{where} {unit} add")
        multiply = _number(spec.get("multiply", 1.0), f"{where} {unit} multiply")
        if not multiply or not math.isfinite(multiply) or not math.isfinite(add or 0.0):
            raise ConfigError(f"{where} {unit}: multiply must be a finite non-zero number")
        out.append(UnitConversion(str(unit), add or 0.0, multiply))
    return tuple(out)


def load_rules(path: Path | None = None, max_future_seconds: int | None = None) -> RuleSet:
    """Read and validate a rule file (default: the packaged ``silver_rules.yml``)."""
    path = path or default_rules_file()
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the rule file {path}: {exc}") from exc
    if not isinstance(doc, dict) or "version" not in doc or "rules" not in doc:
        raise ConfigError(f"{path}: a rule file needs 'version' and 'rules'")
    metrics = {
        name: MetricSpec(
            name,
            str(spec["unit"]),
            _number(spec.get("min_value"), name),
            _number(spec.get("max_value"), name),
            _conversions(spec.get("convert_from"), f"{path}: metric {name} convert_from"),
        )
        for name, spec in (doc.get("metrics") or {}).items()
    }
    max_future = int(
        max_future_seconds if max_future_seconds is not None else doc.get("max_future_seconds", 300)
    )
    rules = []
    for raw in doc["rules"]:
        code, criticality = raw.get("code"), raw.get("criticality")
        if not code or criticality not in CRITICALITIES:
            raise ConfigError(
                f"{path}: rule {raw!r} needs a code and a criticality in {CRITICALITIES}"
            )
        rules.append(
            Rule(
                code,
                criticality,
                str(raw.get("description", code)),
                _expand(raw, metrics, max_future),
            )
        )
    codes = [r.code for r in rules]
    if len(codes) != len(set(codes)):
        raise ConfigError(f"{path}: rule codes must be unique, got {codes}")
    alerts = tuple(
        StaticAlert(
            a["alert_type"],
            a["metric"],
            a.get("severity", "warning"),
            _number(a.get("above"), a["alert_type"]),
            _number(a.get("below"), a["alert_type"]),
        )
        for a in doc.get("static_alerts") or ()
    )
    return RuleSet(str(doc["version"]), max_future, metrics, tuple(rules), alerts)


# -- Spark evaluation ---------------------------------------------------------------------------
def _literal(value: float) -> Column:
    return F.lit(value) if math.isfinite(value) else F.lit(value).cast("double")


def reduce_or(columns: list[Column]) -> Column:
    """True where any of ``columns`` is (false for none)."""
    return functools.reduce(operator.or_, columns) if columns else F.lit(False)


def check_fails(check: Check) -> Column:
    """True where ``check`` applies and the value is unexpected; never null."""
    col = F.col(check.column)
    if check.expectation == "not_null":
        bad = col.isNull()
    elif check.expectation == "be_null":
        bad = col.isNotNull()
    elif check.expectation == "between":
        ok = F.lit(True)
        if check.min_value is not None:
            ok = ok & (col >= _literal(check.min_value))
        if check.max_value is not None:
            ok = ok & (col <= _literal(check.max_value))
        bad = col.isNotNull() & ~ok
    elif check.expectation == "in_set":
        bad = col.isNotNull() & ~col.isin(list(check.values))
    elif check.expectation == "not_in_set":
        bad = col.isNotNull() & col.isin(list(check.values))
    elif check.expectation == "match_regex":
        bad = col.isNotNull() & ~col.rlike(check.regex or "")
    else:  # pragma: no cover - load_rules rejects other names
        raise ConfigError(f"unknown expectation {check.expectation}")
    applies = F.expr(check.condition) if check.condition else F.lit(True)
    return F.coalesce(applies & bad, F.lit(False))


def rule_fails(rule: Rule) -> Column:
    """True where any check of ``rule`` fails."""
    return reduce_or([check_fails(c) for c in rule.checks])


def _codes(rules: list[Rule]) -> Column:
    if not rules:
        return F.array().cast("array<string>")
    return F.array_compact(F.array(*[F.when(rule_fails(r), F.lit(r.code)) for r in rules]))


def with_rule_results(df: DataFrame, ruleset: RuleSet) -> DataFrame:
    """Add ``reasons`` (failed error rules) and ``quality_flags`` (failed warn rules)."""
    errors = [r for r in ruleset.rules if r.criticality == "error"]
    warns = [r for r in ruleset.rules if r.criticality == "warn"]
    return df.withColumn("reasons", _codes(errors)).withColumn("quality_flags", _codes(warns))


def reason_detail(ruleset: RuleSet) -> Column:
    """A readable line per failed error rule: code, description and the offending value.

    Evaluated on rejected rows only (it re-checks the rules), so it costs nothing on the
    valid majority.
    """
    parts = []
    for rule in ruleset.rules:
        if rule.criticality != "error":
            continue
        column = rule.checks[0].column
        value = F.coalesce(F.col(column).cast("string"), F.lit("null"))
        parts.append(
            F.when(
                F.array_contains("reasons", rule.code),
                F.concat(F.lit(f"{rule.code}: {rule.description} ({column}="), value, F.lit(")")),
            )
        )
    return F.concat_ws("; ", *parts)


def split_judged(judged: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Split rows already judged by ``with_rule_results`` into (valid, rejected)."""
    valid = judged.where(F.size("reasons") == 0).drop("reasons")
    rejected = judged.where(F.size("reasons") > 0)
    return valid, rejected


def split_valid_invalid(df: DataFrame, ruleset: RuleSet) -> tuple[DataFrame, DataFrame]:
    """Judge every row; return (valid rows, rejected rows with their reasons)."""
    return split_judged(with_rule_results(df, ruleset))
