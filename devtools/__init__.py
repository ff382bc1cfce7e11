"""Development orchestration, kept out of the hospital node: the dev chain (anvil), the IPFS dev
daemon (js-ipfs), the Solidity compiler shim, contract deployment and governance admissions, and
the local consortium of ``archivechain up``. The node never imports this package; the command line
(``archivechain``) wires it in."""
