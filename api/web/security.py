"""Response headers of the HTML pages: a strict Content-Security-Policy and its companions.

No page runs inline script or loads anything from another origin, except that the public
verification page may ``fetch`` the chain's JSON-RPC endpoint (``connect-src``) and has one
inline import map, allowed by its exact SHA-256 (it maps the pinned ``@noble`` modules to their
same-origin ``/assets/`` paths; an import map cannot be an external file). Pages may not be
framed (clickjacking) and send a referrer only to their own origin (``same-origin``: an archive
id need not travel to other sites; ``no-referrer`` would make the browser send ``Origin: null``
on the console's own form posts, which the CSRF origin check refuses).
"""

from __future__ import annotations

from collections.abc import Iterable


def page_headers(
    *, connect: Iterable[str] = (), inline_styles: bool = False, script_hashes: Iterable[str] = ()
) -> dict[str, str]:
    """Headers for one HTML page; ``connect`` lists extra origins ``fetch`` may reach;
    ``inline_styles`` allows ``style`` attributes (Swagger UI sets them from its script);
    ``script_hashes`` (base64 SHA-256) allows those exact inline scripts (an import map)."""
    style = "'self' 'unsafe-inline'" if inline_styles else "'self'"
    script = " ".join(["'self'", *(f"'sha256-{h}'" for h in script_hashes)])
    connect_src = " ".join(["'self'", *connect])
    policy = "; ".join(
        (
            "default-src 'none'",
            f"script-src {script}",
            f"style-src {style}",
            "img-src 'self' data:",
            "font-src 'self'",
            f"connect-src {connect_src}",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        )
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL, or None."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"
