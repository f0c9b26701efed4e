"""``cologen app``: an interactive Gradio app over one :class:`~lit_cologen.pipeline.CoLoGenPipeline`.

One tab per task (inpaint with a drawn mask, ground, control with a condition type and an auto-computed canny map,
subject, edit); each run shows a progress bar over the denoising steps and, for the image it made, which PRW expert
each block chose. The server listens on 127.0.0.1 and opens no public share link unless told to.

Parts, each with one job:

* :mod:`~lit_cologen.app.cli`: the ``cologen app`` sub-command (light: builds its parser without heavy imports);
  :mod:`~lit_cologen.app.defaults`: the host and upload limits it and the server default to.
* :mod:`~lit_cologen.app.uploads`: reading uploaded images (size limits, image formats only) and turning the
  layers drawn in the editor into the inpainting mask.
* :mod:`~lit_cologen.app.runner`: one pipeline call per request (output size, canny preview, progress, routing).
* :mod:`~lit_cologen.app.ui`: the ``gr.Blocks`` page (tabs, inputs, events with one API name per task).
* :mod:`~lit_cologen.app.server`: launching it (host, port, share link, upload size limit).

This package is a top-level consumer of the library: it imports the pipeline, models and data; nothing under
``lit_cologen`` imports it (``cologen``'s registry names it as a string). Importing it imports nothing heavy.
"""
