# js-ipfs 0.66.1 (the IPFS daemon of `make up`; kubo is not packaged here), offline, API on 5001.
ARG BASE=archivechain/debian:bookworm
FROM ${BASE}
# Registries through a TLS-intercepting proxy: put its CA in the base image's
# /usr/local/share/ca-certificates; ca-certificates folds it into the bundle these tools read.
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm ca-certificates \
 && npm install --global ipfs@0.66.1 \
 && npm cache clean --force \
 && apt-get purge -y npm && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10003 --user-group --create-home ipfs \
 && mkdir /repo && chown ipfs:ipfs /repo
COPY --chown=ipfs:ipfs docker/ipfs-start.sh /usr/local/bin/ipfs-start
COPY docker/ipfs-polyfill.cjs /usr/local/lib/ipfs-polyfill.cjs
USER ipfs
ENV IPFS_PATH=/repo NODE_OPTIONS=--require=/usr/local/lib/ipfs-polyfill.cjs
EXPOSE 5001
HEALTHCHECK --interval=2s --timeout=3s --retries=60 \
  CMD node -e "fetch('http://127.0.0.1:5001/api/v0/version',{method:'POST'}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
ENTRYPOINT ["/usr/local/bin/ipfs-start"]
