//! SQS FIFO: intake and dispatch publishers, visibility backoff, dead-letter sends.
