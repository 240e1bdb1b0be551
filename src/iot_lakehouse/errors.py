"""The project's exceptions: one root, a few specific kinds, each saying what to do."""

from __future__ import annotations


class LakehouseError(Exception):
    """Root of every error this project raises on purpose; the CLI prints it and exits 2."""


class ConfigError(LakehouseError):
    """A setting (environment variable or option) has a value the project cannot use."""


class DependencyError(LakehouseError):
    """A required tool or JVM library is missing and could not be installed or resolved."""


class BrokerError(LakehouseError):
    """The local Kafka broker could not be started, reached or stopped."""


class MongoError(LakehouseError):
    """The local MongoDB-protocol server (FerretDB) could not be started, reached or stopped."""


class JobError(LakehouseError):
    """A streaming job could not start or stopped with an error."""


class JobRefused(JobError):
    """A job must not start on what it finds (e.g. a topic that is not the one it read): starting
    it again would find the same, so the job stops at once instead of restarting."""


class DriverBroken(JobError):
    """The Spark driver that runs several jobs stopped: none of them can go on in it, so the
    process ends and ``all`` starts it again."""


class ClusterError(LakehouseError):
    """The local Spark standalone cluster could not be started, reached or stopped."""
