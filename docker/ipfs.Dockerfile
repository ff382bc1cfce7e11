# js-ipfs 0.66.1 (the IPFS daemon of `make up`; kubo is not packaged here), offline, API on 5001.
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
ENV IPFS_PATH=/repo NODE_OPTIONS=--require=/usr/local/lib/ipfs-polyfill.cjs
EXPOSE 5001
HEALTHCHECK --interval=2s --timeout=3s --retries=60 \
  CMD node -e "fetch('http://127.0.0.1:5001/api/v0/version',{method:'POST'}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
ENTRYPOINT ["/usr/local/bin/ipfs-start"]
