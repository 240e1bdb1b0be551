# syntax=docker/dockerfile:1
# The one project image, used by every service of docker-compose.yml except Kafka: the four
# streaming jobs (Spark drivers), the Spark master and worker (and so the executors), the
# generator and `iot-lakehouse deps`. One image means one Spark: driver, master and executors
# all run the pyspark that uv.lock pins (4.2.0), on the same Java 17 and Python 3.11.
#
#   docker compose build          # or: docker build -t iot-lakehouse:local .
FROM python:3.11-slim-bookworm

# Java 17 runs Spark. Maven is used by `iot-lakehouse deps` only, to resolve Delta and the Kafka
# connector from Maven Central into the jar cache volume. procps gives Spark's scripts `ps`.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        openjdk-17-jre-headless maven procps \
    && rm -rf /var/lib/apt/lists/*

RUN pip install --no-cache-dir --root-user-action=ignore uv==0.13.9

ENV UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /app

# Dependencies first, exactly as locked (cached until pyproject.toml or uv.lock change), then the
# project itself. --frozen: never re-resolve, so the image has uv.lock's pyspark and delta-spark.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --all-extras --no-install-project
COPY src ./src
COPY spark ./spark
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --all-extras

# Run as a plain user. /data (tables, checkpoints, DLQ) and /jars (the JVM jar cache) are where
# docker-compose.yml mounts its volumes; a new named volume takes this ownership. The user also
# owns what the project and Spark write below /app: .runtime (logs) and spark-warehouse.
RUN useradd --create-home --uid 1000 app \
    && mkdir -p /data/lakehouse /data/dlq /jars /app/.runtime /app/spark-warehouse \
    && chown -R app:app /data /jars /app/.runtime /app/spark-warehouse
USER app

# `iot-lakehouse`, `python` and Spark's `spark-class` all come from the project venv.
ENV PATH=/app/.venv/bin:$PATH
CMD ["iot-lakehouse", "--help"]
