-- Who may write an upload's next chunk: a lease in the row rather than a
-- lock in one node's memory, so that chunks of one upload arriving at
-- different nodes of a cluster never write at once. 0 = free; otherwise the
-- microsecond time the lease ends (a node that died mid-write frees it then).
-- Kept identical to its twin.
ALTER TABLE uploads ADD COLUMN writer_until BIGINT NOT NULL DEFAULT 0;
