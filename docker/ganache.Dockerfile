# ganache 7.9.2 from npm: the containerised dev chain (anvil stays the default of `make up`).
ARG BASE=archivechain/debian:bookworm
FROM ${BASE}
# Registries through a TLS-intercepting proxy: put its CA in the base image's
# /usr/local/share/ca-certificates; ca-certificates folds it into the bundle these tools read.
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm ca-certificates \
 && npm install --global ganache@7.9.2 \
 && npm cache clean --force \
 && apt-get purge -y npm && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10002 --user-group --create-home ganache \
 && mkdir /state && chown ganache:ganache /state
USER ganache
EXPOSE 8545
HEALTHCHECK --interval=2s --timeout=3s --retries=60 \
  CMD node -e "fetch('http://127.0.0.1:8545',{method:'POST',headers:{'content-type':'application/json'},body:'{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_chainId\",\"params\":[]}'}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
# The dev chain id and mnemonic of `make up` (anvil's): the same deployer, the same addresses.
ENTRYPOINT ["ganache", "--server.host=127.0.0.1", "--server.port=8545", "--chain.chainId=31337", \
            "--chain.hardfork=shanghai", "--database.dbPath=/state", \
            "--wallet.mnemonic=test test test test test test test test test test test junk", \
            "--logging.quiet"]
