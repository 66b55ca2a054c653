# The otel-llmcost image: the processor service by default (docker-compose.yml's `processor`), and, built
# with the SDK extras, the demo app that generates traffic (`demo` in docker-compose.yml).
#
#   docker build -t otel-llmcost .                                        # processor service
#   docker build -t otel-llmcost-demo --build-arg EXTRAS=otlp,openai,anthropic,google-genai \
#                --build-arg EXTRA_PACKAGES="numpy>=1.26" .                 # demo traffic generator
#
# The processor reads /etc/otel-llmcost/processor.yaml (a copy of collector/processor.yaml is baked in;
# mount your own over it) and keeps its ledger in /var/lib/otel-llmcost (mount a volume there, or
# acknowledged spend is lost with the container). The bearer token of /v1/hints comes from the
# environment variable OTEL_LLMCOST_PROCESSOR_TOKEN.
FROM python:3.11-slim

# Extras of the package to install (pyproject.toml), and any plain packages beside them.
ARG EXTRAS=service,redis
ARG EXTRA_PACKAGES=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# What the wheel is built from (hatchling needs the readme and the license named in pyproject.toml).
COPY pyproject.toml README.md LICENSE ./
COPY otel_llmcost ./otel_llmcost
RUN pip install ".[${EXTRAS}]" ${EXTRA_PACKAGES} \
    && rm -rf /src

# An unprivileged user that owns only the ledger directory.
RUN useradd --system --user-group --uid 10001 --home-dir /var/lib/otel-llmcost --shell /usr/sbin/nologin llmcost \
    && mkdir -p /var/lib/otel-llmcost /etc/otel-llmcost \
    && chown llmcost:llmcost /var/lib/otel-llmcost
COPY collector/processor.yaml /etc/otel-llmcost/processor.yaml

WORKDIR /var/lib/otel-llmcost
USER llmcost

EXPOSE 4319

# python:3.11-slim has no curl; the standard library asks /healthz.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:4319/healthz', timeout=2).status != 200)"]

CMD ["otel-llmcost", "processor", "--config", "/etc/otel-llmcost/processor.yaml", "--host", "0.0.0.0"]
