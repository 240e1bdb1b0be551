"""How users reach it: the command line, the dashboard, the Prometheus endpoint."""
