# The CDS Hooks service image: gunicorn on 0.0.0.0:8080 as a non-root user.
#   docker build -t cds-magnesium .
#   docker run -p 8080:8080 -e CDS_AUTH_MODE=off cds-magnesium
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# the package and the top-level data its build ships inside it (setup.py: hooks/, fixture scenarios)
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY cds_service ./cds_service
COPY hooks ./hooks
COPY fixtures ./fixtures
RUN pip install '.[postgres]'

RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home --shell /usr/sbin/nologin cds \
    && mkdir -p /app/data \
    && chown cds:cds /app/data

# the installed package carries hooks/ and the fixture scenarios; these variables point at the copies in
# /app instead, so that a deployment can mount its own definitions over them.
# The SQLite default is for a single container; compose sets CDS_DATABASE_URL to PostgreSQL.
ENV CDS_HOOKS_DIR=/app/hooks \
    CDS_FIXTURES_DIR=/app/fixtures \
    CDS_HOST=0.0.0.0 \
    CDS_PORT=8080 \
    CDS_DATABASE_URL=sqlite:////app/data/cds-audit.sqlite3 \
    CDS_AUDIT_SPOOL_DIR=/app/data/spool

USER cds
EXPOSE 8080

# python-slim has no curl: probe /healthz with the standard library
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CDS_PORT', '8080'), timeout=3); sys.exit(0 if r.status == 200 else 1)"]

CMD ["cds-service", "serve", "--host", "0.0.0.0"]
