# js-ipfs 0.66.1 (the IPFS daemon of `make up`; kubo is not packaged here), offline, API on
# 127.0.0.1:$IPFS_API_PORT (default 5001; docker-compose.yml runs one daemon per hospital).
# The package and its dependency closure come from the project's node_modules, installed by
# `npm ci` from package-lock.json and staged by `make images` (scripts/docker_context.py) as a
# tar in the build context build/docker/NAME:
# nothing is fetched from npm or compiled here. Node.js is Debian's.
ARG BASE=archivechain/debian:bookworm
FROM ${BASE}
# The same first layer as docker/ganache.Dockerfile (built once, shared).
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ADD ipfs.tar /opt/ipfs/
RUN ln -s /opt/ipfs/node_modules/ipfs/src/cli.js /usr/local/bin/jsipfs \
 && useradd --system --uid 10003 --user-group --create-home ipfs \
 && mkdir /repo && chown ipfs:ipfs /repo
COPY --chown=ipfs:ipfs ipfs-start.sh /usr/local/bin/ipfs-start
COPY ipfs-polyfill.cjs /usr/local/lib/ipfs-polyfill.cjs
USER ipfs
ENV IPFS_PATH=/repo NODE_OPTIONS=--require=/usr/local/lib/ipfs-polyfill.cjs IPFS_API_PORT=5001
EXPOSE 5001
# A plain HTTP request from bash (no process as heavy as node per check: on a loaded machine
# `node -e fetch(...)` took longer than the timeout while the service answered at once).
HEALTHCHECK --interval=3s --timeout=10s --start-period=300s --retries=40 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/$IPFS_API_PORT && printf 'POST /api/v0/version HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nConnection: close\\r\\nContent-Length: 0\\r\\n\\r\\n' >&3 && grep -q '\"Version\"' <&3"]
ENTRYPOINT ["/usr/local/bin/ipfs-start"]
