"""The app's defaults in one light module (no imports), read by the command-line parser and the server alike.

HOST: 127.0.0.1, so the server is reachable from this machine only (``cologen app --host`` changes it).
MAX_UPLOAD_MB / MAX_IMAGE_PIXELS: the largest upload accepted, in file size and in width x height.
"""

HOST = "127.0.0.1"
MAX_UPLOAD_MB = 20
MAX_IMAGE_PIXELS = 4096 * 4096
