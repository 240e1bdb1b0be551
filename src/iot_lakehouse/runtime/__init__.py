"""What runs the layers: the jobs and their restarts, checkpoints, the Spark session and its
JVM libraries, the local Kafka broker, MongoDB server and Spark cluster, stream metrics, the
supervisor of ``iot-lakehouse all``."""
