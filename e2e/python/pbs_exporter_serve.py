"""Runs pbs-exporter's own WSGI app (pbs_exporter.create_app) for the end-to-end test.

pbs-exporter's `main()` always listens on 0.0.0.0:8000; the test needs a free port on
127.0.0.1, so this starts the same app with werkzeug on the given address instead. Nothing of
the exporter's behaviour is changed: its client, its endpoints and its metrics are used as
they are.

usage: pbs_exporter_serve.py BASE_URL TOKEN PORT
"""

import sys

from werkzeug.serving import run_simple

import pbs_exporter


def main() -> None:
    base_url, token, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    app = pbs_exporter.create_app(base_url, token)
    run_simple("127.0.0.1", port, app, threaded=False)


if __name__ == "__main__":
    main()
