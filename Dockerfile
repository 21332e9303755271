# lora-advisor service image: `advisor serve` behind a HEALTHCHECK, as a non-root user.
#   docker build -t lora-advisor .                                  # CPU torch (default)
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 -t lora-advisor:cuda .
# Run with a token-protected API on all interfaces and PostgreSQL shared with `advisor worker`s:
#   docker run -p 8000:8000 -e LORA_ADVISOR_DATABASE_URL=postgresql://... lora-advisor
FROM python:3.11-slim-bookworm

ARG TORCH_VERSION=2.13.0
# The CPU wheel index keeps a multi-GB CUDA build out of the default image; pass a CUDA index to get one.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    LORA_ADVISOR_HOST=0.0.0.0 \
    LORA_ADVISOR_PORT=8000 \
    LORA_ADVISOR_DATA_DIR=/data

RUN groupadd --system --gid 10001 advisor \
    && useradd --system --uid 10001 --gid advisor --home-dir /app --shell /usr/sbin/nologin advisor

WORKDIR /app

# torch first and pinned, from the chosen index, so the project install cannot resolve another build.
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"

COPY pyproject.toml README.md ./
COPY advisor ./advisor
COPY proxy_runs ./proxy_runs
COPY api ./api
COPY migrations ./migrations
RUN pip install . \
    && mkdir -p /data \
    && chown advisor:advisor /data

# Numeric ids: resolvable by any host or orchestrator without the image's /etc/passwd.
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]

# Migrations before start: `advisor serve` refuses an out-of-date schema, so upgrade first, in the same
# container, then hand PID 1 to the server (exec) so it receives SIGTERM and stops its workers cleanly.
CMD ["sh", "-c", "advisor db upgrade && exec advisor serve"]
