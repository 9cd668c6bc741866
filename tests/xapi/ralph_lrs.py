"""Runs Ralph's LRS with its file-system backend for tests/xapi/: `ralph_lrs.py HOST PORT`.

Configuration comes from the environment (RALPH_AUTH_FILE, RALPH_BACKENDS__LRS__FS__*), as
`ralph runserver` would pass it. One change: the file-system LRS backend writes every POST with
its default operation, which creates the statements file and so refuses every POST after the
first; here it appends, which is what a file-system LRS needs to take more than one request.
"""

import sys

import uvicorn
from ralph.backends.data.base import BaseOperationType
from ralph.backends.lrs.fs import FSLRSBackend

FSLRSBackend.default_operation_type = BaseOperationType.APPEND

uvicorn.run("ralph.api:app", host=sys.argv[1], port=int(sys.argv[2]), log_level="warning")
