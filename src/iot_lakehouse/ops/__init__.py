"""Operating the lakehouse: status, reconcile, rerun, the DLQ, maintenance, alert evaluation,
Kafka clean-up."""
