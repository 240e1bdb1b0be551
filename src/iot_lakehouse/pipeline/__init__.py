"""The pipeline's layers (bronze, silver, gold, alerts, serving) as pure transforms and
their streaming queries, with the rules, detectors and quality checks they apply. A layer
never imports another; what they share is in ``streaming``, ``exactly_once``, ``rules``."""
