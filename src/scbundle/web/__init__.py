"""`scbundle web`: the operations console, a front end like the command line (it may use
steps, ops, db and core; nothing imports it but the `web` command). app.py: the pages and
the API; auth.py: tokens, the login cookie, CSRF; views.py: what the pages show (the same
records as `scbundle status --json`); svg.py: the plot; server.py: uvicorn."""
