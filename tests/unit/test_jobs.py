"""Job wiring: waiting for an upstream table that another process creates; several jobs in
one driver."""

from __future__ import annotations

from xml.etree import ElementTree

import pytest

from iot_lakehouse.errors import JobError
from iot_lakehouse.pipeline.jobs import JOBS, pipeline_order, run_jobs
from iot_lakehouse.runtime.spark_session import FAIR_SCHEDULER_POOLS
from iot_lakehouse.runtime.stream_metrics import job_of_query
from iot_lakehouse.settings import Settings


def test_jobs_named_in_any_order_run_upstream_first_once_each() -> None:
    assert pipeline_order(["gold", "bronze", "gold", "alerts"]) == ["bronze", "gold", "alerts"]
    with pytest.raises(JobError, match="unknown job 'platinum'"):
        pipeline_order(["silver", "platinum"])
    # the file source is bronze's: jobs without bronze cannot take it
    with pytest.raises(JobError, match="--source files applies to the bronze job only"):
        run_jobs(["gold", "silver"], Settings.from_env({}), source="files")


def test_every_job_has_a_scheduler_pool_of_its_own_declared() -> None:
    pools = ElementTree.parse(FAIR_SCHEDULER_POOLS).getroot().findall("pool")
    assert sorted(p.get("name", "") for p in pools) == sorted(JOBS)
    assert {p.findtext("schedulingMode") for p in pools} == {"FIFO"}  # within a job: in order


def test_a_query_belongs_to_the_job_its_name_starts_with() -> None:
    names = ["bronze", "bronze_files", "silver", "gold", "alerts_static", "alerts_flatline", None]
    assert [job_of_query(n) for n in names] == [
        "bronze",
        "bronze",
        "silver",
        "gold",
        "alerts",
        "alerts",
        "",
    ]
