"""Serving the app: Gradio's own server, on this machine only unless told otherwise.

:func:`launch_app` is the one place the app's server options are set, for ``cologen app`` and the tests alike:

* ``host`` 127.0.0.1 (:data:`lit_cologen.app.defaults.HOST`): reachable from this machine only; ``cologen app --host 0.0.0.0``
  opens it to the network.
* ``share`` False: no public ``*.gradio.live`` link (passed explicitly, so ``GRADIO_SHARE`` in the environment
  does not turn one on); ``cologen app --share`` asks for one.
* uploads over ``max_file_size`` bytes are refused by the server before they reach the app
  (:class:`~lit_cologen.app.uploads.UploadLimits` checks them again, with the pixel count).
* one sampling request at a time (the UI's run events share one concurrency group of size 1); no monitoring
  endpoint, no analytics (the UI is built with ``analytics_enabled=False``), client-side rendering.
"""

from __future__ import annotations

from typing import Any, Optional

import gradio as gr

from lit_cologen.app.defaults import HOST, MAX_UPLOAD_MB
from lit_cologen.app.ui import CSS

__all__ = ["launch_app"]


def launch_app(
    demo: gr.Blocks,
    *,
    host: str = HOST,
    port: Optional[int] = None,
    share: bool = False,
    max_file_size: int = MAX_UPLOAD_MB * 1024 * 1024,
    block: bool = True,
    quiet: bool = False,
) -> tuple[Any, str, Optional[str]]:
    """Start ``demo``'s server; returns Gradio's ``(app, local_url, share_url)``.

    ``port`` None: Gradio's first free port from 7860. ``block`` False returns at once with the server running in
    a thread (tests; stop it with ``demo.close()``).
    """
    demo.queue(max_size=16)
    return demo.launch(
        server_name=host, server_port=port, share=bool(share), max_file_size=int(max_file_size),
        prevent_thread_lock=not block, quiet=quiet, show_error=False, enable_monitoring=False, ssr_mode=False,
        inbrowser=False, css=CSS,
    )
