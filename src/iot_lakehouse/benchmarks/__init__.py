"""The benchmark harness of ``iot-lakehouse bench``: its arithmetic, its runs, the textbook
job."""
