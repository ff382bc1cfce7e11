# The hospital node: the archivechain wheel in a virtual environment, run as a non-root user.
# Base: a Debian bookworm image made locally (see docs/deployment.md, "Containers"); no pull needed.
# Nothing is resolved, downloaded from a package index or compiled here: `make images` first
# stages build/docker (scripts/docker_context.py) on the host: the wheel and its pinned
# dependencies as wheels, and the pinned npm web assets (Swagger UI, htmx, Chart.js); this
# file is built with the context build/docker/node.
ARG BASE=archivechain/debian:bookworm

FROM ${BASE} AS build
# The same first layer as the runtime stage (built once, shared): Python, pg_dump for backups.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates postgresql-client \
 && rm -rf /var/lib/apt/lists/*
COPY wheelhouse /wheelhouse
COPY constraints.txt /constraints.txt
RUN python3 -m venv /opt/archivechain \
 && /opt/archivechain/bin/pip install --no-index --find-links /wheelhouse \
      --disable-pip-version-check -c /constraints.txt archivechain \
 && /opt/archivechain/bin/pip uninstall --yes --disable-pip-version-check pip setuptools

# Runtime: Python and the venv only (no compiler, no pip in the venv).
FROM ${BASE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates postgresql-client \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --home-dir /consortium --create-home archivechain \
 && mkdir -p /consortium/nodes/hospital-1 /consortium/nodes/hospital-2 /consortium/nodes/hospital-3 \
 && chown -R archivechain:archivechain /consortium
COPY --from=build /opt/archivechain /opt/archivechain
COPY web-assets /opt/archivechain/web-assets
ENV PATH=/opt/archivechain/bin:$PATH PYTHONUNBUFFERED=1 ARCHIVECHAIN_PORT=8601 \
    ARCHIVECHAIN_WEB_ASSETS_DIR=/opt/archivechain/web-assets
USER archivechain
WORKDIR /consortium
EXPOSE 8601
HEALTHCHECK --interval=5s --timeout=10s --start-period=60s --retries=30 \
  CMD python3 -c "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['ARCHIVECHAIN_PORT'], timeout=2)"
ENTRYPOINT ["archivechain"]
CMD ["--help"]
