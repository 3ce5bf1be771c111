# N3Hub: one image for the web service and the Celery worker.
#   docker build -t n3hub .
#   docker run n3hub web      # migrations, then Gunicorn on :5000 (the default)
#   docker run n3hub worker   # a Celery worker; extra arguments go to `celery worker`

# Build stage: the pinned runtime dependencies in a virtualenv that the final stage copies,
# so pip's work files and caches never reach the image.
FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt

FROM python:3.12-slim
# PYTHONPATH makes a package copied under /app by a derived image importable by every
# role (DEPLOYMENT.md, "Custom processors").
# PROMETHEUS_MULTIPROC_DIR lives in the container's own file system: the entrypoint
# wipes it at every start, and no other container may share it.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FLASK_ENV=production \
    HOST=0.0.0.0 \
    PORT=5000 \
    PYTHONPATH=/app \
    PROMETHEUS_MULTIPROC_DIR=/tmp/n3hub-metrics
# The code stays owned by root (the service cannot rewrite it); only the SQLite
# directory, where a volume is mounted, and the home directory (Gunicorn's control
# socket, ~/.gunicorn/gunicorn.ctl) belong to the service user.
RUN groupadd --system --gid 10001 n3hub \
    && useradd --system --uid 10001 --gid n3hub --create-home --home-dir /home/n3hub n3hub \
    && mkdir -p /app/instance \
    && chown n3hub:n3hub /app/instance
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY app ./app
COPY migrations ./migrations
COPY docker/entrypoint.sh ./docker/entrypoint.sh
COPY gunicorn.conf.py run.py web.py ./
# Numeric, so that an orchestrator can verify "not root" without reading /etc/passwd.
USER 10001:10001
EXPOSE 5000
# Liveness only (/healthz): readiness (/readyz) also checks the database and the broker,
# and a broker outage should not get a healthy web container restarted. Slim has no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '5000') + '/healthz', timeout=3)"]
ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["web"]
