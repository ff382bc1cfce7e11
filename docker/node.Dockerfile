# The hospital node: the archivechain wheel in a virtual environment, run as a non-root user.
# Base: a Debian bookworm image made locally (see docs/deployment.md, "Containers"); no pull needed.
ARG BASE=archivechain/debian:bookworm

FROM ${BASE} AS build
# Registries through a TLS-intercepting proxy: put its CA in the base image's
# /usr/local/share/ca-certificates; ca-certificates folds it into the bundle these tools read.
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY anchoring anchoring
COPY node node
COPY api api
COPY devtools devtools
COPY archivechain archivechain
RUN python3 -m venv /opt/build && /opt/build/bin/pip install --no-cache-dir build \
 && /opt/build/bin/python -m build --wheel --outdir /wheels . \
 && python3 -m venv /opt/archivechain \
 && /opt/archivechain/bin/pip install --no-cache-dir -c constraints.txt /wheels/*.whl

# Runtime: Python and the venv only (no compiler, no pip build tools); pg_dump for backups.
FROM ${BASE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates postgresql-client \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --home-dir /consortium --create-home archivechain \
 && mkdir -p /consortium/nodes/hospital-1 /consortium/nodes/hospital-2 /consortium/nodes/hospital-3 \
 && chown -R archivechain:archivechain /consortium
COPY --from=build /opt/archivechain /opt/archivechain
ENV PATH=/opt/archivechain/bin:$PATH PYTHONUNBUFFERED=1 ARCHIVECHAIN_PORT=8601
USER archivechain
WORKDIR /consortium
EXPOSE 8601
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=30 \
  CMD python3 -c "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['ARCHIVECHAIN_PORT'], timeout=2)"
ENTRYPOINT ["archivechain"]
CMD ["--help"]
