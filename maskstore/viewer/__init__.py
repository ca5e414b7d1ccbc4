"""``maskstore view``: the frame viewer as a local web page (spec section 9).

A small Starlette app (``app.create_app``) serves one static page and a JSON/bytes API over one
dataset version; ``server.serve`` binds it with uvicorn. The page blends masks itself with the
renderer's integer arithmetic, so its canvas holds exactly ``maskstore.render``'s bytes while
slider and colour changes stay instant.
"""

from .app import create_app
from .server import serve

__all__ = ["create_app", "serve"]
