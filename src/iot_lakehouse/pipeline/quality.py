"""The one Great Expectations adapter: a suite built from the silver rule file, run on judged
micro-batches, with one result row per expectation appended to ``_ops/quality``.

Jobs never import ``great_expectations`` themselves. GX counts rows the same way the row-level
split does (nulls pass every check but not_null; a ``when`` condition filters the rows), so for
each rule its unexpected count equals the number of rows the split flagged with that code.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pyspark import InheritableThread
from pyspark.sql import DataFrame, SparkSession

from iot_lakehouse.logs import kv
from iot_lakehouse.pipeline.exactly_once import append_once
from iot_lakehouse.pipeline.rules import Check, RuleSet
from iot_lakehouse.schemas import QUALITY_RESULTS

logger = logging.getLogger(__name__)

RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 0}


@dataclass(frozen=True)
class ExpectationResult:
    """What GX said about one check of one rule on one batch."""

    rule_code: str
    criticality: str
    expectation: str
    column: str
    condition: str | None
    element_count: int
    unexpected_count: int
    success: bool
    error: str | None = None


# Our check name -> the GX expectation class that counts the same rows.
GX_EXPECTATIONS = {
    "not_null": "ExpectColumnValuesToNotBeNull",
    "be_null": "ExpectColumnValuesToBeNull",
    "between": "ExpectColumnValuesToBeBetween",
    "in_set": "ExpectColumnValuesToBeInSet",
    "not_in_set": "ExpectColumnValuesToNotBeInSet",
    "match_regex": "ExpectColumnValuesToMatchRegex",
}


def warm_up() -> None:
    """Import Great Expectations (slow the first time) so the first validation is not."""
    import great_expectations  # noqa: F401


def _expectation(check: Check, meta: dict[str, Any]) -> Any:
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import PassThroughCondition

    kwargs: dict[str, Any] = {"column": check.column, "meta": meta}
    if check.condition:
        kwargs["row_condition"] = PassThroughCondition(pass_through_filter=check.condition)
    if check.expectation == "between":
        kwargs.update(min_value=check.min_value, max_value=check.max_value)
    elif check.expectation in ("in_set", "not_in_set"):
        kwargs["value_set"] = list(check.values)
    elif check.expectation == "match_regex":
        kwargs["regex"] = check.regex
    return getattr(gxe, GX_EXPECTATIONS[check.expectation])(**kwargs)


@dataclass
class QualityValidator:
    """A GX context, batch definition and suite built once, validated on many batches."""

    ruleset: RuleSet
    _batch_definition: Any = field(default=None, init=False, repr=False)
    _suite: Any = field(default=None, init=False, repr=False)
    _checks: dict[str, tuple[str, str, Check]] = field(default_factory=dict, init=False)

    def _build(self) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self._batch_definition = (
            context.data_sources.add_spark(name="silver")
            .add_dataframe_asset(name="judged_readings")
            .add_batch_definition_whole_dataframe("micro_batch")
        )
        self._suite = gx.ExpectationSuite(name=f"silver_rules_{self.ruleset.version}")
        for rule in self.ruleset.rules:
            for i, check in enumerate(rule.checks):
                key = f"{rule.code}#{i}"
                self._checks[key] = (rule.code, rule.criticality, check)
                self._suite.add_expectation(_expectation(check, {"check": key}))

    def validate(self, judged: DataFrame) -> list[ExpectationResult]:
        """Run the suite on a judged batch; one result per check, in rule-file order."""
        if self._suite is None:
            self._build()
        batch = self._batch_definition.get_batch(batch_parameters={"dataframe": judged})
        outcome = batch.validate(self._suite, result_format=RESULT_FORMAT)
        by_key: dict[str, ExpectationResult] = {}
        for result in outcome.results:
            key = result.expectation_config.meta["check"]
            code, criticality, check = self._checks[key]
            stats = result.result or {}
            error = None
            if "unexpected_count" not in stats:
                messages = [
                    v.get("exception_message")
                    for v in (result.exception_info or {}).values()
                    if isinstance(v, dict)
                ]
                error = "; ".join(m for m in messages if m) or "no result"
            by_key[key] = ExpectationResult(
                code,
                criticality,
                check.expectation,
                check.column,
                check.condition,
                int(stats.get("element_count") or 0),
                int(stats.get("unexpected_count") or 0),
                bool(result.success),
                error,
            )
        return [by_key[k] for k in self._checks if k in by_key]


def unexpected_by_rule(results: list[ExpectationResult]) -> dict[str, int]:
    """Sum of unexpected rows per rule code (a rule may have one check per metric)."""
    totals: dict[str, int] = {}
    for r in results:
        totals[r.rule_code] = totals.get(r.rule_code, 0) + r.unexpected_count
    return totals


def to_result_rows(
    spark: SparkSession,
    results: list[ExpectationResult],
    job: str,
    batch_id: int,
    rule_version: str,
    duration_ms: int,
) -> DataFrame:
    """Results as a DataFrame of the ``_ops/quality`` contract."""
    now = datetime.now(UTC)
    rows = [
        (
            job,
            batch_id,
            rule_version,
            r.rule_code,
            r.criticality,
            r.expectation,
            r.column,
            r.condition,
            r.element_count,
            r.unexpected_count,
            r.success,
            r.error,
            duration_ms,
            now,
        )
        for r in results
    ]
    return spark.createDataFrame(rows, QUALITY_RESULTS)


def validate_and_record(
    spark: SparkSession,
    validator: QualityValidator,
    judged: DataFrame,
    job: str,
    batch_id: int,
    path: str,
    app_id: str,
) -> list[ExpectationResult]:
    """Validate one judged batch and append its results (idempotently per batch id)."""
    started = time.monotonic()
    results = validator.validate(judged)
    duration_ms = int((time.monotonic() - started) * 1000)
    rows = to_result_rows(spark, results, job, batch_id, validator.ruleset.version, duration_ms)
    append_once(rows, path, app_id, batch_id)
    failed = {k: v for k, v in unexpected_by_rule(results).items() if v}
    errors = [r.rule_code for r in results if r.error]
    logger.info(
        "quality batch %s",
        kv(
            job=job,
            batch_id=batch_id,
            expectations=len(results),
            duration_ms=duration_ms,
            failed_rules=len(failed),
            errors=len(errors),
        ),
    )
    if errors:
        logger.warning("quality expectations could not run %s", kv(job=job, rules=",".join(errors)))
    return results


class BackgroundValidations:
    """Runs a job's validations off its batches' path, one at a time and in order: a batch
    hands its judged rows over and commits without waiting for Great Expectations. A failed
    validation is logged, never raised (its batch is already committed).

    The thread inherits the batch's scheduler pool; its Spark jobs get a job group of their
    own, so stopping the query does not cancel a validation under way. ``wait_for_validations``
    lets them finish before the session stops.
    """

    def __init__(self, job: str) -> None:
        self.job = job
        self._thread: threading.Thread | None = None
        with _RUNNERS_LOCK:
            _RUNNERS.append(self)

    def submit(self, validation: Callable[[], object], batch_id: int) -> None:
        """Start ``validation`` once the previous one has ended."""
        self.wait()

        def run() -> None:
            from pyspark import SparkContext

            context = SparkContext._active_spark_context
            if context is not None:
                context.setJobGroup(f"{self.job}-quality", f"{self.job} quality batch {batch_id}")
            try:
                validation()
            except Exception as exc:
                logger.warning(
                    "quality batch not validated %s",
                    kv(job=self.job, batch_id=batch_id, error=str(exc).splitlines()[0][:300]),
                )

        self._thread = InheritableThread(target=run, name=f"{self.job}-quality")
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the validation under way (if any); False if it is still running."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True


_RUNNERS: list[BackgroundValidations] = []
_RUNNERS_LOCK = threading.Lock()


def wait_for_validations(timeout: float = 300.0) -> None:
    """Let every validation under way in this process finish (before its session stops)."""
    deadline = time.monotonic() + timeout
    with _RUNNERS_LOCK:
        runners = list(_RUNNERS)
        _RUNNERS.clear()
    for runner in runners:
        if not runner.wait(max(0.0, deadline - time.monotonic())):
            logger.warning("quality validation still running at stop %s", kv(job=runner.job))
