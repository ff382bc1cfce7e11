# PostgreSQL 15 (Debian's), one cluster; compose-init creates a database per hospital (dev: trust on 127.0.0.1).
# Listens on 127.0.0.1:55432 (host networking; 5432 is often taken on a developer's machine).
ARG BASE=archivechain/debian:bookworm
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/*
RUN mkdir -p /var/lib/postgresql/data && chown postgres:postgres /var/lib/postgresql/data \
 && chmod 700 /var/lib/postgresql/data
COPY --chown=postgres:postgres postgres-start.sh /usr/local/bin/postgres-start
USER postgres
ENV PGDATA=/var/lib/postgresql/data
EXPOSE 55432
HEALTHCHECK --interval=3s --timeout=10s --start-period=60s --retries=40 \
  CMD /usr/lib/postgresql/15/bin/pg_isready -h 127.0.0.1 -p 55432 -U archivechain -d postgres
ENTRYPOINT ["/usr/local/bin/postgres-start"]
