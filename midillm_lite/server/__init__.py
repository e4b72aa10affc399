"""`midillm-lite serve`: an HTTP API and a web page for text-to-MIDI on this machine (the library behind the verb).

    from midillm_lite import Generator
    from midillm_lite.server import ServeConfig, serve
    with Generator("midillm-demo-q8_0") as gen:
        serve(gen, ServeConfig(port=8765))

runner.py picks the scheduler, jobs.py runs and remembers the generations, app.py is the HTTP application,
serve.py binds, guards and stops it.
"""

from .serve import ServeConfig, resolve_token, serve

__all__ = ["ServeConfig", "resolve_token", "serve"]
