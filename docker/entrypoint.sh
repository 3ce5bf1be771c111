#!/bin/sh
# Container start for the N3Hub image. The first argument names the role:
#   web     upgrade the database schema, then Gunicorn (settings in gunicorn.conf.py)
#   worker  a Celery worker; further arguments are passed to `celery worker`
#   migrate upgrade the database schema and exit
# Anything else is run as given (e.g. `flask --app app db current`, `sh`).
set -eu

# Metrics files left by the processes of a previous start describe processes that no
# longer exist; prometheus_client needs an empty directory before the first one starts.
# Only its *.db files are removed, so a mistaken setting cannot wipe anything else.
if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
    mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
    find "$PROMETHEUS_MULTIPROC_DIR" -maxdepth 1 -type f -name '*.db' -delete
fi

role="${1:-web}"
[ "$#" -gt 0 ] && shift

case "$role" in
    web)
        # Fail here, loudly and once, rather than in every Gunicorn worker.
        flask --app app db upgrade
        exec python web.py "$@"
        ;;
    worker)
        # Gossip and mingle only add broker traffic here: workers share no state but the
        # database, and Flower works from task events, which it switches on itself.
        exec celery -A app.celery_worker.celery worker --loglevel=info \
            --without-gossip --without-mingle "$@"
        ;;
    migrate)
        exec flask --app app db upgrade "$@"
        ;;
    *)
        exec "$role" "$@"
        ;;
esac
