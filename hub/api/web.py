"""The web app's pages: the shell every screen shares, its files, the service worker, and the
printable work order with its QR code.

1. Every screen (``/``, ``/o/<order>``, ``/new``, ``/approvals``, ``/conflicts``, ``/alerts``,
   ``/scan``, ``/login``) is the same shell (``web/index.html``); it holds no order data, so it
   needs no login: the data comes from the API with the session cookie.
2. The work order (``/o/<number>/print``) is the server's own page, printable (its stylesheet is
   for paper), with a QR code (segno) of the order page's URL ``<public url>/o/<number>``: a
   phone scanning it opens the order, after a login. Without a session it sends the browser to
   the login first.
3. The service worker is served from the root (``/sw.js``) so that it may keep every page.
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from hub.api import auth
from hub.readmodel import OrderNotFound

WEB = Path(__file__).parent / "web"
#: The longest order number a QR code is made for.
MAX_NUMBER = 100
SCREENS = ("/", "/login", "/new", "/approvals", "/conflicts", "/alerts", "/scan")


def add_web(app: FastAPI, public_url: str | None) -> None:
    """The web app's routes on ``app`` (the API's own are under /api)."""
    app.mount("/static", StaticFiles(directory=WEB), name="static")

    def shell() -> FileResponse:
        return FileResponse(WEB / "index.html", headers={"Cache-Control": "no-cache"})

    for path in SCREENS:
        app.add_api_route(path, shell, methods=["GET"], include_in_schema=False)

    @app.get("/sw.js", include_in_schema=False)
    def service_worker() -> FileResponse:
        return FileResponse(WEB / "sw.js", media_type="text/javascript",
                            headers={"Service-Worker-Allowed": "/", "Cache-Control": "no-cache"})

    @app.get("/o/{ref}/qr.svg", include_in_schema=False)
    def qr(ref: str, request: Request) -> Response:
        if len(ref) > MAX_NUMBER:  # an order number is short; a QR code holds a couple of thousand bytes at most
            return Response("no such order number", status_code=404, media_type="text/plain")
        return Response(qr_svg(order_url(public_url, request, ref)), media_type="image/svg+xml")

    @app.get("/o/{ref}/print", include_in_schema=False, response_model=None)
    def work_order(ref: str, request: Request) -> Response:
        hub = request.app.state.hub
        try:
            who = auth.authenticate(hub.users, hub.tokens, method="GET", authorization=None,
                                    session=request.cookies.get(auth.SESSION_COOKIE), csrf_header=None)
        except auth.Unauthorized:
            return RedirectResponse(f"/login?next=/o/{ref}/print", status_code=303)
        from hub.api.app import _visible

        try:
            order = _visible(hub.model.order(ref), hub.rules.hidden_from(who.roles))
        except OrderNotFound:
            return HTMLResponse(f"<p>No order {html.escape(ref)}.</p>", status_code=404)
        return HTMLResponse(work_order_html(order, order_url(public_url, request, order.order_number)))

    @app.get("/o/{ref:path}", include_in_schema=False)
    def order_screen(ref: str) -> FileResponse:
        return shell()


def order_url(public_url: str | None, request: Request, number: str) -> str:
    """The order page's address a QR code carries (``ORDERHUB_PUBLIC_URL``, else where this request came)."""
    base = (public_url or str(request.base_url)).rstrip("/")
    return f"{base}/o/{number}"


def qr_svg(url: str) -> str:
    import segno

    # a viewBox instead of a fixed size: the page sizes it (40 mm on paper) and it scales whole
    return segno.make(url, error="m").svg_inline(scale=5, dark="#000", light="#fff", omitsize=True)


def work_order_html(order: object, url: str) -> str:
    """A work order for paper: what the shop floor needs, and the QR code of the order page."""
    e = html.escape
    o = order  # an OrderView
    lines = "".join(
        f"<tr><td>{line.line_no}</td><td>{e(line.material.id)}{' rev ' + e(line.material.revision) if line.material.revision else ''}"
        f"</td><td>{line.quantity} {e(line.unit)}</td><td>{line.confirmed_date or ''}</td></tr>" for line in o.lines)
    instructions = "".join(f"<li>{e(i.key + ': ') if i.key else ''}{e(i.text)}</li>" for i in o.instructions)
    customer = e(o.customer.name or o.customer.id) if o.customer else "-"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Work order {e(o.order_number)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #000; }}
.head {{ display: flex; justify-content: space-between; gap: 1rem; align-items: flex-start; flex-wrap: wrap; }}
h1 {{ margin: 0 0 .3rem; font-size: 1.6rem; }} table {{ border-collapse: collapse; width: 100%; margin-top: 1rem; }}
th, td {{ border: 1px solid #444; padding: .3rem .5rem; text-align: left; }} .qr svg {{ width: 40mm; height: 40mm; }}
.url {{ font-size: .8rem; word-break: break-all; }}
@media print {{ body {{ margin: 10mm; }} a {{ color: #000; text-decoration: none; }} .noprint {{ display: none; }} }}
@page {{ size: A4; margin: 10mm; }}
</style></head><body>
<div class="head"><div><h1>Work order {e(o.order_number)}</h1>
<div>Customer: <strong>{customer}</strong></div>
<div>Status: {e(o.status.value)}{' (on hold: ' + e('; '.join(o.hold_reasons)) + ')' if o.on_hold else ''} &middot; version {o.version}</div>
<div>Due: {o.promised_delivery or o.requested_delivery or '-'} &middot; Plant: {e(o.plant or '-')}</div></div>
<div class="qr" id="qr" data-url="{e(url)}">{qr_svg(url)}<div class="url">{e(url)}</div></div></div>
<table><thead><tr><th>Line</th><th>Material</th><th>Quantity</th><th>Confirmed</th></tr></thead><tbody>{lines}</tbody></table>
<h2>Process requirements</h2><ul>{instructions or '<li>none</li>'}</ul>
<p class="noprint"><button onclick="window.print()">Print</button> <a href="/o/{e(o.order_number)}">Back to the order</a></p>
</body></html>"""
