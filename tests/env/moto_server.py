"""moto's server with one race fixed: SQS DeleteMessage holds the queue's lock.

moto (5.2) appends a sent message to `Queue._messages` under `Queue._messages_lock`, but
DeleteMessage rebuilds that list without the lock and assigns it back: a message sent
between the rebuild and the assignment is gone, though SendMessage answered 200. The
chaos tests, whose dispatch functions send retries while they delete on the same queue,
lost one hung-cluster retry this way (2026-12-03: one run in two under a CPU hog, and on
CI); an in-process stress (one sender, three receivers deleting, 500 messages waiting out a
delay) lost 1 of 3,000 sends in one run of three unpatched, none patched. AWS loses no
acknowledged message, so the stand-in must not either.

Used by the tests' harness (tests/testkit/src/moto.rs) with the virtualenv's python;
arguments are moto_server's.
"""

import sys

from moto.sqs.models import Queue

_delete_message = Queue.delete_message


def _delete_message_locked(self, receipt_handle):
    # The lock is a Condition over an RLock: add_message takes it the same way.
    with self._messages_lock:
        return _delete_message(self, receipt_handle)


Queue.delete_message = _delete_message_locked

from moto.server import main  # noqa: E402  (after the patch, so every import sees it)

if __name__ == "__main__":
    sys.exit(main())
