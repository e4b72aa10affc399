"""`midillm-lite serve`: an HTTP API and a web page for text-to-MIDI on this machine (the library behind the verb).

    from midillm_lite import Generator
    from midillm_lite.server.serve import ServeConfig, serve
    with Generator("midillm-demo-q8_0") as gen:
        serve(gen, ServeConfig(port=8765))

runner.py picks the scheduler, jobs.py runs and remembers the generations, app.py is the HTTP application,
access.py says who may connect, serve.py binds and stops it. Nothing is imported here: the CLI reads access.py's
defaults at start-up without loading Starlette and uvicorn.
"""
