"""The command-line client: REST over the standard library; of the server it shares only
errors.py (a problem document becomes the same typed error).

http.py talks to the api, sse.py parses its event stream, follow.py keeps a live view of a
job across reconnections, jobfile.py reads DAG files, render.py turns documents into text,
commands.py is what each command does. cli.py only wires click commands to commands.py,
importing it when a client command runs (the server never loads any of this).
"""

DEFAULT_API_URL = "http://127.0.0.1:8080"
API_URL_ENV = "MINITEMPORAL_API_URL"
TOKEN_ENV = "MINITEMPORAL_API_TOKEN"  # noqa: S105 - a variable name; never a flag (ps shows flags)

# Exit codes of the client commands (README, "Command line client").
EXIT_OK = 0
EXIT_JOB_NOT_SUCCEEDED = 1  # the job watched to its end failed or was cancelled
EXIT_USAGE = 2  # a bad option, file or token (click's own usage errors are 2 too)
EXIT_UNREACHABLE = 3  # no HTTP answer from the api
EXIT_API_ERROR = 4  # the api answered with an error (401, 403, 404, 409, 422, 5xx, ...)
EXIT_INTERRUPTED = 130
