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


class JobError(LakehouseError):
    """A streaming job could not start or stopped with an error."""


class ClusterError(LakehouseError):
    """The local Spark standalone cluster could not be started, reached or stopped."""
