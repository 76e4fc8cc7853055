"""``fastconv face serve``: verification and identification over HTTP with a persistent gallery.

Modules: ``embedder`` (the model interface), ``uploads`` (bytes -> RGB image, 4xx on bad input),
``pipeline`` (detect + LFW crop + preprocessing), ``gallery`` (SQLite + in-memory exact search),
``schemas`` (typed bodies), ``app`` (the FastAPI app), ``command`` (the CLI), ``static/`` (the page).
"""
