# pgcast gateway image. Build: docker build -t pgcast .
# Run:   docker run -e DATABASE_URL=postgresql://user:pass@db:5432/app -p 8000:8000 pgcast
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
# The nats extra: the broker tier (PGCAST_BROKER) works in this image too.
RUN pip install '.[nats]' \
    && useradd --system --uid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin pgcast

USER 10001:10001
WORKDIR /home/pgcast

# DATABASE_URL (or PGCAST_DATABASE_URL) must be set: without it pgcast would try to
# start an embedded PostgreSQL, which this image is not meant for (and cannot: no home).
ENV PGCAST_HOST=0.0.0.0 \
    PGCAST_PORT=8000 \
    PGCAST_LOG_FORMAT=json
EXPOSE 8000

# 200 only while the gateway's LISTEN connection is up (503 otherwise: exit 1).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PGCAST_PORT', '8000'), timeout=2)"]

# SIGTERM: close every client with 4000 (reconnect elsewhere), drain for up to 5 s, exit.
STOPSIGNAL SIGTERM
CMD ["pgcast", "serve", "--host", "0.0.0.0"]
