# ganache 7.9.2 from npm: the containerised dev chain (anvil stays the default of `make up`).
# The package and its dependency closure come from the project's node_modules, installed by
# `npm ci` from package-lock.json and staged by `make images` (scripts/docker_context.py) as a
# tar in the build context build/docker/NAME:
# nothing is fetched from npm or compiled here. Node.js is Debian's.
ARG BASE=archivechain/debian:bookworm
FROM ${BASE}
# The same first layer as docker/ipfs.Dockerfile (built once, shared).
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ADD ganache.tar /opt/ganache/
RUN ln -s /opt/ganache/node_modules/ganache/dist/node/cli.js /usr/local/bin/ganache \
 && useradd --system --uid 10002 --user-group --create-home ganache \
 && mkdir /state && chown ganache:ganache /state
USER ganache
EXPOSE 8545
# A plain HTTP request from bash (no process as heavy as node per check: on a loaded machine
# `node -e fetch(...)` took longer than the timeout while the service answered at once).
HEALTHCHECK --interval=3s --timeout=10s --start-period=300s --retries=40 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8545 && printf 'POST / HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nConnection: close\\r\\nContent-Type: application/json\\r\\nContent-Length: 59\\r\\n\\r\\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_chainId\",\"params\":[]}' >&3 && grep -q '\"result\"' <&3"]
# The dev chain id and mnemonic of `make up` (anvil's): the same deployer, the same addresses.
ENTRYPOINT ["ganache", "--server.host=127.0.0.1", "--server.port=8545", "--chain.chainId=31337", \
            "--chain.hardfork=shanghai", "--database.dbPath=/state", \
            "--wallet.mnemonic=test test test test test test test test test test test junk", \
            "--logging.quiet"]
