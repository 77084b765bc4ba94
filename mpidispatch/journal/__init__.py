"""Run journals: every task's state and result in a SQLite file, so that a run can resume.

The interface the engine uses (one :class:`Journal` per run, on the manager)::

    journal = Journal.open("run.db", run_id=default_run_id(), retry_failed=False)
    key = journal.task_key(payload_parts, setup_parts, user_key=None)
    recorded = journal.lookup(key)          # ("done", blob) / ("failed", blob) / None
    if recorded:                            # hand decode(blob) back as the task's outcome
        ...
    else:
        journal.queued(key)                 # the engine took the task
        journal.started(key, worker="worker 1", host="node1")
        journal.finished(key, ok=True, blob=encode_result(result))   # or encode_error(exc)
    journal.worker_seen("worker 1", "node1", state="lost", exit_status=-9)
    journal.flush()                         # commit now (before an exit path)
    journal.close()                         # commit, end the session, release the file

Records only append to a queue; a thread of the journal commits them in one transaction at
most every 0.2 s. Times default to ``time.time()``. ``status`` and ``report`` read the file
with read-only connections and never block the manager. See docs/journal.md.
"""
from ._keys import content_digest, user_key_text
from ._schema import FORMAT, INLINE_RESULT_MAX
from ._store import (Journal, JournalError, JournalMismatchError, decode, default_run_id,
                     encode_error, encode_result)

__all__ = ["Journal", "JournalError", "JournalMismatchError", "decode", "default_run_id",
           "encode_error", "encode_result", "content_digest", "user_key_text", "FORMAT",
           "INLINE_RESULT_MAX"]
