"""A DICOM C-STORE SCP (pynetdicom): PACS and modalities send instances over DIMSE.

The SCP answers associations addressed to its AE title (``require_called_aet``) from the calling
AE titles it is configured to accept (none configured: any caller), for every storage SOP class
and Verification (C-ECHO). Each received instance is handed to ``store`` as a Part 10 file; its
status goes back in the C-STORE response: 0x0000 stored (or already stored), 0xC000 cannot
understand (not an instance the node can read), 0xA700 out of resources (the node could not store
it; the sender retries). The source system of an instance is the calling AE title when it is a
code, else ``PACS``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

log = logging.getLogger(__name__)

SUCCESS = 0x0000
CANNOT_UNDERSTAND = 0xC000
OUT_OF_RESOURCES = 0xA700

Store = Callable[[bytes, str], int]
"""``store(part10_bytes, calling_ae_title) -> DIMSE status`` (blocking)."""


class DicomScp:
    """A C-STORE SCP on ``host:port`` (port 0: a free port, see ``port`` once started)."""

    def __init__(
        self,
        store: Store,
        *,
        ae_title: str = "ARCHIVECHAIN",
        host: str = "127.0.0.1",
        port: int = 0,
        allowed_callers: Iterable[str] = (),
    ) -> None:
        self.store = store
        self.ae_title = ae_title
        self.host = host
        self.port = port
        self.allowed_callers = [title.strip() for title in allowed_callers if title.strip()]
        self._server: Any = None

    def start(self) -> None:
        """Listen in pynetdicom's server threads."""
        if self._server is not None:
            return
        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        ae.require_called_aet = True
        if self.allowed_callers:
            ae.require_calling_aet = self.allowed_callers
        self._server = ae.start_server(
            (self.host, self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._on_store)],
        )
        self.port = int(self._server.server_address[1])
        log.info("DICOM C-STORE SCP %s on %s:%d", self.ae_title, self.host, self.port)

    def stop(self) -> None:
        """Stop listening and close open associations."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _on_store(self, event: Any) -> int:
        calling = str(event.assoc.requestor.ae_title).strip()
        try:
            data = event.encoded_dataset(include_meta=True)
        except Exception:  # an instance pynetdicom cannot re-encode
            return CANNOT_UNDERSTAND
        try:
            return self.store(data, calling)
        except Exception as exc:  # store answers statuses; this is a last resort
            log.error("C-STORE failed inside the node (%s)", type(exc).__name__, exc_info=exc)
            return OUT_OF_RESOURCES
